package main

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestX402Options_Upto: --x402-upto auto reads the facilitator's upto
// address from its /supported; a facilitator without upto for the network,
// a bad address and direct on-chain settlement are start-up errors that
// say so.
func TestX402Options_Upto(t *testing.T) {
	supported := func(body string) string {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, body)
		}))
		t.Cleanup(s.Close)
		return s.URL
	}
	withUpto := supported(`{"kinds":[{"x402Version":2,"scheme":"exact","network":"eip155:84532"},
		{"x402Version":2,"scheme":"upto","network":"eip155:84532","extra":{"facilitatorAddress":"0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"}}]}`)
	exactOnly := supported(`{"kinds":[{"x402Version":2,"scheme":"exact","network":"eip155:84532"}]}`)
	flags := func(upto string, extra func(*serveFlags)) serveFlags {
		f := serveFlags{listen: "127.0.0.1:8402", x402PayTo: "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
			x402Network: "eip155:84532", x402Verify: "facilitator", x402Upto: upto}
		if extra != nil {
			extra(&f)
		}
		return f
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	t.Run("Auto", func(t *testing.T) {
		o, err := x402Options(flags("auto", func(f *serveFlags) { f.x402Facilitators = urlList{withUpto} }), nil, log)
		if err != nil {
			t.Fatal(err)
		}
		if got := o.Config.UptoFacilitator.Hex(); got != "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266" {
			t.Errorf("upto facilitator: got %s", got)
		}
	})
	t.Run("Address", func(t *testing.T) {
		o, err := x402Options(flags("0x70997970C51812dc3A010C7d01b50e0d17dc79C8", func(f *serveFlags) { f.x402Facilitators = urlList{exactOnly} }), nil, log)
		if err != nil || o.Config.UptoFacilitator.Hex() != "0x70997970C51812dc3A010C7d01b50e0d17dc79C8" {
			t.Fatalf("got %v, %v", o, err)
		}
	})
	t.Run("Off", func(t *testing.T) {
		o, err := x402Options(flags("", func(f *serveFlags) { f.x402Facilitators = urlList{withUpto} }), nil, log)
		if err != nil || o.Config.UptoFacilitator != ([20]byte{}) {
			t.Fatalf("got %v, %v; want upto off", o, err)
		}
	})
	for _, tc := range []struct {
		name, upto string
		extra      func(*serveFlags)
		want       string
	}{
		{"NoUptoAtFacilitator", "auto", func(f *serveFlags) { f.x402Facilitators = urlList{exactOnly} }, "lists no v2 upto"},
		{"BadAddress", "0x12", func(f *serveFlags) { f.x402Facilitators = urlList{withUpto} }, "want auto or the facilitator's 0x address"},
		{"DirectSettlement", "auto", func(f *serveFlags) { f.x402RPC, f.x402RelayerKey = "http://127.0.0.1:9", "key" }, "--x402-upto needs --x402-facilitator"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := x402Options(flags(tc.upto, tc.extra), nil, log)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
		})
	}
}
