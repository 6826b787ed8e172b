package main

import (
	"errors"
	"strings"

	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/oauth"
	"github.com/toolgate/toolgate/policy"
)

// loadAuth loads auth.json (path "" = none) and cross-checks it against
// the policies compiled over cat, reporting every problem with its path.
func loadAuth(path string, cat *catalog.Catalog, doc *policy.Document) (*oauth.Config, error) {
	if path == "" {
		return nil, nil
	}
	cfg, err := oauth.Load(path)
	if err != nil {
		return nil, errors.New(strings.Join(describe(path, err), "\n"))
	}
	set, err := policy.Compile(doc, cat)
	if err != nil {
		return nil, err
	}
	if err := cfg.Check(set); err != nil {
		return nil, errors.New(strings.Join(describe(path, err), "\n"))
	}
	return cfg, nil
}
