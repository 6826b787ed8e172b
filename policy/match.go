package policy

import (
	"slices"
	"strings"
	"time"

	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/money"
)

// Reason says why a tool call was denied; ReasonNone for an allowed call.
// Its String is the reason the 403 body and the ledger carry.
type Reason uint8

// The reasons. They fit in bitsPerReason bits.
const (
	ReasonNone            Reason = iota // allowed
	ReasonDenyTools                     // matched deny_tools
	ReasonNotInAllowTools               // allow list present (or strict mode) and not matched
	ReasonEnforcedDeny                  // matched enforced.deny_tools
)

const (
	bitsPerReason = 2
	toolsPerWord  = 64 / bitsPerReason
)

var reasonNames = [...]string{"", "deny_tools", "not_in_allow_tools", "enforced_deny"}

// String returns "deny_tools", "not_in_allow_tools", "enforced_deny", or ""
// for ReasonNone.
func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "invalid"
}

// Effective is the compiled policy of one principal: defaults ← tier ←
// override plus the enforced deny list, with a decision precomputed for
// every tool of the catalog it was compiled against (two bits per tool).
// An Effective is immutable and safe for concurrent use; the zero value is
// not usable (get one from Set.Tier or Set.Effective).
type Effective struct {
	tier     Tier            // the tier layer
	tools    []*catalog.Tool // the compiled catalog's tools
	reasons  []uint64        // bitsPerReason bits per tool index
	policy   Policy          // merged layers; shares slices with its inputs
	enforced []string
	quotas   Quotas
	limit    money.Micros
	capped   bool
	tz       string
	loc      *time.Location
	mode     Mode
	failMode Mode

	// governance (governance.go)
	inFlight      int
	inFlightClass Quotas
	group         GroupBudget    // the group layered in (Name), and its shared cap (Key set)
	shadow        *Effective     // evaluated beside, never enforced (shadow.go)
	approval      bitset         // tools whose calls wait for approval (approval.go)
	windows       []WindowRule   // the quotas list, compiled
	toolWindows   [][]WindowRule // by tool index: the windows it counts in
	toolWindowIx  [][]int        // … and their indexes in the quotas list
}

// Decide says whether the policy lets the caller run tool, and if not, why:
// enforced deny first, then deny_tools (deny wins over allow), then
// allow_tools (strict mode without an allow list allows nothing). It does
// not allocate. For a tool of the catalog the Effective was compiled against
// it is one index lookup; a tool of another catalog (after a reload, before
// the Effective is recompiled) is matched against the patterns by ID and
// packs, with the same result a recompiled Effective would give. tool must
// not be nil.
func (e *Effective) Decide(tool *catalog.Tool) (allowed bool, reason Reason) {
	i := tool.Index
	if uint(i) < uint(len(e.tools)) && e.tools[i] == tool {
		r := Reason(e.reasons[uint(i)/toolsPerWord]>>(uint(i)%toolsPerWord*bitsPerReason)) & (1<<bitsPerReason - 1)
		return r == ReasonNone, r
	}
	r := e.decideSlow(tool)
	return r == ReasonNone, r
}

func (e *Effective) decideSlow(t *catalog.Tool) Reason {
	switch {
	case matchAny(e.enforced, t):
		return ReasonEnforcedDeny
	case matchAny(e.policy.DenyTools, t):
		return ReasonDenyTools
	case e.policy.AllowTools != nil:
		if !matchAny(e.policy.AllowTools, t) {
			return ReasonNotInAllowTools
		}
	case e.mode == ModeStrict:
		return ReasonNotInAllowTools
	}
	return ReasonNone
}

// matchAny reports whether any pattern matches t, without allocating.
func matchAny(patterns []string, t *catalog.Tool) bool {
	for _, p := range patterns {
		if matchOne(p, t) {
			return true
		}
	}
	return false
}

// matchOne reports whether pattern p matches t.
func matchOne(p string, t *catalog.Tool) bool {
	if name, ok := strings.CutPrefix(p, packPrefix); ok {
		return slices.Contains(t.Packs, name)
	}
	if prefix, ok := strings.CutSuffix(p, "*"); ok {
		return strings.HasPrefix(t.ID, prefix)
	}
	return p == t.ID
}

// Quota returns the calls per minute allowed for class: Unlimited (-1) if
// no layer limits it, 0 if the class is blocked. A class outside the
// declared constants gets 0.
func (e *Effective) Quota(class catalog.RateClass) int {
	if int(class) >= len(e.quotas) {
		return 0
	}
	return e.quotas[class]
}

// SpendCap returns the daily spend ceiling and true, or false when the
// effective policy has no cap.
func (e *Effective) SpendCap() (money.Micros, bool) { return e.limit, e.capped }

// Location returns the zone in which the spend day resets (UTC by default).
func (e *Effective) Location() *time.Location { return e.loc }

// Tier returns the tier whose layer the policy was compiled with: the tier
// identity assigned, or the one its override selected.
func (e *Effective) Tier() Tier { return e.tier }

// Mode returns the effective mode: ModeOpen (default) or ModeStrict.
func (e *Effective) Mode() Mode { return e.mode }

// FailMode returns the document's fail_mode: ModeOpen or ModeStrict.
func (e *Effective) FailMode() Mode { return e.failMode }

// FailClosed reports whether an error while deciding (e.g. a store error)
// must deny: the effective mode or the document's fail_mode is strict.
func (e *Effective) FailClosed() bool { return e.mode == ModeStrict || e.failMode == ModeStrict }

// View is the effective policy as the status endpoint shows it. Patterns
// are shown as configured, not expanded; AllowTools is nil (JSON null) when
// no layer has an allow list; unlimited classes are left out of
// RateClassQuota; DailySpendCapUSD is nil (null) when there is no cap.
type View struct {
	AllowTools        []string      `json:"allow_tools"`
	DenyTools         []string      `json:"deny_tools"`
	EnforcedDenyTools []string      `json:"enforced_deny_tools"`
	RateClassQuota    Quotas        `json:"rate_class_quota"`
	DailySpendCapUSD  *money.Micros `json:"daily_spend_cap_usd"`
	SpendResetTZ      string        `json:"spend_reset_tz"`
	Mode              string        `json:"mode"`
	FailMode          string        `json:"fail_mode"`
	GovernanceView
}

// View returns a fresh copy of the effective policy for display.
func (e *Effective) View() View {
	v := View{
		AllowTools:        cloneStrings(e.policy.AllowTools),
		DenyTools:         cloneStrings(e.policy.DenyTools),
		EnforcedDenyTools: cloneStrings(e.enforced),
		RateClassQuota:    e.quotas,
		DailySpendCapUSD:  e.effectiveCap(),
		SpendResetTZ:      e.tz,
		Mode:              e.mode.String(),
		FailMode:          e.failMode.String(),
		GovernanceView:    e.governanceView(),
	}
	if v.DenyTools == nil {
		v.DenyTools = []string{}
	}
	if v.EnforcedDenyTools == nil {
		v.EnforcedDenyTools = []string{}
	}
	return v
}
