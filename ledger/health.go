package ledger

import "fmt"

// Healthy returns nil while the ledger accepts records and applies them
// to the store, or the reason it does not: closed, read-only, the last
// journal write failure, or (wrapping ErrWriteFailed) the applier's
// failure to write badger, with how many acknowledged records wait in the
// journal. Appends are still acknowledged in that last case until the
// backlog bound is reached.
func (l *Ledger) Healthy() error {
	if l.readOnly {
		return ErrReadOnly
	}
	l.mu.Lock()
	closed, err := l.closed, l.err
	l.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if err != nil {
		return err
	}
	l.amu.Lock()
	defer l.amu.Unlock()
	if l.applyErr != nil {
		return fmt.Errorf("%w (%d acknowledged records wait in the journal)", l.applyErr, l.acked.Load()-l.aSeq)
	}
	return nil
}
