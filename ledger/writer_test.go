package ledger

import (
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestWriter_WaitJournalsOnCaller: a Wait that finds nobody journaling
// writes its group itself, on the caller's goroutine (no hand-off to the
// writer goroutine and back), and the record is journaled when Wait
// returns.
func TestWriter_WaitJournalsOnCaller(t *testing.T) {
	var onWriter, onCaller atomic.Int64
	h := &hooks{journalWrite: func() error {
		buf := make([]byte, 64<<10)
		st := string(buf[:runtime.Stack(buf, false)])
		switch {
		case strings.Contains(st, "ledger.(*writer).wait"):
			onCaller.Add(1)
		case strings.Contains(st, "ledger.(*writer).run"):
			onWriter.Add(1)
		}
		return nil
	}}
	l, _, _ := newLedger(t, Options{Sync: SyncInterval, hooks: h})
	for i := 0; i < 20; i++ {
		r := callRec("key:a", "t", OutcomeAllowed)
		if err := l.Append(r).Wait(); err != nil {
			t.Fatalf("Wait: %v", err)
		}
		if seq, _ := l.Head(); seq != r.Seq {
			t.Fatalf("Head after Wait: got seq %d, want %d", seq, r.Seq)
		}
	}
	if got := onCaller.Load(); got != 20 {
		t.Errorf("journal writes on the waiting caller: got %d, want 20 (on the writer goroutine: %d)", got, onWriter.Load())
	}
}

// TestWriter_WaitWhileAnotherWrites: while one caller's journal write is
// held (a slow disk), other callers' Waits return only once their own
// records are journaled, in seq order, and none is lost or stuck.
func TestWriter_WaitWhileAnotherWrites(t *testing.T) {
	hold := make(chan struct{})
	var held atomic.Bool
	entered := make(chan struct{})
	var writes atomic.Int64
	h := &hooks{journalWrite: func() error {
		writes.Add(1)
		if held.CompareAndSwap(false, true) {
			close(entered)
			<-hold
		}
		return nil
	}}
	l, _, _ := newLedger(t, Options{Sync: SyncInterval, hooks: h})

	first := callRec("key:first", "t", OutcomeAllowed)
	firstDone := make(chan error, 1)
	go func() { firstDone <- l.Append(first).Wait() }()
	<-entered // the first group's write is in progress and held

	const workers = 8
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	seqs := make(chan uint64, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := callRec("key:b", "t", OutcomeAllowed)
			if err := l.Append(r).Wait(); err != nil {
				errs <- err
				return
			}
			if seq, _ := l.Head(); seq < r.Seq {
				t.Errorf("Wait returned before its record was journaled: head %d, record %d", seq, r.Seq)
			}
			seqs <- r.Seq
		}()
	}
	// Nobody can be answered while the first write is held.
	select {
	case s := <-seqs:
		t.Fatalf("record %d answered while the journal write before it was held", s)
	case <-time.After(50 * time.Millisecond):
	}
	close(hold)
	if err := <-firstDone; err != nil {
		t.Fatalf("first Wait: %v", err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Wait: %v", err)
	}
	if seq, _ := l.Head(); seq != workers+1 {
		t.Errorf("Head: got %d, want %d", seq, workers+1)
	}
	if got := len(collect(t, l, Query{Principal: "key:b"})); got != workers {
		t.Errorf("records of the waiting callers: got %d, want %d", got, workers)
	}
	if n := writes.Load(); n < 2 || n > workers+1 {
		t.Errorf("journal writes: got %d, want 2..%d (the held one, then the waiting groups)", n, workers+1)
	}
}

// TestWriter_UnwaitedTicketJournaled: records whose Ticket nobody waits
// for are still journaled, by the writer goroutine's periodic pass.
func TestWriter_UnwaitedTicketJournaled(t *testing.T) {
	for _, mode := range []SyncMode{SyncAlways, SyncInterval} {
		l, _, _ := newLedger(t, Options{Sync: mode, SyncEvery: 10 * time.Millisecond})
		r := callRec("key:a", "t", OutcomeAllowed)
		l.Append(r) // no Wait
		deadline := time.Now().Add(5 * time.Second)
		for {
			if seq, _ := l.Head(); seq == r.Seq {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("sync mode %d: record never journaled without a Wait", mode)
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// TestApplier_AppliesWithoutReaders: the applier is woken by a timer,
// not by every group; with nobody reading, journaled records are still
// applied (indexed) soon after.
func TestApplier_AppliesWithoutReaders(t *testing.T) {
	l, _, _ := newLedger(t, Options{Sync: SyncInterval})
	var last uint64
	for i := 0; i < 5; i++ {
		r := callRec("key:a", "t", OutcomeAllowed)
		if err := l.Append(r).Wait(); err != nil {
			t.Fatal(err)
		}
		last = r.Seq
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if seq, _ := l.appliedHead(); seq == last {
			return
		}
		if time.Now().After(deadline) {
			seq, _ := l.appliedHead()
			t.Fatalf("applied head: got %d, want %d", seq, last)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestWriter_WaitYieldingJoinsReadyCallers: callers that are ready to run
// when one of them waits with WaitYielding join its group, and one
// journal write answers them all; with Wait, each caller alone on the CPU
// writes its own group. One CPU, so that "ready" is deterministic: a
// round counts writes for two callers released together.
func TestWriter_WaitYieldingJoinsReadyCallers(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	var writes atomic.Int64
	h := &hooks{journalWrite: func() error { writes.Add(1); return nil }}
	l, _, _ := newLedger(t, Options{Sync: SyncInterval, hooks: h})

	round := func(wait func(Ticket) error) int64 {
		before := writes.Load()
		start := make(chan struct{})
		var wg sync.WaitGroup
		errs := make(chan error, 2)
		for i := 0; i < 2; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				r := callRec("key:a", "t", OutcomeAllowed)
				if err := wait(l.Append(r)); err != nil {
					errs <- err
					return
				}
				if l.w.journaled() < r.Seq {
					errs <- errNotJournaled
				}
			}()
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("wait: %v", err)
		}
		return writes.Load() - before
	}
	const rounds = 20
	joined, alone := 0, 0
	for i := 0; i < rounds; i++ {
		if round(Ticket.WaitYielding) == 1 {
			joined++
		}
		if round(Ticket.Wait) == 2 {
			alone++
		}
	}
	// The writer goroutine's tick may journal a group between the two
	// appends now and then; nearly every round must show the difference.
	if joined < rounds-2 {
		t.Errorf("WaitYielding: one write for two ready callers in %d of %d rounds, want >= %d", joined, rounds, rounds-2)
	}
	if alone < rounds-2 {
		t.Errorf("Wait: one write per caller in %d of %d rounds, want >= %d", alone, rounds, rounds-2)
	}
}

var errNotJournaled = errors.New("returned before its record was journaled")
