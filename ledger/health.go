package ledger

// Healthy returns nil while the ledger accepts and commits records, or the
// reason it does not (closed, read-only, or the last write failure).
func (l *Ledger) Healthy() error {
	if l.readOnly {
		return ErrReadOnly
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	return l.err
}
