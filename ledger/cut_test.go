package ledger

import (
	"testing"
	"time"
)

// TestLedger_FirstBefore: across sealed segments and the active one, the
// first record after a seq whose At is before a time, by brute force.
func TestLedger_FirstBefore(t *testing.T) {
	l, _, _ := newLedger(t, Options{SegmentBytes: 4 << 10})
	var ats []time.Time
	for i := range 300 {
		r := callRec("key:a", "email/send", OutcomeAllowed)
		r.At = t0.Add(time.Duration(i) * time.Second)
		if i%37 == 36 { // late: an At well before its neighbours'
			r.At = r.At.Add(-30 * time.Second)
		}
		ats = append(ats, r.At)
		if err := l.Append(r).Wait(); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(l.st.snapshot(listSel{})); n < 3 {
		t.Fatalf("%d segments, want several", n)
	}
	for _, after := range []uint64{0, 1, 35, 36, 37, 150, 299, 300, 400} {
		for _, cut := range []time.Duration{0, 10 * time.Second, 100 * time.Second, 250 * time.Second, time.Hour} {
			before := t0.Add(cut)
			var want uint64
			for i, at := range ats {
				if seq := uint64(i + 1); seq > after && at.Before(before) {
					want = seq
					break
				}
			}
			seq, found, err := l.FirstBefore(after, before)
			if err != nil || found != (want != 0) || seq != want {
				t.Errorf("FirstBefore(%d, t0+%v): got %d %v %v, want %d", after, cut, seq, found, err, want)
			}
		}
	}
}
