package policy

import (
	"encoding/json"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// overridePrefix is the badger prefix this package owns:
// "p/<principal>" → the override's JSON, as written by PUT …/policy.
const overridePrefix = "p/"

// LoadOverrides reads every stored per-principal override, by principal
// ("key:<key_id>", "wallet:0x…").
func LoadOverrides(db *badger.DB) (map[string]*Policy, error) {
	out := map[string]*Policy{}
	err := db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(overridePrefix), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			principal := string(it.Item().Key()[len(overridePrefix):])
			var p *Policy
			err := it.Item().Value(func(v []byte) error {
				var err error
				p, err = DecodePolicy(v)
				return err
			})
			if err != nil {
				return fmt.Errorf("override of %s: %w", principal, err)
			}
			out[principal] = p
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load overrides: %w", err)
	}
	return out, nil
}

// SaveOverride stores the override of principal, replacing any other.
func SaveOverride(db *badger.DB, principal string, p *Policy) error {
	v, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(overridePrefix+principal), v) })
}

// DeleteOverride removes the override of principal; absent is not an error.
func DeleteOverride(db *badger.DB, principal string) error {
	return db.Update(func(txn *badger.Txn) error { return txn.Delete([]byte(overridePrefix + principal)) })
}
