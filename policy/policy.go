// Package policy owns policies.json and per-principal policy overrides:
// strict decoding with every problem reported at its JSON path, layering
// (defaults ← tier ← override, plus the enforced deny list) and compilation
// into immutable decisions that the gateway consults on every tool call.
//
// Decisions are precomputed per catalog tool at compile time, so that
// Effective.Decide is an index lookup without allocation. The package reads
// package catalog and nothing above it; it does not store overrides, count
// calls or spend (package meter), identify callers or speak HTTP.
package policy

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"

	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/money"
)

// Mode is a policy's posture: open (the default; no allow list means every
// tool is allowed, store errors fail open) or strict (only explicitly allowed
// tools pass; any error denies). It also types the document's fail_mode.
// The zero value, ModeUnset, means "not given" and behaves as ModeOpen.
type Mode uint8

// The modes.
const (
	ModeUnset Mode = iota
	ModeOpen
	ModeStrict
	// ModeShadow marks a policy layer that is evaluated and recorded but
	// not enforced (shadow.go). Not a fail_mode, never an effective mode.
	ModeShadow
)

// String returns the mode as written in configuration ("open", "strict"),
// or "" for ModeUnset.
func (m Mode) String() string {
	switch m {
	case ModeOpen:
		return "open"
	case ModeStrict:
		return "strict"
	case ModeShadow:
		return "shadow"
	case ModeUnset:
		return ""
	}
	return "invalid"
}

// ParseMode maps "open" or "strict" to its Mode.
func ParseMode(s string) (Mode, bool) {
	switch s {
	case "open":
		return ModeOpen, true
	case "strict":
		return ModeStrict, true
	case "shadow":
		return ModeShadow, true
	}
	return ModeUnset, false
}

// Tier names a policy layer between the defaults and a per-principal
// override: a key of the "tiers" object of policies.json. Identity assigns
// one of the three default tiers (TierAPIKey to every API key, TierWallet to
// an x402 payer with a stored override, TierUnknownWallet to any other
// payer); an override's "tier" field, or in future a principal's
// authenticator, may select any tier the document declares. The zero value
// "" means "not given". Tier names are 1 to MaxTierName letters, digits, "_"
// or "-".
type Tier string

// The default tiers, present in every compiled Set (as empty policies when
// policies.json leaves them out).
const (
	TierAPIKey        Tier = "api_key"
	TierWallet        Tier = "wallet"
	TierUnknownWallet Tier = "unknown_wallet"
)

// defaultTiers lists the default tiers in the order documents print them.
var defaultTiers = [...]Tier{TierAPIKey, TierWallet, TierUnknownWallet}

// String returns the tier's name as written in policies.json.
func (t Tier) String() string { return string(t) }

// IsDefault reports whether t is one of the three tiers identity assigns.
func (t Tier) IsDefault() bool {
	return t == TierAPIKey || t == TierWallet || t == TierUnknownWallet
}

// Unlimited is the quota of a rate class that no layer limits.
const Unlimited = -1

// Quotas holds calls per minute for each rate class, indexed by
// catalog.RateClass. A class set to Unlimited (-1) is absent from the
// configuration and not limited; 0 blocks the class.
type Quotas [catalog.NumRateClasses]int

// MarshalJSON writes the limited classes as an object in class order
// ({"light":120,"heavy":5}); unlimited classes are left out.
func (q Quotas) MarshalJSON() ([]byte, error) {
	b := []byte{'{'}
	first := true
	for c, n := range q {
		if n < 0 {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, '"')
		b = append(b, catalog.RateClass(c).String()...)
		b = append(b, '"', ':')
		b = strconv.AppendInt(b, int64(n), 10)
	}
	return append(b, '}'), nil
}

// SpendCap is a policy's daily_spend_cap_usd when the field is present:
// either a ceiling in micro-USD or, for JSON null, no cap at all.
type SpendCap struct {
	// Limit is the daily ceiling; ignored when NoCap is set.
	Limit money.Micros
	// NoCap records an explicit null: the layer lifts any earlier cap.
	NoCap bool
}

