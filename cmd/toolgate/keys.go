package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/identity"
	"github.com/toolgate/toolgate/ledger"
)

const keysUsage = `usage:
  toolgate keys create [--name N] [--expires-at RFC3339] [--credits-usd X] [--policy-file F]
  toolgate keys list
  toolgate keys show KEY_ID
  toolgate keys revoke KEY_ID
common flags: --url (gateway, default http://127.0.0.1:8402) --admin-token --data
--offline works on the data dir of a stopped gateway (create without
--credits-usd or --policy-file, list, show, revoke).`

func runKeys(args []string) error {
	if len(args) == 0 {
		return exitError{2, keysUsage}
	}
	var c apiClient
	fs := flag.NewFlagSet("keys "+args[0], flag.ContinueOnError)
	c.flags(fs)
	offline := fs.Bool("offline", false, "work on the data dir of a stopped gateway")
	var name, expires, credits, policyFile string
	if args[0] == "create" {
		fs.StringVar(&name, "name", "", "key name")
		fs.StringVar(&expires, "expires-at", "", "expiry (RFC 3339)")
		fs.StringVar(&credits, "credits-usd", "", "prepaid credits")
		fs.StringVar(&policyFile, "policy-file", "", "JSON policy override for the key")
	}
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if *offline {
		if credits != "" || policyFile != "" {
			return exitError{2, "keys create --offline: credits and policies need the running gateway (they are recorded in its ledger)"}
		}
		return keysOffline(args[0], c.data, name, expires, fs.Args())
	}
	var out []byte
	var err error
	switch args[0] {
	case "create":
		body := map[string]any{}
		if name != "" {
			body["name"] = name
		}
		if expires != "" {
			body["expires_at"] = expires
		}
		if credits != "" {
			body["credits_usd"] = credits
		}
		if policyFile != "" {
			raw, rerr := os.ReadFile(policyFile)
			if rerr != nil {
				return rerr
			}
			body["policy"] = json.RawMessage(raw)
		}
		b, _ := json.Marshal(body)
		out, err = c.do("POST", "/credits/keys", b)
	case "list":
		out, err = c.do("GET", "/credits/keys", nil)
	case "show", "revoke":
		if fs.NArg() != 1 {
			return exitError{2, keysUsage}
		}
		method := "GET"
		if args[0] == "revoke" {
			method = "DELETE"
		}
		out, err = c.do(method, "/credits/keys/"+url.PathEscape(fs.Arg(0)), nil)
	default:
		return exitError{2, keysUsage}
	}
	if err != nil {
		return err
	}
	fmt.Println(string(out))
	return nil
}

// keysOffline manages keys in a stopped gateway's store.
func keysOffline(cmd, dataDir, name, expires string, rest []string) error {
	var exp time.Time
	if expires != "" {
		t, err := time.Parse(time.RFC3339, expires)
		if err != nil || !t.After(time.Now()) {
			return exitError{2, "--expires-at: want a future RFC 3339 time"}
		}
		exp = t
	}
	readOnly := cmd == "list" || cmd == "show"
	var db *badger.DB
	var closeDB func() error
	var err error
	if readOnly {
		db, closeDB, err = openStoreReadOnly(dataDir)
	} else {
		db, err = openStore(dataDir, false, false)
		closeDB = func() error { return nil }
		if db != nil {
			closeDB = db.Close
		}
	}
	if err != nil {
		return fmt.Errorf("%w (is the gateway still running? stop it, or drop --offline)", err)
	}
	defer closeDB()
	// Writes are management changes: recorded in the ledger like the
	// API's (the next start checks the store against them).
	var led *ledger.Ledger
	if !readOnly {
		if led, err = ledger.Open(db, dataDir, ledger.Options{}); err != nil {
			return err
		}
		defer led.Close()
	}
	keys, err := identity.Open(db)
	if err != nil {
		return err
	}
	now := time.Now()
	const actor = "toolgate keys --offline"
	view := func(k *identity.Key) map[string]any {
		return map[string]any{"key_id": k.ID, "name": k.Name, "key": k.Hint, "status": k.Status(now),
			"created_at": k.CreatedAt(), "expires_at": k.ExpiresAt(), "revoked_at": k.RevokedAt()}
	}
	var out any
	switch cmd {
	case "create":
		secret, k, err := keys.Create(name, exp, now)
		if err != nil {
			return err
		}
		if err := gateway.RecordKeyChange(led, now, actor, ledger.KindKeyCreated, k); err != nil {
			keys.Revoke(k.ID, now) // never shown: never usable
			return fmt.Errorf("record the new key in the ledger (it was revoked): %w", err)
		}
		v := view(k)
		v["secret"] = secret
		out = v
	case "list":
		var all []map[string]any
		for _, k := range keys.List() {
			all = append(all, view(k))
		}
		out = map[string]any{"keys": all}
	case "show", "revoke":
		if len(rest) != 1 {
			return exitError{2, keysUsage}
		}
		k, ok := keys.Lookup(rest[0])
		if !ok {
			return exitError{1, "no such key"}
		}
		if cmd == "revoke" {
			rk, err := keys.Revoke(k.ID, now)
			if err != nil && err != identity.ErrRevoked {
				return err
			}
			if err == nil {
				if err := gateway.RecordKeyChange(led, now, actor, ledger.KindKeyRevoked, rk); err != nil {
					return fmt.Errorf("key revoked, but the ledger could not record it (the next start does): %w", err)
				}
			}
			k = rk
		}
		out = view(k)
	default:
		return exitError{2, keysUsage}
	}
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
	return nil
}
