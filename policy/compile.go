package policy

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/money"
)

// ErrUnknownTier is returned by Set.Effective for a tier that the document
// does not declare and that is not a default tier. An override selecting
// such a tier is a *catalog.ValidationError at "$.tier" that also matches
// ErrUnknownTier with errors.Is.
var ErrUnknownTier = errors.New("policy: unknown tier")

// Set is a policies.json compiled against one catalog: the enforced deny
// list and every tier's policy (the three default tiers always, as the
// defaults alone when the document leaves them out), each ready for Decide.
// A Set is immutable and safe for concurrent use; the gateway keeps it
// behind an atomic.Pointer and compiles a new one when policies.json or the
// catalog is reloaded (Effectives compiled from an older Set stay correct,
// see Decide).
type Set struct {
	doc      Document
	cat      *catalog.Catalog
	ix       toolIndex
	enforced bitset
	names    []Tier                        // TierNames order
	base     map[Tier]Policy               // defaults ← tier
	tiers    map[Tier]*Effective           // every tier, compiled
	builtin  [len(defaultTiers)]*Effective // the default tiers, for Tier's fast path
}

// Compile validates doc (a document built in code may be invalid; decoded
// ones never are) and compiles it against cat. It returns ErrNilPolicy for a
// nil argument, a *catalog.ValidationError for an invalid document, and an
// error if cat breaks its invariant Tools[i].Index == i. Patterns that match
// no catalog tool are kept and compile to nothing. Compile copies what it
// keeps of doc; cat must stay unmodified, as catalogs always do.
func Compile(doc *Document, cat *catalog.Catalog) (*Set, error) {
	if doc == nil || cat == nil {
		return nil, fmt.Errorf("compile policies: %w", ErrNilPolicy)
	}
	if err := doc.Validate(); err != nil {
		return nil, fmt.Errorf("compile policies: %w", err)
	}
	s := &Set{doc: doc.clone(), cat: cat}
	if s.doc.FailMode == ModeUnset {
		s.doc.FailMode = ModeOpen
	}
	if err := s.ix.build(cat.Tools); err != nil {
		return nil, fmt.Errorf("compile policies: %w", err)
	}
	s.enforced = s.ix.match(s.doc.EnforcedDenyTools)
	s.names = s.doc.TierNames()
	s.base = make(map[Tier]Policy, len(s.names))
	s.tiers = make(map[Tier]*Effective, len(s.names))
	for _, t := range s.names {
		s.base[t] = merge(s.doc.Defaults, s.doc.Tiers[t])
		s.tiers[t] = s.compile(t, s.base[t])
	}
	for i, t := range defaultTiers {
		s.builtin[i] = s.tiers[t]
	}
	return s, nil
}

// Tier returns the precompiled effective policy of tier for a principal
// without an override, or nil if the document declares no such tier (the
// default tiers always exist). It does not allocate.
func (s *Set) Tier(tier Tier) *Effective {
	switch tier {
	case TierAPIKey:
		return s.builtin[0]
	case TierWallet:
		return s.builtin[1]
	case TierUnknownWallet:
		return s.builtin[2]
	}
	return s.tiers[tier]
}

// Tiers returns the names of every tier of the Set: the three default tiers
// first, then the document's others sorted by name. The slice is fresh.
func (s *Set) Tiers() []Tier { return slices.Clone(s.names) }

// Effective compiles the policy of a principal whose identity assigns tier,
// with an override: defaults ← tier ← override, where an override that
// names a tier ("tier": "partner") replaces the assigned one. A nil override
// returns Tier(tier). It costs time proportional to the catalog and the
// patterns; call it when an override is stored or the Set is reloaded, not
// per request. Errors: ErrUnknownTier for an assigned tier the Set does not
// have; a *catalog.ValidationError (paths under "$") for an override built
// in code that is invalid, or one that selects a tier the Set does not have
// ("$.tier", which also matches ErrUnknownTier).
func (s *Set) Effective(tier Tier, override *Policy) (*Effective, error) {
	if override != nil {
		if err := override.Validate(); err != nil {
			return nil, fmt.Errorf("effective policy: %w", err)
		}
		if override.Tier != "" {
			if _, ok := s.base[override.Tier]; !ok {
				return nil, fmt.Errorf("effective policy: %w", s.unknownTier(override.Tier))
			}
			tier = override.Tier
		}
	}
	base, ok := s.base[tier]
	if !ok {
		return nil, fmt.Errorf("effective policy: %w %s", ErrUnknownTier, quote(tier.String()))
	}
	if override == nil {
		return s.tiers[tier], nil
	}
	return s.compile(tier, merge(base, *override)), nil
}

