package gateway_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/ledger"
)

var testProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}

func TestClientAddr(t *testing.T) {
	for _, tc := range []struct {
		name   string
		peer   string
		header gateway.ProxyHeader
		values []string
		want   string
	}{
		{"UntrustedPeerIgnoresHeader", "203.0.113.9", gateway.ProxyXForwardedFor, []string{"1.2.3.4"}, "203.0.113.9"},
		{"UntrustedPeerIgnoresForwarded", "203.0.113.9", gateway.ProxyForwarded, []string{"for=1.2.3.4"}, "203.0.113.9"},
		{"TrustedPeerNoHeader", "10.0.0.1", gateway.ProxyXForwardedFor, nil, "10.0.0.1"},
		{"OneHop", "10.0.0.1", gateway.ProxyXForwardedFor, []string{"1.2.3.4"}, "1.2.3.4"},
		{"SpoofedLeft", "10.0.0.1", gateway.ProxyXForwardedFor, []string{"6.6.6.6, 1.2.3.4"}, "1.2.3.4"},
		{"SpoofedTrustedLeft", "10.0.0.1", gateway.ProxyXForwardedFor, []string{"10.9.9.9, 1.2.3.4"}, "1.2.3.4"},
		{"ChainOfProxies", "10.0.0.1", gateway.ProxyXForwardedFor, []string{"6.6.6.6, 1.2.3.4, 10.0.0.3, 10.0.0.2"}, "1.2.3.4"},
		{"AllTrusted", "10.0.0.1", gateway.ProxyXForwardedFor, []string{"10.0.0.3, 10.0.0.2"}, "10.0.0.3"},
		{"GarbageStops", "10.0.0.1", gateway.ProxyXForwardedFor, []string{"1.2.3.4, not-an-ip"}, "10.0.0.1"},
		{"GarbageBehindTrustedHop", "10.0.0.1", gateway.ProxyXForwardedFor, []string{"nonsense, 10.0.0.7"}, "10.0.0.7"},
		{"SeveralHeaderLines", "10.0.0.1", gateway.ProxyXForwardedFor, []string{"6.6.6.6", "1.2.3.4, 10.0.0.2"}, "1.2.3.4"},
		{"EmptyElements", "10.0.0.1", gateway.ProxyXForwardedFor, []string{" , 1.2.3.4 ,, "}, "1.2.3.4"},
		{"WithPort", "10.0.0.1", gateway.ProxyXForwardedFor, []string{"1.2.3.4:5678"}, "1.2.3.4"},
		{"IPv6WithPort", "10.0.0.1", gateway.ProxyXForwardedFor, []string{"[2001:db8::1]:80"}, "2001:db8::1"},
		{"IPv6", "fd00::1", gateway.ProxyXForwardedFor, []string{"2001:db8::1, fd12::3"}, "2001:db8::1"},
		{"Mapped", "10.0.0.1", gateway.ProxyXForwardedFor, []string{"::ffff:1.2.3.4"}, "1.2.3.4"},
		{"MappedTrustedHop", "10.0.0.1", gateway.ProxyXForwardedFor, []string{"1.2.3.4, ::ffff:10.0.0.5"}, "1.2.3.4"},
		{"Zone", "10.0.0.1", gateway.ProxyXForwardedFor, []string{"fe80::1%eth0"}, "fe80::1"},

		{"Forwarded", "10.0.0.1", gateway.ProxyForwarded, []string{"for=192.0.2.60;proto=http;by=203.0.113.43"}, "192.0.2.60"},
		{"ForwardedQuotedV6", "10.0.0.1", gateway.ProxyForwarded, []string{`for="[2001:db8:cafe::17]:4711"`}, "2001:db8:cafe::17"},
		{"ForwardedCase", "10.0.0.1", gateway.ProxyForwarded, []string{"proto=https;For=192.0.2.60"}, "192.0.2.60"},
		{"ForwardedSpoofedLeft", "10.0.0.1", gateway.ProxyForwarded, []string{"for=6.6.6.6, for=192.0.2.60;proto=https"}, "192.0.2.60"},
		{"ForwardedChain", "10.0.0.1", gateway.ProxyForwarded, []string{"for=6.6.6.6, for=192.0.2.60", "for=10.0.0.2;by=10.0.0.1"}, "192.0.2.60"},
		{"ForwardedUnknownStops", "10.0.0.1", gateway.ProxyForwarded, []string{"for=6.6.6.6, for=unknown"}, "10.0.0.1"},
		{"ForwardedObfuscatedStops", "10.0.0.1", gateway.ProxyForwarded, []string{`for="_hidden", for=10.0.0.2`}, "10.0.0.2"},
		{"ForwardedNoFor", "10.0.0.1", gateway.ProxyForwarded, []string{"proto=https"}, "10.0.0.1"},
		{"ForwardedQuotedComma", "10.0.0.1", gateway.ProxyForwarded, []string{`for="6.6.6.6, for=1.2.3.4"`}, "10.0.0.1"},
		{"ForwardedTwoFor", "10.0.0.1", gateway.ProxyForwarded, []string{"for=1.2.3.4;for=6.6.6.6"}, "10.0.0.1"},
		{"ForwardedEscape", "10.0.0.1", gateway.ProxyForwarded, []string{`for="1.2.3\.4"`}, "10.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var vals [][]byte
			for _, v := range tc.values {
				vals = append(vals, []byte(v))
			}
			got := gateway.ClientAddr(netip.MustParseAddr(tc.peer), testProxies, tc.header, vals)
			if got.String() != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

// refClientAddr is a plain reading of X-Forwarded-For for the fuzzer to
// compare with: split everything on commas, walk from the right.
func refClientAddr(peer netip.Addr, vals [][]byte) netip.Addr {
	in := func(a netip.Addr) bool {
		for _, p := range testProxies {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	if !in(peer) {
		return peer
	}
	var hops []string
	for _, v := range vals {
		hops = append(hops, strings.Split(string(v), ",")...)
	}
	cur := peer
	for i := len(hops) - 1; i >= 0; i-- {
		h := strings.Trim(hops[i], " \t")
		if h == "" {
			continue
		}
		a, err := netip.ParseAddr(h)
		if err != nil {
			ap, err2 := netip.ParseAddrPort(h)
			if err2 != nil {
				if len(h) > 2 && h[0] == '[' && h[len(h)-1] == ']' {
					a, err = netip.ParseAddr(h[1 : len(h)-1])
				}
				if err != nil || !a.Is6() || len(h) > 64 {
					return cur
				}
			} else {
				a = ap.Addr()
			}
		}
		if len(h) > 64 {
			return cur
		}
		cur = a.WithZone("").Unmap()
		if !in(cur) {
			return cur
		}
	}
	return cur
}

// FuzzClientAddr: the parser never panics, always returns a valid
// address, returns an untrusted peer untouched, reads X-Forwarded-For as
// the plain split-and-walk does, and for Forwarded returns the peer or an
// address whose text (or its unmapped form) appears in the header.
func FuzzClientAddr(f *testing.F) {
	for _, s := range []string{"1.2.3.4", "6.6.6.6, 1.2.3.4, 10.0.0.2", "[2001:db8::1]:80", "for=1.2.3.4;proto=https",
		`for="[2001:db8:cafe::17]:4711", for=10.0.0.2`, `for="a,b", for=unknown`, " , ,", "::ffff:10.1.2.3"} {
		f.Add(s, "", uint8(0), true)
		f.Add(s, "for=10.0.0.9", uint8(1), false)
	}
	f.Fuzz(func(t *testing.T, v1, v2 string, hdr uint8, trustedPeer bool) {
		peer := netip.MustParseAddr("203.0.113.1")
		if trustedPeer {
			peer = netip.MustParseAddr("10.0.0.1")
		}
		vals := [][]byte{[]byte(v1)}
		if v2 != "" {
			vals = append(vals, []byte(v2))
		}
		h := gateway.ProxyHeader(hdr % 2)
		got := gateway.ClientAddr(peer, testProxies, h, vals)
		if !got.IsValid() {
			t.Fatalf("invalid address for %q", vals)
		}
		if !trustedPeer && got != peer {
			t.Fatalf("untrusted peer: got %s, want the peer", got)
		}
		if h == gateway.ProxyXForwardedFor {
			if want := refClientAddr(peer, vals); got != want {
				t.Fatalf("X-Forwarded-For %q: got %s, reference %s", vals, got, want)
			}
			return
		}
		if got != peer && !bytes.Contains(bytes.Join(vals, nil), []byte(strings.Split(got.String(), "%")[0])) &&
			!bytes.Contains(bytes.ToLower(bytes.Join(vals, nil)), []byte("::ffff:")) {
			t.Fatalf("Forwarded %q: got %s, which it does not name", vals, got)
		}
	})
}

// logBuffer is a concurrency-safe log sink.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *logBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// TestTrustedProxies_Gateway: behind a trusted proxy (the loopback peer)
// the client named by X-Forwarded-For is the call's source: the upstream
// gets it as X-Forwarded-For, the access log names it, and the anonymous
// flood bound counts per client, not per proxy; a spoofed left part of
// the chain changes nothing.
func TestTrustedProxies_Gateway(t *testing.T) {
	var logs logBuffer
	up := newUpstream(t)
	h := newHarnessWith(t, up, testCatalog(up.srv.URL), func(o *gateway.Options) {
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		o.AccessLog = true
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	k := h.createKey(`{}`)
	resp, body := h.call(k.Secret, "search/web", `{}`, "X-Forwarded-For", "6.6.6.6, 198.51.100.7")
	if resp.StatusCode != 200 {
		t.Fatalf("got %d %s", resp.StatusCode, body)
	}
	last, _ := up.lastRequest()
	if got := last.Header.Values("X-Forwarded-For"); len(got) != 1 || got[0] != "198.51.100.7" {
		t.Fatalf("upstream X-Forwarded-For: got %q, want [198.51.100.7]", got)
	}
	if !strings.Contains(logs.String(), "source=198.51.100.7") {
		t.Fatalf("access log lacks source=198.51.100.7:\n%s", logs.String())
	}
	if got := last.Header.Get("X-Forwarded-Proto"); got != "http" {
		t.Fatalf("upstream X-Forwarded-Proto: got %q, want http (the proxy said nothing)", got)
	}
	h.call(k.Secret, "search/web", `{}`, "X-Forwarded-For", "198.51.100.7", "X-Forwarded-Proto", "http, HTTPS")
	if last, _ := up.lastRequest(); last.Header.Get("X-Forwarded-Proto") != "https" {
		t.Fatalf("upstream X-Forwarded-Proto: got %q, want https (the trusted proxy's last value)", last.Header.Get("X-Forwarded-Proto"))
	}
	// Forwarded is not the configured header: a client's is ignored.
	h.call(k.Secret, "search/web", `{}`, "Forwarded", "for=198.51.100.9")
	if last, _ := up.lastRequest(); last.Header.Get("X-Forwarded-For") != "127.0.0.1" {
		t.Fatalf("upstream X-Forwarded-For: got %q, want 127.0.0.1 (Forwarded is not read)", last.Header.Get("X-Forwarded-For"))
	}
	// 25 unknown-path calls from each of two clients behind the proxy:
	// each gets its own burst of 20 single records.
	for _, client := range []string{"198.51.100.1", "198.51.100.2"} {
		for range 25 {
			if resp, _ := h.do("POST", "/no/such/tool", `{}`, "X-Forwarded-For", "10.1.1.1, "+client); resp.StatusCode != 404 {
				t.Fatalf("got %d, want 404", resp.StatusCode)
			}
		}
	}
	h.gw.Close()
	single := map[string]int{}
	agg := map[string]int64{}
	err := h.led.Query(ledger.Query{Type: "call"}, func(r *ledger.Record) error {
		if r.Outcome != "unknown_tool" {
			return nil
		}
		if len(r.State) > 0 {
			var s struct {
				Source string `json:"source"`
				Count  int64  `json:"count"`
			}
			json.Unmarshal(r.State, &s)
			agg[s.Source] += s.Count
			return nil
		}
		single["?"]++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if single["?"] != 40 || agg["198.51.100.1"] != 5 || agg["198.51.100.2"] != 5 || len(agg) != 2 {
		t.Fatalf("got %d single records and aggregates %v, want 40 and 5 per client", single["?"], agg)
	}
}

// TestTrustedProxies_Untrusted: from a peer outside the trusted networks
// (and with none configured) the forwarding headers are ignored: the
// source is the peer, whatever chain the caller sends.
func TestTrustedProxies_Untrusted(t *testing.T) {
	for _, tc := range []struct {
		name    string
		proxies []netip.Prefix
	}{
		{"NoneConfigured", nil},
		{"PeerNotTrusted", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newUpstream(t)
			h := newHarnessWith(t, up, testCatalog(up.srv.URL), func(o *gateway.Options) {
				o.TrustedProxies = tc.proxies
				o.ProxyHeader = gateway.ProxyForwarded
			})
			k := h.createKey(`{}`)
			resp, body := h.call(k.Secret, "search/web", `{}`, "X-Forwarded-For", "198.51.100.7", "Forwarded", "for=198.51.100.8;proto=https",
				"X-Forwarded-Proto", "https")
			if resp.StatusCode != 200 {
				t.Fatalf("got %d %s", resp.StatusCode, body)
			}
			last, _ := up.lastRequest()
			if got := last.Header.Values("X-Forwarded-For"); len(got) != 1 || got[0] != "127.0.0.1" {
				t.Fatalf("upstream X-Forwarded-For: got %q, want [127.0.0.1]", got)
			}
			if got := last.Header.Get("X-Forwarded-Proto"); got != "http" {
				t.Fatalf("upstream X-Forwarded-Proto: got %q, want http (an untrusted claim)", got)
			}
			if got := last.Header.Get("Forwarded"); got != "" {
				t.Fatalf("upstream Forwarded: got %q, want none (stripped)", got)
			}
		})
	}
}

// TestTrustedProxies_Forwarded: with ProxyHeader Forwarded, a trusted
// proxy's RFC 7239 header names the client, and X-Forwarded-For is not read.
func TestTrustedProxies_Forwarded(t *testing.T) {
	up := newUpstream(t)
	h := newHarnessWith(t, up, testCatalog(up.srv.URL), func(o *gateway.Options) {
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
		o.ProxyHeader = gateway.ProxyForwarded
	})
	k := h.createKey(`{}`)
	h.call(k.Secret, "search/web", `{}`, "Forwarded", `for=6.6.6.6, for="[2001:db8::7]:443";proto=https`, "X-Forwarded-For", "198.51.100.1")
	last, _ := up.lastRequest()
	if last.Header.Get("X-Forwarded-For") != "2001:db8::7" || last.Header.Get("X-Forwarded-Proto") != "https" {
		t.Fatalf("upstream X-Forwarded-For %q, X-Forwarded-Proto %q: want 2001:db8::7 and https",
			last.Header.Get("X-Forwarded-For"), last.Header.Get("X-Forwarded-Proto"))
	}
}

// TestTrustedProxies_AdminActor: a management change made through a
// trusted proxy names the client in its ledger record's actor.
func TestTrustedProxies_AdminActor(t *testing.T) {
	up := newUpstream(t)
	h := newHarnessWith(t, up, testCatalog(up.srv.URL), func(o *gateway.Options) {
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	})
	if resp, b := h.do("POST", "/credits/keys", `{}`, "Authorization", "Bearer "+adminToken, "X-Forwarded-For", "6.6.6.6, 198.51.100.7"); resp.StatusCode != 201 {
		t.Fatalf("create key: got %d %s", resp.StatusCode, b)
	}
	var actors []string
	h.led.Query(ledger.Query{}, func(r *ledger.Record) error {
		if r.Actor != "" {
			actors = append(actors, r.Actor)
		}
		return nil
	})
	if len(actors) != 1 || actors[0] != "admin@198.51.100.7" {
		t.Fatalf("actors %q, want [admin@198.51.100.7]", actors)
	}
}
