package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/toolgate/toolgate/money"
)

func TestLedger_Query(t *testing.T) {
	l, _, _ := newLedger(t, Options{})
	principals := []string{"key:a", "key:b", "wallet:0xc", ""}
	tools := []string{"email/send", "code_execute"}
	outcomes := []string{OutcomeAllowed, OutcomeDenied, OutcomeQuotaExceeded}
	var all []*Record
	for i := 0; i < 120; i++ {
		r := callRec(principals[i%4], tools[i%2], outcomes[i%3])
		if i%10 == 9 {
			r = &Record{Type: TypeTxn, Principal: principals[i%4], Kind: KindDebit, Amount: 5}
		}
		// Times step by a minute but run backwards every fifth record, so
		// (At, Seq) order differs from seq order.
		r.At = t0.Add(time.Duration(i) * time.Minute)
		if i%5 == 4 {
			r.At = r.At.Add(-3*time.Minute + time.Second)
		}
		all = append(all, r)
	}
	if err := l.Append(all...).Wait(); err != nil {
		t.Fatal(err)
	}
	// want applies q by brute force.
	want := func(q Query) []uint64 {
		var m []*Record
		for _, r := range all {
			if (q.Principal == "" || r.Principal == q.Principal) &&
				(q.Since.IsZero() || !r.At.Before(q.Since)) && (q.Until.IsZero() || r.At.Before(q.Until)) &&
				(q.Type == "" || r.Type == q.Type) && (q.Outcome == "" || r.Outcome == q.Outcome) &&
				(q.ExcludeOutcome == "" || r.Outcome != q.ExcludeOutcome) && (q.Tool == "" || r.Tool == q.Tool) {
				m = append(m, r)
			}
		}
		sort.SliceStable(m, func(i, j int) bool {
			if !m[i].At.Equal(m[j].At) {
				return m[i].At.Before(m[j].At)
			}
			return m[i].Seq < m[j].Seq
		})
		if q.Desc {
			for i, j := 0, len(m)-1; i < j; i, j = i+1, j-1 {
				m[i], m[j] = m[j], m[i]
			}
		}
		if q.Limit > 0 && len(m) > q.Limit {
			m = m[:q.Limit]
		}
		seqs := []uint64{}
		for _, r := range m {
			seqs = append(seqs, r.Seq)
		}
		return seqs
	}
	tests := []struct {
		name string
		q    Query
	}{
		{"All", Query{}},
		{"AllDesc", Query{Desc: true}},
		{"Principal", Query{Principal: "key:b"}},
		{"PrincipalSinceUntil", Query{Principal: "key:a", Since: t0.Add(20 * time.Minute), Until: t0.Add(61 * time.Minute)}},
		{"SinceUntil", Query{Since: t0.Add(7 * time.Minute), Until: t0.Add(9 * time.Minute)}},
		{"Outcome", Query{Outcome: OutcomeDenied}},
		{"Tool", Query{Tool: "code_execute", Principal: "wallet:0xc"}},
		{"Type", Query{Type: TypeTxn}},
		{"Limit", Query{Limit: 7, Tool: "email/send"}},
		{"RecentDenials", Query{Principal: "key:a", Type: TypeCall, ExcludeOutcome: OutcomeAllowed, Desc: true, Limit: 10}},
		{"DescUntil", Query{Until: t0.Add(30 * time.Minute), Desc: true, Limit: 5}},
		{"NoMatch", Query{Principal: "key:zzz"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := []uint64{}
			for _, r := range collect(t, l, tt.q) {
				got = append(got, r.Seq)
			}
			if w := want(tt.q); !reflect.DeepEqual(got, w) {
				t.Errorf("seqs: got %v, want %v", got, w)
			}
		})
	}
	t.Run("StopError", func(t *testing.T) {
		stop := errors.New("stop")
		n := 0
		err := l.Query(Query{}, func(*Record) error { n++; return stop })
		if err != stop || n != 1 {
			t.Errorf("Query: got %v after %d calls, want stop after 1", err, n)
		}
	})
}

func TestLedger_QueryUsesIndex(t *testing.T) {
	h := &hooks{}
	l, _, _ := newLedger(t, Options{hooks: h})
	var recs []*Record
	for i := 0; i < 2000; i++ {
		r := callRec(fmt.Sprintf("key:%03d", i%100), "t", OutcomeAllowed)
		r.At = t0.Add(time.Duration(i) * time.Second)
		recs = append(recs, r)
	}
	if err := l.Append(recs...).Wait(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		q           Query
		wantRecords int
		wantScanned int64
	}{
		{"Principal", Query{Principal: "key:042"}, 20, 20},
		{"PrincipalSince", Query{Principal: "key:042", Since: t0.Add(1000 * time.Second)}, 10, 10},
		{"PrincipalDescLimit", Query{Principal: "key:042", Desc: true, Limit: 3}, 3, 3},
		{"Time", Query{Since: t0.Add(100 * time.Second), Until: t0.Add(150 * time.Second)}, 50, 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := h.scanned.Load()
			got := collect(t, l, tt.q)
			scanned := h.scanned.Load() - before
			if len(got) != tt.wantRecords || scanned != tt.wantScanned {
				t.Errorf("got %d records after %d index keys, want %d after %d", len(got), scanned, tt.wantRecords, tt.wantScanned)
			}
		})
	}
}

