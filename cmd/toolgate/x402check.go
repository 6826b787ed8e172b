package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/toolgate/toolgate/x402"
)

// runX402 runs `toolgate x402 check [--url URL]`: the listing self-check
// (x402.CheckListing) against a running gateway, one line per check; exit
// code 1 when any check fails.
func runX402(args []string) error {
	if len(args) == 0 || args[0] != "check" {
		return exitError{2, "usage: toolgate x402 check [--url http://127.0.0.1:8402] [--timeout 10s]"}
	}
	fs := flag.NewFlagSet("x402 check", flag.ContinueOnError)
	base := fs.String("url", "http://127.0.0.1:8402", "the gateway's base URL")
	timeout := fs.Duration("timeout", 10*time.Second, "bound on each request")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return exitError{2, ""}
	}
	checks := x402.CheckListing(context.Background(), &http.Client{Timeout: *timeout}, *base)
	if failed := printChecks(os.Stdout, checks); failed > 0 {
		return exitError{1, fmt.Sprintf("%d of %d checks failed", failed, len(checks))}
	}
	return nil
}

// printChecks writes one line per check (and its fix when it failed or
// warns) and returns how many failed.
func printChecks(w io.Writer, checks []x402.Check) (failed int) {
	for _, c := range checks {
		mark := "pass"
		switch {
		case !c.OK:
			mark = "FAIL"
			failed++
		case c.Warning:
			mark = "warn"
		}
		line := mark + "  " + c.Name
		if c.Resource != "" {
			line += "  " + c.Resource
		}
		if c.Detail != "" {
			line += ": " + c.Detail
		}
		fmt.Fprintln(w, line)
		if c.Fix != "" && (!c.OK || c.Warning) {
			fmt.Fprintln(w, "      fix: "+c.Fix)
		}
	}
	return failed
}
