package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"os"
)

const keysUsage = `usage:
  toolgate keys create [--name N] [--expires-at RFC3339] [--credits-usd X] [--policy-file F]
  toolgate keys list
  toolgate keys show KEY_ID
  toolgate keys revoke KEY_ID
common flags: --url (gateway, default http://127.0.0.1:8402) --admin-token --data`

func runKeys(args []string) error {
	if len(args) == 0 {
		return exitError{2, keysUsage}
	}
	var c apiClient
	fs := flag.NewFlagSet("keys "+args[0], flag.ContinueOnError)
	c.flags(fs)
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
