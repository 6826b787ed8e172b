package ledger

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	badger "github.com/dgraph-io/badger/v4"
)

// TestLedger_WriteFailure fails one group commit of a loaded ledger (the
// 20th, or the first after seq 100 is committed) and checks the failure
// contract: the successful
// Waits are exactly seqs 1..k, every later Wait fails with ErrWriteFailed
// (sticky: no group after the failed one reports success), and the store
// holds an unbroken prefix that includes every acknowledged record.
func TestLedger_WriteFailure(t *testing.T) {
	for _, mode := range []struct {
		name string
		sync SyncMode
	}{{"SyncAlways", SyncAlways}, {"SyncInterval", SyncInterval}} {
		t.Run(mode.name, func(t *testing.T) {
			dir := t.TempDir()
			db := openDB(t, dir, false)
			l, err := Open(db, dir, Options{Sync: mode.sync, CheckpointEvery: 7})
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer db.Close()
			// Set before the first Append: the writer reads it only after
			// taking a group under l.mu, which orders it after this write.
			var writes, failedAt int
			l.writeFault = func() error {
				writes++
				if failedAt == 0 && (writes == 20 || l.cSeq >= 100) {
					failedAt = writes
					return errors.New("injected fault")
				}
				return nil
			}
			const workers, each = 16, 60
			type result struct {
				seq uint64
				err error
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
						results <- result{r.Seq, err}
						if err != nil {
							return
						}
					}
				}(w)
			}
			close(start)
			wg.Wait()
			close(results)

			var okMax uint64
			failMin := ^uint64(0)
			oks := 0
			for r := range results {
				switch {
				case r.err == nil:
					oks++
					okMax = max(okMax, r.seq)
				case errors.Is(r.err, ErrWriteFailed):
					if r.seq != 0 { // seq 0: refused at Append, after the failure
						failMin = min(failMin, r.seq)
					}
				default:
					t.Errorf("Wait: got %v, want nil or ErrWriteFailed", r.err)
				}
			}
			if okMax >= failMin {
				t.Errorf("success for seq %d after a failure at seq %d, want every success before every failure", okMax, failMin)
			}
			if uint64(oks) != okMax {
				t.Errorf("successful Waits: got %d, want %d (seqs 1..%d)", oks, okMax, okMax)
			}
			if failMin == ^uint64(0) {
				t.Errorf("no Wait failed, want ErrWriteFailed after db.Close")
			}
			if err := l.Append(callRec("key:x", "t", OutcomeAllowed)).Wait(); !errors.Is(err, ErrWriteFailed) {
				t.Errorf("Append after failure: got %v, want ErrWriteFailed", err)
			}
			if err := l.Close(); !errors.Is(err, ErrWriteFailed) {
				t.Errorf("Close: got %v, want ErrWriteFailed", err)
			}

			var next uint64 = 1
			err = db.View(func(txn *badger.Txn) error {
				it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixRecord})
				defer it.Close()
				for it.Rewind(); it.Valid(); it.Next() {
					if got := seqFromKey(it.Item().Key()); got != next {
						return fmt.Errorf("stored seq: got %d, want %d", got, next)
					}
					next++
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if stored := next - 1; stored < okMax {
				t.Errorf("stored records: got %d, want at least the %d acknowledged", stored, okMax)
			}
		})
	}
}
