package cluster

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/identity"
	"github.com/toolgate/toolgate/policy"
)

// Keys is gateway.KeyStore on the cluster's State: reads (Authenticate,
// Lookup, List) answer from the node's copy in memory, as
// identity.Store does; writes go to Redis first and then to the copy, so
// that every node sees them at its next feed check.
type Keys struct{ s *State }

var _ gateway.KeyStore = (*Keys)(nil)

// Authenticate returns the active key whose secret is presented, from
// memory, without allocating.
func (k *Keys) Authenticate(secret []byte, now time.Time) (*identity.Key, bool) {
	return k.s.keys.Authenticate(secret, now)
}

// Lookup finds a key by key_id or secret in the node's copy.
func (k *Keys) Lookup(ref string) (*identity.Key, bool) { return k.s.keys.Lookup(ref) }

// List returns every key of the node's copy, oldest first.
func (k *Keys) List() []*identity.Key { return k.s.keys.List() }

// Create makes a key, shares it and copies it on this node. When Redis
// does not answer no key is made (the error wraps ErrUnavailable).
func (k *Keys) Create(name string, expiresAt, now time.Time) (string, *identity.Key, error) {
	secret, key := identity.NewKey(name, expiresAt, now)
	if err := k.s.pushKey(key); err != nil {
		return "", nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	stored, _, err := k.s.keys.Merge(key)
	if err != nil {
		return "", nil, err
	}
	return secret, stored, nil
}

// Revoke revokes the key on this node at once and in Redis. A
// revocation already set elsewhere wins (identity.ErrRevoked, with the
// key as revoked there). When Redis does not answer the key stays
// revoked on this node, the revocation is pushed at the next sync, and
// Revoke reports success: refusing it here cannot wait.
func (k *Keys) Revoke(id string, now time.Time) (*identity.Key, error) {
	old, ok := k.s.keys.Lookup(id)
	if !ok {
		return nil, identity.ErrNotFound
	}
	if !old.RevokedAt().IsZero() {
		return old, identity.ErrRevoked
	}
	rev, err := old.Record().Revoked(now).Key()
	if err != nil {
		return nil, err
	}
	stored, _, err := k.s.keys.Merge(rev)
	if err != nil {
		return nil, err
	}
	at, err := k.s.pushRevoke(id, now)
	if err != nil {
		k.s.markDirty(err)
		return stored, nil
	}
	if at.Unix() != now.Unix() { // revoked elsewhere first
		prev, err := old.Record().Revoked(at).Key()
		if err != nil {
			return nil, err
		}
		stored, _, _ = k.s.keys.Merge(prev)
		return stored, identity.ErrRevoked
	}
	return stored, nil
}

// Overrides is gateway.OverrideStore on the cluster's State: Load and
// Changes read the node's copy and its own change feed (every write this
// node applied, its own and other nodes', in the order it applied them);
// Put and Delete go to Redis first, then to the copy.
type Overrides struct{ s *State }

var _ gateway.OverrideStore = (*Overrides)(nil)

// Load returns every override of the node's copy and the version of the
// node's change feed it is current as of.
func (o *Overrides) Load() (map[string]*policy.Policy, uint64, error) {
	s := o.s
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]*policy.Policy, len(s.over))
	for p, e := range s.over {
		if e.pol != nil {
			out[p] = e.pol
		}
	}
	return out, s.localVer, nil
}

// Put shares p as principal's override; ErrUnavailable (nothing changed)
// when Redis does not answer.
func (o *Overrides) Put(principal string, p *policy.Policy) error {
	raw, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return o.write(principal, p, string(raw))
}

// Delete removes principal's override cluster-wide (a tombstone, so that
// no node's older copy brings it back).
func (o *Overrides) Delete(principal string) error { return o.write(principal, nil, "") }

func (o *Overrides) write(principal string, p *policy.Policy, raw string) error {
	ver, err := o.s.pushOverride(principal, 0, raw)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return o.s.storeOverride(principal, overrideEntry{ver: ver, pol: p, raw: raw})
}

// Changes returns the node's applied changes after since, as
// policy.Overrides.Changes does (policy.ErrChangesCompacted past the
// last 1024).
func (o *Overrides) Changes(since uint64) ([]policy.OverrideChange, uint64, error) {
	s := o.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if since >= s.localVer {
		return nil, s.localVer, nil
	}
	oldest := s.localVer - uint64(len(s.changes))
	if since < oldest {
		return nil, s.localVer, policy.ErrChangesCompacted
	}
	out := make([]policy.OverrideChange, s.localVer-since)
	copy(out, s.changes[since-oldest:])
	return out, s.localVer, nil
}