// Policy is one policy object: the defaults, a tier, or a per-key /
// per-wallet override. Every field is optional; a field that is absent
// (nil, "" or ModeUnset) leaves the earlier layer's value in place, a
// present field replaces it wholesale (a present rate_class_quota replaces
// the whole table, so classes it leaves out become unlimited).
//
// Tier is not a layered field: it chooses the tier layer of an override
// (defaults ← that tier ← the override) and is never merged.
//
// A Policy is a plain value: the decoder returns it normalized (patterns
// deduplicated in their first-seen order, present lists non-nil), and it
// marshals back to the JSON it was decoded from, normalized. Treat decoded
// Policies as read-only once compiled; compiled values share their slices.
type Policy struct {
	// Tier selects the tier layered under this policy instead of the one
	// identity assigns ("" = absent). Only an override may set it; the
	// defaults and tiers of a document may not. The decoder checks the
	// name's syntax; Set.Effective reports a tier the document does not
	// declare.
	Tier Tier
	// AllowTools lists patterns; nil means absent, a non-nil empty slice
	// means present and empty (nothing is allowed).
	AllowTools []string
	// DenyTools lists patterns; nil means absent.
	DenyTools []string
	// RateClassQuota is nil when absent.
	RateClassQuota *Quotas
	// DailySpendCap is nil when absent, {NoCap: true} for JSON null.
	DailySpendCap *SpendCap
	// SpendResetTZ is an IANA zone name; "" means absent (effective
	// default UTC).
	SpendResetTZ string
	// Mode is ModeUnset when absent (effective default open).
	Mode Mode

	// Governance fields (governance.go): nil when absent.

	// ApprovalTools lists patterns of tools whose calls wait for a human
	// decision (approval.go); nil when absent. ApprovalTimeout is how long,
	// in seconds (nil: DefaultApprovalTimeout).
	ApprovalTools   []string
	ApprovalTimeout *int

	// Shadow is a candidate policy evaluated beside the enforced one: it
	// is layered over this layer's result and recorded, never enforced
	// (shadow.go). nil when absent.
	Shadow *Policy

	// Group selects the group layered between the tier and this policy
	// ("" = none). Only an override may set it (groups.go).
	Group string
	// GroupDailySpendCap is, in a group's policy only, the daily ceiling
	// shared by all the group's members.
	GroupDailySpendCap *SpendCap

	// MaxInFlight caps the calls in flight at once, all classes together.
	MaxInFlight *int
	// MaxInFlightClass caps them per rate class (Unlimited: no cap).
	MaxInFlightClass *Quotas
	// Quotas are sliding windows beyond the per-minute rate-class quota;
	// nil when absent, non-nil empty for [] (no windows).
	Quotas []Window
	// LoopBreaker and SpendBurst are the breakers (breakers.go).
	LoopBreaker *LoopBreaker
	SpendBurst  *SpendBurst
}

// MarshalJSON writes the policy object with its present fields only, in a
// fixed order; daily_spend_cap_usd is a JSON number (5.0) or null.
func (p Policy) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	sep := func(name string) {
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		b.WriteString(name)
		b.WriteString(`":`)
	}
	if p.Tier != "" {
		sep("tier")
		writeString(&b, p.Tier.String())
	}
	if p.AllowTools != nil {
		sep("allow_tools")
		writeStrings(&b, p.AllowTools)
	}
	if p.DenyTools != nil {
		sep("deny_tools")
		writeStrings(&b, p.DenyTools)
	}
	if p.RateClassQuota != nil {
		sep("rate_class_quota")
		q, _ := p.RateClassQuota.MarshalJSON()
		b.Write(q)
	}
	if p.DailySpendCap != nil {
		sep("daily_spend_cap_usd")
		if p.DailySpendCap.NoCap {
			b.WriteString("null")
		} else {
			b.Write(p.DailySpendCap.Limit.AppendDecimal(nil, 1))
		}
	}
	if p.SpendResetTZ != "" {
		sep("spend_reset_tz")
		writeString(&b, p.SpendResetTZ)
	}
	if p.Mode != ModeUnset {
		sep("mode")
		writeString(&b, p.Mode.String())
	}
	p.marshalGovernance(&b, sep)
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON decodes a policy object strictly (see DecodePolicy); JSON
// null leaves p unchanged. Problems are reported under the path "$".
func (p *Policy) UnmarshalJSON(data []byte) error {
	if string(bytes.TrimSpace(data)) == "null" {
		return nil
	}
	q, err := DecodePolicy(data)
	if err != nil {
		return err
	}
	*p = *q
	return nil
}

