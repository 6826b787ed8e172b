package x402

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// deadURL is a facilitator URL nothing listens on (dial fails: nothing sent).
func deadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String()
	ln.Close()
	return u
}

func TestFacilitators_Failover(t *testing.T) {
	o := vecOffer(t)
	p, err := Decode(payHeader(t, o, goodArgs(o, testKey("payer"))), 2)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	type obs struct{ name, op, result string }
	newSet := func(fs ...*Facilitator) (*Facilitators, *[]obs) {
		s := NewFacilitators(fs...)
		s.Now, s.BackoffMin, s.BackoffMax = clock, 10*time.Second, 40*time.Second
		var seen []obs
		s.Observe(func(name, op, result string) { seen = append(seen, obs{name, op, result}) })
		return s, &seen
	}

	t.Run("VerifyAndSettleSkipADeadOne", func(t *testing.T) {
		good, reqs, _ := facServer(t, 200, `{"isValid":true,"success":true,"transaction":"0x`+repeat("ab", 32)+`","network":"eip155:84532","payer":"0xabc"}`)
		dead := deadURL(t)
		s, seen := newSet(&Facilitator{URL: dead}, &Facilitator{URL: good.URL, HTTP: good.Client()})
		if vr, err := s.Verify(ctx, p, o); err != nil || !vr.Valid {
			t.Fatalf("verify: got %+v %v, want valid from the second", vr, err)
		}
		if sr, err := s.Settle(ctx, p, o); err != nil || !sr.Success {
			t.Fatalf("settle: got %+v %v, want success from the second", sr, err)
		}
		if len(*reqs) != 2 {
			t.Fatalf("good facilitator requests: %d, want 2", len(*reqs))
		}
		deadName := (*seen)[0].name
		want := []obs{{deadName, "verify", "error"}, {(*seen)[1].name, "verify", "ok"}, {deadName, "settle", "skipped"}, {(*seen)[1].name, "settle", "ok"}}
		if len(*seen) != len(want) {
			t.Fatalf("observed %+v, want %+v", *seen, want)
		}
		for i := range want {
			if (*seen)[i] != want[i] {
				t.Fatalf("observed %+v, want %+v", *seen, want)
			}
		}
		if h := s.Health(); h[deadName] {
			t.Fatalf("health %v: the dead one is in use", h)
		}
		// Past the back-off it is tried again (and fails again, for twice as long).
		advance(11 * time.Second)
		if h := s.Health(); !h[deadName] {
			t.Fatalf("health %v after the back-off: want the dead one back in use", h)
		}
		if _, err := s.Verify(ctx, p, o); err != nil {
			t.Fatal(err)
		}
		advance(11 * time.Second)
		if h := s.Health(); h[deadName] {
			t.Fatalf("health %v: second failure, want a 20 s back-off", h)
		}
	})
	t.Run("UnknownOutcomeNotRetriedElsewhere", func(t *testing.T) {
		broken, breqs, _ := facServer(t, 502, `bad gateway`)
		good, greqs, _ := facServer(t, 200, `{"success":true,"transaction":"0x`+repeat("ab", 32)+`","network":"eip155:84532"}`)
		s, _ := newSet(&Facilitator{URL: broken.URL, HTTP: broken.Client()}, &Facilitator{URL: good.URL, HTTP: good.Client()})
		_, err := s.Settle(ctx, p, o)
		if !errors.Is(err, ErrOutcomeUnknown) {
			t.Fatalf("settle: got %v, want ErrOutcomeUnknown", err)
		}
		if len(*breqs) != 1 || len(*greqs) != 0 {
			t.Fatalf("requests: broken %d, good %d; want 1 and 0 (never a second facilitator)", len(*breqs), len(*greqs))
		}
	})
	t.Run("AllDown", func(t *testing.T) {
		s, _ := newSet(&Facilitator{URL: deadURL(t)}, &Facilitator{URL: deadURL(t)})
		for i := 0; i < 2; i++ { // the second time both back off: tried anyway
			if _, err := s.Verify(ctx, p, o); err == nil || !errors.Is(err, ErrFacilitator) {
				t.Fatalf("verify %d: got %v, want the facilitators' errors", i, err)
			}
		}
		if err := s.Ping(ctx); err == nil {
			t.Fatal("ping: got nil, want an error")
		}
	})
}

func repeat(s string, n int) string {
	b := make([]byte, 0, len(s)*n)
	for range n {
		b = append(b, s...)
	}
	return string(b)
}

func TestFacilitator_ExtensionResponses(t *testing.T) {
	o := vecOffer(t)
	p, err := Decode(payHeader(t, o, goodArgs(o, testKey("payer"))), 2)
	if err != nil {
		t.Fatal(err)
	}
	ext := `{"bazaar":{"status":"rejected","rejectedReason":"missing info.input"}}`
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("EXTENSION-RESPONSES", base64.StdEncoding.EncodeToString([]byte(ext)))
		_, _ = io.WriteString(w, `{"isValid":true,"success":true,"transaction":"0x`+repeat("ab", 32)+`","network":"eip155:84532"}`)
	}))
	defer s.Close()
	f := &Facilitator{URL: s.URL, HTTP: s.Client()}
	vr, err := f.Verify(context.Background(), p, o)
	if err != nil || vr.Extensions != ext {
		t.Fatalf("verify: got %+v %v, want extensions %s", vr, err, ext)
	}
	sr, err := f.Settle(context.Background(), p, o)
	if err != nil || sr.Extensions != ext {
		t.Fatalf("settle: got %+v %v, want extensions %s", sr, err, ext)
	}
	got := ParseExtensionResponses(sr.Extensions)
	if len(got) != 1 || got[0] != (ExtensionStatus{"bazaar", "rejected", "missing info.input"}) {
		t.Fatalf("parsed %+v", got)
	}
}
