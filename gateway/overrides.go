package gateway

import (
	"github.com/dgraph-io/badger/v4"

	"github.com/toolgate/toolgate/policy"
)

func loadOverrides(db *badger.DB) (map[string]*policy.Policy, error) {
	return policy.LoadOverrides(db)
}
