package main

import (
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/toolgate/toolgate/x402"
)

// urlList is a repeatable string flag (--x402-facilitator A --x402-facilitator B).
type urlList []string

func (l *urlList) String() string { return strings.Join(*l, ",") }
func (l *urlList) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// facilitators builds the facilitator clients of urls. With CDP
// credentials in the environment (CDP_API_KEY_ID, CDP_API_KEY_SECRET),
// a single facilitator gets CDP JWT auth whatever its URL; among several,
// those on a cdp.coinbase.com host do.
func facilitators(urls []string) (facs []*x402.Facilitator, cdpAuth bool, err error) {
	var auth func(method, host, path string) (string, error)
	if os.Getenv("CDP_API_KEY_ID") != "" {
		if auth, err = x402.CDPAuthFromEnv(); err != nil {
			return nil, false, err
		}
	}
	for _, u := range urls {
		f := &x402.Facilitator{URL: u, HTTP: &http.Client{Timeout: 60 * time.Second}}
		if auth != nil && (len(urls) == 1 || isCDPHost(u)) {
			f.Auth, cdpAuth = auth, true
		}
		facs = append(facs, f)
	}
	return facs, cdpAuth, nil
}

func isCDPHost(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && (u.Hostname() == "cdp.coinbase.com" || strings.HasSuffix(u.Hostname(), ".cdp.coinbase.com"))
}
