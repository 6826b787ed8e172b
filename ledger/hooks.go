package ledger

import "sync/atomic"

// hooks are the fault-injection points and probes of one Ledger, for
// this package's tests only: they reach Open through the unexported
// Options.hooks, so no other package can set them, and a nil *hooks (the
// production case) injects and counts nothing; every method is nil-safe.
// The funcs and maxBacklog are set before Open and not changed after;
// halted and the counters may be used from any goroutine.
type hooks struct {
	// journalWrite, when set, runs in the writer before each journal
	// write; a non-nil result fails that write as the disk would.
	journalWrite func() error
	// commit, when set, runs in the applier before each badger commit;
	// a non-nil result fails that commit as badger would.
	commit func() error
	// maxBacklog, when non-zero, replaces defaultMaxBacklog.
	maxBacklog uint64
	// halted makes the applier apply nothing more, and Close keep the
	// journal: a crash is simulated.
	halted atomic.Bool
	// commits counts the applier's badger commits.
	commits atomic.Int64
	// scanned counts the index keys Query visits.
	scanned atomic.Int64
}

func (h *hooks) journalFault() error {
	if h == nil || h.journalWrite == nil {
		return nil
	}
	return h.journalWrite()
}

func (h *hooks) commitFault() error {
	if h == nil || h.commit == nil {
		return nil
	}
	return h.commit()
}

func (h *hooks) halt() bool { return h != nil && h.halted.Load() }

func (h *hooks) backlog() uint64 {
	if h == nil || h.maxBacklog == 0 {
		return defaultMaxBacklog
	}
	return h.maxBacklog
}

func (h *hooks) committed() {
	if h != nil {
		h.commits.Add(1)
	}
}

func (h *hooks) scan() {
	if h != nil {
		h.scanned.Add(1)
	}
}