func TestLedger_QueryRaw(t *testing.T) {
	l, _, _ := newLedger(t, Options{Now: stepClock(time.Second)})
	bal := money.Micros(-3)
	recs := []*Record{
		{Type: TypeCall, Principal: "wallet:0xabc", Tool: "t", Outcome: OutcomeAllowed, Reason: "q \" \\ \n é",
			Payment: &Payment{Version: 2, Scheme: "exact", Amount: 7, Nonce: "0x01"}},
		{Type: TypeTxn, Principal: "key:k", Kind: KindDebit, Amount: 3, BalanceAfter: &bal},
		{Type: TypeCall, Tool: "t", Outcome: OutcomeUnauthenticated, Status: 401},
	}
	if err := l.Append(recs...).Wait(); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		q    Query
		want []*Record
	}{
		{"TimeIndex", Query{}, recs},
		{"PrincipalIndex", Query{Principal: "wallet:0xabc"}, recs[:1]},
		{"Desc", Query{Desc: true}, []*Record{recs[2], recs[1], recs[0]}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			if err := l.QueryRaw(tt.q, func(raw []byte) error { got = append(got, string(raw)); return nil }); err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("records: got %d, want %d", len(got), len(tt.want))
			}
			for i, r := range tt.want {
				if want := string(r.AppendJSON(nil)); got[i] != want {
					t.Errorf("record %d: got %s, want %s", i, got[i], want)
				}
			}
		})
	}
}

func TestLedger_LatestBalances(t *testing.T) {
	l, db, _ := newLedger(t, Options{})
	txn := func(p string, b money.Micros) *Record {
		return &Record{Type: TypeTxn, Principal: p, Kind: KindDebit, Amount: 1, BalanceAfter: &b}
	}
	noBal := &Record{Type: TypeTxn, Principal: "key:a", Kind: KindX402Settlement, Amount: 1}
	if err := l.Append(txn("key:a", 10), txn("key:b", 20), txn("key:a", 9)).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(noBal, callRec("key:c", "t", OutcomeAllowed), txn("key:b", 0)).Wait(); err != nil {
		t.Fatal(err)
	}
	t.Run("OK", func(t *testing.T) {
		got := map[string]money.Micros{}
		err := l.LatestBalances(func(p string, b money.Micros) error { got[p] = b; return nil })
		if want := map[string]money.Micros{"key:a": 9, "key:b": 0}; err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("LatestBalances: got %v, %v, want %v, nil", got, err, want)
		}
	})
	t.Run("MatchesTxnQuery", func(t *testing.T) {
		// What the gateway computed before: the last BalanceAfter of a
		// Type "txn" query wins.
		want := map[string]money.Micros{}
		l.Query(Query{Type: TypeTxn}, func(r *Record) error {
			if r.BalanceAfter != nil {
				want[r.Principal] = *r.BalanceAfter
			}
			return nil
		})
		got := map[string]money.Micros{}
		l.LatestBalances(func(p string, b money.Micros) error { got[p] = b; return nil })
		if !reflect.DeepEqual(got, want) {
			t.Errorf("LatestBalances: got %v, want %v", got, want)
		}
	})
	t.Run("FnError", func(t *testing.T) {
		stop := errors.New("stop")
		n := 0
		if err := l.LatestBalances(func(string, money.Micros) error { n++; return stop }); err != stop || n != 1 {
			t.Errorf("LatestBalances: got %v after %d calls, want stop after 1", err, n)
		}
	})
	t.Run("ErrTampered", func(t *testing.T) {
		// Point key:a's entry at the call record (seq 5).
		db.Update(func(txn *badger.Txn) error {
			return txn.Set(balanceKey("key:a"), binary.BigEndian.AppendUint64(nil, 5))
		})
		err := l.LatestBalances(func(string, money.Micros) error { return nil })
		if !errors.Is(err, ErrTampered) {
			t.Errorf("LatestBalances: got %v, want ErrTampered", err)
		}
		if rep := l.Verify(); rep.OK || rep.FirstBadSeq != 3 || !strings.Contains(rep.Reason, "balance index") {
			t.Errorf("Verify: got %+v, want balance index failure at 3", rep)
		}
	})
}
