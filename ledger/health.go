package ledger

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
	if err := l.w.state(); err != nil {
		return err
	}
	return l.a.lag(l.w.journaled())
}
