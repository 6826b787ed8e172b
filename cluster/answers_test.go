package cluster_test

import (
	"testing"

	"github.com/toolgate/toolgate/cluster"
	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/gateway/storetest"
)

// TestAnswerContract runs the AnswerStore contract against a real
// redis-server.
func TestAnswerContract(t *testing.T) {
	setup(t)
	storetest.AnswerContract(t, func(t *testing.T) gateway.AnswerStore { return cluster.NewAnswers(fresh(t)) })
}
