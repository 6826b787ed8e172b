package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// approvalPrefix is the badger prefix of the local approval store:
// "a/<id>" → the approval's JSON.
const approvalPrefix = "a/"

// localApprovals is the ApprovalStore of one gateway: its badger store,
// so that approvals survive a restart. One lock orders every move, so a
// move out of pending happens once. Its node is "" (the gateway alone).
type localApprovals struct {
	mu sync.Mutex // orders every read-modify-write
	db *badger.DB
}

// NewLocalApprovals returns the ApprovalStore kept in db (prefix "a/"),
// for a gateway that shares its approvals with no other.
func NewLocalApprovals(db *badger.DB) ApprovalStore { return &localApprovals{db: db} }

var errApprovalExists = errors.New("gateway: approval id already stored")

func (s *localApprovals) Create(a *Approval) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, err := s.load(a.ID); err != nil {
		return err
	} else if old != nil {
		return errApprovalExists
	}
	b := *a
	b.Status = ApprovalPending
	return s.save(&b)
}

func (s *localApprovals) Get(id string) (*Approval, error) { return s.load(id) }

func (s *localApprovals) List(status string) ([]*Approval, error) {
	var out []*Approval
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(approvalPrefix), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			a := &Approval{}
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, a) }); err != nil {
				return err
			}
			if status == "" || a.Status == status {
				out = append(out, a)
			}
		}
		return nil
	})
	slices.SortStableFunc(out, func(a, b *Approval) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, err
}

func (s *localApprovals) Decide(id string, d ApprovalDecision) (*Approval, bool, error) {
	if err := checkDecision(d); err != nil {
		return nil, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a, err := s.load(id)
	if err != nil || a == nil || a.Status != ApprovalPending {
		return a, false, err
	}
	a.Status, a.DecidedBy, a.DecidedAt, a.Reason = d.Status, d.By, d.At, d.Reason
	if err := s.save(a); err != nil {
		return nil, false, err
	}
	return a, true, nil
}

func (s *localApprovals) Finish(id string, res *ApprovalResult) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, err := s.load(id)
	if err != nil || a == nil || a.Status != ApprovalApproved {
		return false, err
	}
	a.Status, a.Result = ApprovalDone, res
	return true, s.save(a)
}

func (s *localApprovals) Recover(reason string) (int, error) {
	list, err := s.List(ApprovalApproved)
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, a := range list {
		if a, err = s.load(a.ID); err != nil {
			return n, err
		}
		if a == nil || a.Status != ApprovalApproved {
			continue // finished meanwhile
		}
		a.Status, a.Reason = ApprovalFailed, reason
		if err := s.save(a); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

func (s *localApprovals) Sweep(cutoff time.Time) (int, error) {
	list, err := s.List("")
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	n := 0
	for _, a := range list {
		if !Swept(a, cutoff) {
			continue
		}
		if err := wb.Delete([]byte(approvalPrefix + a.ID)); err != nil {
			return 0, err
		}
		n++
	}
	return n, wb.Flush()
}

// Swept reports whether ApprovalStore.Sweep(cutoff) deletes a: it
// reached an end, decided before cutoff.
func Swept(a *Approval, cutoff time.Time) bool {
	switch a.Status {
	case ApprovalDone, ApprovalDenied, ApprovalExpired, ApprovalFailed:
		at := a.DecidedAt
		if at.IsZero() {
			at = a.CreatedAt
		}
		return at.Before(cutoff)
	}
	return false
}

func (s *localApprovals) load(id string) (*Approval, error) {
	var a *Approval
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get([]byte(approvalPrefix + id))
		if err != nil {
			return err
		}
		return it.Value(func(v []byte) error {
			a = &Approval{}
			return json.Unmarshal(v, a)
		})
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	return a, err
}

func (s *localApprovals) save(a *Approval) error {
	v, err := json.Marshal(a)
	if err != nil {
		return err
	}
	return s.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(approvalPrefix+a.ID), v) })
}

// checkDecision refuses a decision that is not a move out of pending.
func checkDecision(d ApprovalDecision) error {
	switch d.Status {
	case ApprovalApproved, ApprovalDenied, ApprovalExpired:
		return nil
	}
	return fmt.Errorf("gateway: approval decision %q: not approved, denied or expired", d.Status)
}

// CheckApprovalDecision refuses a decision that is not a move out of
// pending, for other ApprovalStore implementations.
func CheckApprovalDecision(d ApprovalDecision) error { return checkDecision(d) }
