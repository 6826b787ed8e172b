package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestServePprof: --pprof-listen takes loopback addresses only, serves
// the profiles and the execution trace, and not the command line (which
// may hold --admin-token).
func TestServePprof(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "192.0.2.1:0", "example.com:0", "nonsense"} {
		if _, _, err := servePprof(addr, make(chan error, 1)); err == nil {
			t.Errorf("servePprof(%q): no error, want a loopback-only refusal", addr)
		}
	}
	errc := make(chan error, 1)
	stop, addr, err := servePprof("127.0.0.1:0", errc)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/debug/pprof/goroutine?debug=1"); code != 200 || !strings.Contains(body, "goroutine profile") {
		t.Errorf("goroutine profile: %d %.80q", code, body)
	}
	if code, body := get("/debug/pprof/trace?seconds=0.1"); code != 200 || !strings.HasPrefix(body, "go 1.") {
		t.Errorf("trace: %d %.20q, want a runtime trace", code, body)
	}
	if code, _ := get("/debug/pprof/cmdline"); code != http.StatusNotFound {
		t.Errorf("cmdline: %d, want 404", code)
	}
	select {
	case err := <-errc:
		t.Fatalf("server error: %v", err)
	default:
	}
}
