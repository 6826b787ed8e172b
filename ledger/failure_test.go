package ledger

import (
	"errors"
	"fmt"
	"sync"
	"testing"
)

// TestLedger_WriteFailure fails one group commit of a loaded ledger (the
// 20th, or the first after seq 100 is committed) and checks the failure
// contract: the failed group's Waits (and those appended behind it) report
// ErrWriteFailed; the ledger then resumes from the head the store really
// holds, so later appends succeed; every acknowledged record is stored
// unchanged, stored seqs are gap-free and the chain verifies.
func TestLedger_WriteFailure(t *testing.T) {
	for _, mode := range []struct {
		name string
		sync SyncMode
	}{{"SyncAlways", SyncAlways}, {"SyncInterval", SyncInterval}} {
		t.Run(mode.name, func(t *testing.T) {
			dir := t.TempDir()
			db := openDB(t, dir, false)
			// The hook runs on the writer goroutine, which alone writes
			// cSeq; l is set before the first Append reaches it.
			var l *Ledger
			var writes, failedAt int
			h := &hooks{journalWrite: func() error {
				writes++
				if failedAt == 0 && (writes == 20 || l.w.cSeq >= 100) {
					failedAt = writes
					return errors.New("injected fault")
				}
				return nil
			}}
			l, err := Open(db, dir, Options{Sync: mode.sync, CheckpointEvery: 7, hooks: h})
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer db.Close()
			const workers, each = 16, 60
			type result struct {
				seq  uint64
				hash string
				err  error
			}
			results := make(chan result, workers*each)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					<-start
					for i := 0; i < each; i++ {
						r := callRec(fmt.Sprintf("key:%d", w), "t", OutcomeAllowed)
						err := l.Append(r).Wait()
						results <- result{r.Seq, r.Hash, err}
					}
				}(w)
			}
			close(start)
			wg.Wait()
			close(results)

			acked := map[uint64]string{}
			failed := 0
			for r := range results {
				switch {
				case r.err == nil:
					if h, dup := acked[r.seq]; dup {
						t.Fatalf("seq %d acknowledged twice (%s, %s)", r.seq, h, r.hash)
					}
					acked[r.seq] = r.hash
				case errors.Is(r.err, ErrWriteFailed):
					failed++
				default:
					t.Errorf("Wait: got %v, want nil or ErrWriteFailed", r.err)
				}
			}
			if failed == 0 || failedAt == 0 {
				t.Fatal("no Wait failed: the fault was not injected")
			}
			if len(acked)+failed != workers*each {
				t.Fatalf("acknowledged %d + failed %d, want %d", len(acked), failed, workers*each)
			}
			// Recovered: a new record commits and links to the stored head.
			if err := l.Append(callRec("key:x", "t", OutcomeAllowed)).Wait(); err != nil {
				t.Errorf("Append after recovery: %v", err)
			}
			if rep := l.Verify(); !rep.OK {
				t.Fatalf("Verify after a failed group: %+v", rep)
			}
			if err := l.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}

			storedSeqs(t, l)
			var missing int
			err = l.Query(Query{}, func(r *Record) error {
				if h, ok := acked[r.Seq]; ok {
					if h != r.Hash {
						return fmt.Errorf("acknowledged seq %d stored with hash %s, was %s", r.Seq, r.Hash, h)
					}
					delete(acked, r.Seq)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			missing = len(acked)
			if missing > 0 {
				t.Fatalf("%d acknowledged records missing from the store", missing)
			}
		})
	}
}
