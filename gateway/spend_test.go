package gateway_test

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
)

// heldUpstream is a real loopback upstream that holds each request until
// the test sends the status to answer it with. arrived receives one value
// per request, once the request is held.
type heldUpstream struct {
	url     string
	hits    atomic.Int64
	arrived chan struct{}
	answer  chan int
}

func newHeldUpstream(t *testing.T) *heldUpstream {
	u := &heldUpstream{arrived: make(chan struct{}, 16), answer: make(chan int, 16)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		u.arrived <- struct{}{}
		status := <-u.answer
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write([]byte(`{}`))
	}))
	t.Cleanup(func() {
		close(u.answer) // let a handler still held return
		srv.Close()
	})
	u.url = srv.URL
	return u
}

// TestSpendCap_ReservedInFlight: a call refused because calls in flight
// hold the cap says so (reserved_usd, spend_today_usd committed only) and
// asks to retry in a second; a reservation whose call fails is released,
// not billed; a cap reached by committed spend asks to retry at midnight.
func TestSpendCap_ReservedInFlight(t *testing.T) {
	up := newHeldUpstream(t)
	h := newHarnessWith(t, nil, `{"tools":[{"id":"priced","rate_class":"light","price_usd":"0.01","upstream":"`+up.url+`/priced"}]}`, nil)
	k := h.createKey(`{}`)
	if resp, b := h.admin("PUT", "/credits/keys/"+k.KeyID+"/policy", `{"daily_spend_cap_usd":0.01}`); resp.StatusCode != 200 {
		t.Fatalf("put policy: got %d %s, want 200", resp.StatusCode, b)
	}

	type result struct {
		resp *http.Response
		body []byte
	}
	first := make(chan result, 1)
	go func() {
		resp, b := h.call(k.Secret, "priced", `{}`)
		first <- result{resp, b}
	}()
	<-up.arrived // the first call holds its reservation at the upstream

	t.Run("OnlyReservations", func(t *testing.T) {
		resp, b := h.call(k.Secret, "priced", `{}`)
		if resp.StatusCode != 429 {
			t.Fatalf("got %d %s, want 429", resp.StatusCode, b)
		}
		m := decode(t, b)
		if m["reserved_usd"] != 0.01 || m["spend_today_usd"] != 0.0 || m["spend_limit_usd"] != 0.01 {
			t.Fatalf("body: got %s, want reserved_usd 0.01, spend_today_usd 0, spend_limit_usd 0.01", b)
		}
		if got := resp.Header.Get("Retry-After"); got != "1" {
			t.Fatalf("Retry-After: got %q, want \"1\" (only a call in flight holds the cap)", got)
		}
		if got := up.hits.Load(); got != 1 {
			t.Fatalf("upstream saw %d requests, want 1 (the refused call never reaches it)", got)
		}
	})

	up.answer <- 500
	r := <-first
	if r.resp.StatusCode != 500 || r.resp.Header.Get("X-Cost-Usd") != "0.000" {
		t.Fatalf("first call: got %d cost %s, want 500 unbilled", r.resp.StatusCode, r.resp.Header.Get("X-Cost-Usd"))
	}

	up.answer <- 200
	if resp, b := h.call(k.Secret, "priced", `{}`); resp.StatusCode != 200 || resp.Header.Get("X-Cost-Usd") != "0.010" {
		t.Fatalf("after the release: got %d %s cost %s, want 200 billed 0.010", resp.StatusCode, b, resp.Header.Get("X-Cost-Usd"))
	}
	<-up.arrived

	t.Run("Committed", func(t *testing.T) {
		resp, b := h.call(k.Secret, "priced", `{}`)
		if resp.StatusCode != 429 {
			t.Fatalf("got %d %s, want 429", resp.StatusCode, b)
		}
		m := decode(t, b)
		if m["reserved_usd"] != 0.0 || m["spend_today_usd"] != 0.01 {
			t.Fatalf("body: got %s, want reserved_usd 0, spend_today_usd 0.01", b)
		}
		reset := m["reset_in_seconds"].(float64)
		if got := resp.Header.Get("Retry-After"); got != strconv.Itoa(int(reset)) || reset <= 1 {
			t.Fatalf("Retry-After: got %q, want reset_in_seconds %v (next midnight)", got, reset)
		}
	})
	if st := h.status("key_id=" + k.KeyID); st["spend_today_usd"] != 0.01 {
		t.Fatalf("spend_today_usd: got %v, want 0.01 (the served call only)", st["spend_today_usd"])
	}
}
