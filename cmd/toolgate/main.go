// Command toolgate is the toolgate gateway: serve, validate, keys, audit.
// main is wiring and exit codes only; each subcommand has its own file.
package main

import (
	"errors"
	"fmt"
	"os"

	_ "time/tzdata" // spend_reset_tz works without system zoneinfo
)

const usage = `toolgate — authorization and payment gateway for AI-agent tools

usage:
  toolgate serve     [flags]   run the gateway (flags: toolgate serve -h)
  toolgate validate  [--policies F] [--tools F] [--listen ADDR]
  toolgate keys      create|list|show|revoke ...
  toolgate audit     verify|replay|export ...
  toolgate x402      check [--url URL]   listing self-check of a running gateway
  toolgate version
`

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	args := os.Args[2:]
	switch os.Args[1] {
	case "serve":
		err = runServe(args)
	case "validate":
		err = runValidate(args)
	case "keys":
		err = runKeys(args)
	case "audit":
		err = runAudit(args)
	case "x402":
		err = runX402(args)
	case "version", "--version", "-v":
		fmt.Println("toolgate", version)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "toolgate: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		if e := (exitError{}); errors.As(err, &e) {
			if e.msg != "" {
				fmt.Fprintln(os.Stderr, e.msg)
			}
			os.Exit(e.code)
		}
		fmt.Fprintln(os.Stderr, "toolgate:", err)
		os.Exit(1)
	}
}

// exitError ends the process with code after printing msg.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }
