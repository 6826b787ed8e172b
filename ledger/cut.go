package ledger

import (
	"fmt"
	"time"
)

// FirstBefore returns the first record after seq after (by seq) whose At
// is before before, with found false when there is none. It reads only
// the segments' time columns, never a record, so checking the records
// appended since a point costs a few nanoseconds each. A meters snapshot
// (gateway/meterssnap.go) sums every record with At before its cut; it
// still holds after seq after only while FirstBefore finds nothing. It
// first waits until every acknowledged record is applied, like Query.
func (l *Ledger) FirstBefore(after uint64, before time.Time) (seq uint64, found bool, err error) {
	if err := l.waitApplied(); err != nil {
		return 0, false, fmt.Errorf("first before: %w", err)
	}
	cut := before.UnixNano()
	for _, v := range l.st.snapshot(listSel{}) {
		if v.last() <= after {
			continue
		}
		i := 0
		if after >= v.first {
			i = int(after - v.first + 1)
		}
		for ; i < v.n; i++ {
			if v.ats[i] < cut {
				return v.first + uint64(i), true, nil
			}
		}
	}
	return 0, false, nil
}