// Document is a decoded policies.json. Treat it as read-only once passed to
// Compile (Compile keeps its own copy).
type Document struct {
	// Version is always 1.
	Version int
	// FailMode is the gateway-wide posture when a decision cannot be made
	// (store errors); the decoder sets ModeOpen when absent.
	FailMode Mode
	// Defaults is the first layer of every effective policy.
	Defaults Policy
	// Tiers holds the second layer by name. The decoder always fills in
	// the three default tiers (as the empty policy when the file leaves
	// them out); in a Document built in code a missing one is the empty
	// policy too (the zero Policy), so Tiers[TierWallet] always reads the
	// right layer.
	Tiers map[Tier]Policy
	// Groups holds the group layers by name (groups.go); nil or empty
	// when the document declares none.
	Groups map[string]Policy
	// EnforcedDenyTools applies to every principal; no layer lifts it.
	// The decoder leaves it nil when empty.
	EnforcedDenyTools []string
}

// TierNames returns the document's tiers in a fixed order: the three
// default tiers first (present or not), then the others sorted by name.
// The slice is fresh.
func (d *Document) TierNames() []Tier {
	names := make([]Tier, 0, len(defaultTiers)+len(d.Tiers))
	names = append(names, defaultTiers[:]...)
	start := len(names)
	for t := range d.Tiers {
		if !t.IsDefault() {
			names = append(names, t)
		}
	}
	slices.Sort(names[start:])
	return names
}

// MarshalJSON writes the document in the shape of policies.json, with every
// section present (normalized): the tiers in TierNames order, the default
// tiers always.
func (d Document) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(`{"version":`)
	b.WriteString(strconv.Itoa(d.Version))
	fm := d.FailMode
	if fm == ModeUnset {
		fm = ModeOpen
	}
	b.WriteString(`,"fail_mode":`)
	writeString(&b, fm.String())
	b.WriteString(`,"defaults":`)
	pj, _ := d.Defaults.MarshalJSON()
	b.Write(pj)
	b.WriteString(`,"tiers":{`)
	for i, t := range d.TierNames() {
		if i > 0 {
			b.WriteByte(',')
		}
		writeString(&b, t.String())
		b.WriteByte(':')
		pj, _ := d.Tiers[t].MarshalJSON()
		b.Write(pj)
	}
	b.WriteString(`}`)
	if len(d.Groups) > 0 {
		b.WriteString(`,"groups":{`)
		names := make([]string, 0, len(d.Groups))
		for n := range d.Groups {
			names = append(names, n)
		}
		slices.Sort(names)
		for i, n := range names {
			if i > 0 {
				b.WriteByte(',')
			}
			writeString(&b, n)
			b.WriteByte(':')
			pj, _ := d.Groups[n].MarshalJSON()
			b.Write(pj)
		}
		b.WriteByte('}')
	}
	b.WriteString(`,"enforced":{"deny_tools":`)
	writeStrings(&b, d.EnforcedDenyTools)
	b.WriteString(`}}`)
	return b.Bytes(), nil
}

// UnmarshalJSON decodes policies.json strictly (see DecodeDocument).
func (d *Document) UnmarshalJSON(data []byte) error {
	doc, err := DecodeDocument(data)
	if err != nil {
		return err
	}
	*d = *doc
	return nil
}

func writeString(b *bytes.Buffer, s string) {
	j, _ := json.Marshal(s) // a string never fails to marshal
	b.Write(j)
}

func writeStrings(b *bytes.Buffer, list []string) {
	b.WriteByte('[')
	for i, s := range list {
		if i > 0 {
			b.WriteByte(',')
		}
		writeString(b, s)
	}
	b.WriteByte(']')
}
