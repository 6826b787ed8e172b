package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// apiClient talks to a running gateway's management API.
type apiClient struct {
	url, token, data string
}

func (c *apiClient) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.url, "url", "http://127.0.0.1:8402", "gateway base URL")
	fs.StringVar(&c.token, "admin-token", "", "admin token (default: read from <data>/admin-token)")
	fs.StringVar(&c.data, "data", "./data", "data directory")
}

func (c *apiClient) do(method, path string, body []byte) ([]byte, error) {
	tok := c.token
	if tok == "" {
		b, err := os.ReadFile(filepath.Join(c.data, "admin-token"))
		if err != nil {
			return nil, fmt.Errorf("no --admin-token and none in %s: %w", c.data, err)
		}
		tok = strings.TrimSpace(string(b))
	}
	req, err := http.NewRequest(method, strings.TrimRight(c.url, "/")+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	cl := &http.Client{Timeout: 60 * time.Second}
	resp, err := cl.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(out))
	}
	return out, nil
}

// parseFlags parses flags and positional arguments in any order
// ("revoke KEY --offline" as well as "revoke --offline KEY"); the
// positionals are left in fs.Args().
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := envDefaults(fs); err != nil {
		return exitError{2, err.Error()}
	}
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return exitError{0, ""}
			}
			return exitError{2, ""}
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	fs.Parse(append([]string{"--"}, positional...)) //nolint:errcheck // only positionals remain
	return nil
}
