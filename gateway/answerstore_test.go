package gateway_test

import (
	"testing"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/gateway/storetest"
)

func TestAnswerContract(t *testing.T) {
	storetest.AnswerContract(t, func(t *testing.T) gateway.AnswerStore { return gateway.BadgerAnswers{DB: openDB(t)} })
}