// unknownTierError is an override's reference to an undeclared tier: a
// validation problem at "$.tier" that is also ErrUnknownTier.
type unknownTierError struct{ *catalog.ValidationError }

func (e unknownTierError) Unwrap() []error { return []error{e.ValidationError, ErrUnknownTier} }

func (s *Set) unknownTier(t Tier) error {
	const show = 8
	names := make([]string, 0, show)
	for _, n := range s.names[:min(len(s.names), show)] {
		names = append(names, n.String())
	}
	want := strings.Join(names, ", ")
	if len(s.names) > show {
		want += fmt.Sprintf(" or %d more", len(s.names)-show)
	}
	var ps catalog.Problems
	ps.Add("$.tier", fmt.Sprintf("unknown tier %s (want one of the tiers of policies.json: %s)", quote(t.String()), want))
	var ve *catalog.ValidationError
	errors.As(ps.Err(), &ve)
	return unknownTierError{ve}
}

// Document returns the compiled document. It is shared: do not modify it.
func (s *Set) Document() *Document { return &s.doc }

// Catalog returns the catalog the Set was compiled against.
func (s *Set) Catalog() *catalog.Catalog { return s.cat }

// FailMode returns the document's fail_mode (ModeOpen or ModeStrict).
func (s *Set) FailMode() Mode { return s.doc.FailMode }

// merge layers over onto base: every field present in over replaces base's.
// Merge layers over on base as the layers of an effective policy are: a
// field present in over replaces base's (Tier is kept from base). Callers
// that build a layer of their own (OAuth claim mappings) use it so that
// every policy field layers alike.
func Merge(base, over Policy) Policy { return merge(base, over) }

func merge(base, over Policy) Policy {
	if over.AllowTools != nil {
		base.AllowTools = over.AllowTools
	}
	if over.DenyTools != nil {
		base.DenyTools = over.DenyTools
	}
	if over.RateClassQuota != nil {
		base.RateClassQuota = over.RateClassQuota
	}
	if over.DailySpendCap != nil {
		base.DailySpendCap = over.DailySpendCap
	}
	if over.SpendResetTZ != "" {
		base.SpendResetTZ = over.SpendResetTZ
	}
	if over.Mode != ModeUnset {
		base.Mode = over.Mode
	}
	return base
}

// compile turns a merged, valid policy of tier into decisions for every
// tool.
func (s *Set) compile(tier Tier, p Policy) *Effective {
	tools := s.cat.Tools
	e := &Effective{
		tier:     tier,
		tools:    tools,
		reasons:  make([]uint64, (len(tools)+toolsPerWord-1)/toolsPerWord),
		policy:   p,
		enforced: s.doc.EnforcedDenyTools,
		quotas:   Quotas{Unlimited, Unlimited, Unlimited},
		mode:     p.Mode,
		failMode: s.doc.FailMode,
		tz:       "UTC",
		loc:      time.UTC,
	}
	if e.mode == ModeUnset {
		e.mode = ModeOpen
	}
	if p.RateClassQuota != nil {
		e.quotas = *p.RateClassQuota
	}
	if c := p.DailySpendCap; c != nil && !c.NoCap {
		e.limit, e.capped = c.Limit, true
	}
	if p.SpendResetTZ != "" {
		if loc, err := loadLocation(p.SpendResetTZ); err == nil { // validated
			e.tz, e.loc = p.SpendResetTZ, loc
		}
	}
	deny := s.ix.match(p.DenyTools)
	var allow bitset
	if p.AllowTools != nil {
		allow = s.ix.match(p.AllowTools)
	}
	for i := range tools {
		var r Reason
		switch {
		case s.enforced.has(i):
			r = ReasonEnforcedDeny
		case deny.has(i):
			r = ReasonDenyTools
		case allow != nil && !allow.has(i):
			r = ReasonNotInAllowTools
		case allow == nil && e.mode == ModeStrict:
			r = ReasonNotInAllowTools
		}
		e.reasons[i/toolsPerWord] |= uint64(r) << (uint(i%toolsPerWord) * bitsPerReason)
	}
	return e
}

