package main

import (
	"errors"
	"flag"
	"fmt"
)

func runValidate(args []string) error {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	policies := fs.String("policies", "./policies.json", "global policy file")
	tools := fs.String("tools", "./tools.json", "tool catalog file")
	auth := fs.String("auth", "", "auth.json to check too (OAuth issuers)")
	listen := fs.String("listen", "127.0.0.1:8402", "the address serve will listen on: an upstream equal to it is refused (\"\" to skip)")
	if err := envDefaults(fs); err != nil {
		return exitError{2, err.Error()}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return exitError{2, ""}
	}
	cat, doc, err := loadConfig(*tools, *policies, *listen)
	if err != nil {
		return exitError{1, err.Error()}
	}
	cfg, err := loadAuth(*auth, cat, doc)
	if err != nil {
		return exitError{1, err.Error()}
	}
	fmt.Printf("ok: %s (%d tools), %s", *tools, len(cat.Tools), *policies)
	if cfg != nil {
		fmt.Printf(", %s (%d issuers)", *auth, len(cfg.Issuers))
	}
	fmt.Println()
	return nil
}