// clone copies the document's slices and pointers so that Compile's copy
// cannot change under it.
func (d *Document) clone() Document {
	c := *d
	c.Defaults = d.Defaults.clone()
	if d.Tiers != nil {
		c.Tiers = make(map[Tier]Policy, len(d.Tiers))
		for t, p := range d.Tiers {
			c.Tiers[t] = p.clone()
		}
	}
	c.EnforcedDenyTools = cloneStrings(d.EnforcedDenyTools)
	return c
}

func (p Policy) clone() Policy {
	p.AllowTools = cloneStrings(p.AllowTools)
	p.DenyTools = cloneStrings(p.DenyTools)
	if p.RateClassQuota != nil {
		q := *p.RateClassQuota
		p.RateClassQuota = &q
	}
	if p.DailySpendCap != nil {
		c := *p.DailySpendCap
		p.DailySpendCap = &c
	}
	return p
}

// cloneStrings copies list, keeping nil nil and empty non-nil.
func cloneStrings(list []string) []string {
	if list == nil {
		return nil
	}
	return append(make([]string, 0, len(list)), list...)
}

// bitset has one bit per catalog tool index.
type bitset []uint64

func newBitset(n int) bitset { return make(bitset, (n+63)/64) }

func (b bitset) set(i int)      { b[i/64] |= 1 << (uint(i) % 64) }
func (b bitset) has(i int) bool { return b[i/64]&(1<<(uint(i)%64)) != 0 }

// toolIndex finds the tools a pattern matches without scanning the catalog.
type toolIndex struct {
	n      int
	sorted []toolEntry      // every tool, ordered by ID, for prefix ranges
	first  map[string]int   // ID → its first position in sorted
	byPack map[string][]int // pack → tool indexes
}

type toolEntry struct {
	id    string
	index int
}

func (ix *toolIndex) build(tools []*catalog.Tool) error {
	ix.n = len(tools)
	ix.sorted = make([]toolEntry, len(tools))
	ix.byPack = make(map[string][]int)
	for i, t := range tools {
		if t == nil || t.Index != i {
			return fmt.Errorf("catalog tool %d: index does not match its position", i)
		}
		ix.sorted[i] = toolEntry{t.ID, i}
		for _, p := range t.Packs {
			ix.byPack[p] = append(ix.byPack[p], i)
		}
	}
	slices.SortFunc(ix.sorted, func(a, b toolEntry) int { return strings.Compare(a.id, b.id) })
	ix.first = make(map[string]int, len(tools))
	for k := len(ix.sorted) - 1; k >= 0; k-- {
		ix.first[ix.sorted[k].id] = k
	}
	return nil
}

// match returns the set of tools matching any of the patterns.
func (ix *toolIndex) match(patterns []string) bitset {
	b := newBitset(ix.n)
	for _, p := range patterns {
		if name, ok := strings.CutPrefix(p, packPrefix); ok {
			for _, i := range ix.byPack[name] {
				b.set(i)
			}
			continue
		}
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			k, _ := slices.BinarySearchFunc(ix.sorted, prefix, func(e toolEntry, t string) int { return strings.Compare(e.id, t) })
			for ; k < len(ix.sorted) && strings.HasPrefix(ix.sorted[k].id, prefix); k++ {
				b.set(ix.sorted[k].index)
			}
			continue
		}
		if k, ok := ix.first[p]; ok {
			for ; k < len(ix.sorted) && ix.sorted[k].id == p; k++ {
				b.set(ix.sorted[k].index)
			}
		}
	}
	return b
}

// effectiveCap reports a cap for View: nil when there is none.
func (e *Effective) effectiveCap() *money.Micros {
	if !e.capped {
		return nil
	}
	m := e.limit
	return &m
}
