package policy

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/money"
)

// Limits on a policy object. Request bodies are limited by the caller.
const (
	// MaxPatterns is the most patterns one allow or deny list may hold.
	MaxPatterns = 10_000
	// MaxPatternLen is the longest pattern, in bytes.
	MaxPatternLen = 256
	// MaxQuota is the largest calls-per-minute quota.
	MaxQuota = 1_000_000_000
	// MaxTiers is the most tiers one document may declare.
	MaxTiers = 1_000
	// MaxTierName is the longest tier name, in bytes.
	MaxTierName = 64
	// maxProblems bounds the problems reported for one document.
	maxProblems = 100
)

// packPrefix starts a pack pattern: "pack/comms".
const packPrefix = "pack/"

// checkPattern returns what is wrong with a pattern, or "".
// Valid: an exact tool id, a trailing wildcard ("email/*", "*"), or
// "pack/NAME" (no wildcard in NAME). Spaces and control characters are
// never part of a tool id.
func checkPattern(p string) string {
	if p == "" {
		return "empty pattern"
	}
	if len(p) > MaxPatternLen {
		return fmt.Sprintf("pattern longer than %d bytes", MaxPatternLen)
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c <= ' ' || c == 0x7f {
			return fmt.Sprintf("pattern %s must not contain spaces or control characters", quote(p))
		}
		if c == '*' && i != len(p)-1 {
			return fmt.Sprintf(`pattern %s: "*" is only allowed at the end`, quote(p))
		}
	}
	if name, ok := strings.CutPrefix(p, packPrefix); ok {
		if name == "" || name == "*" {
			return fmt.Sprintf("pattern %s must name one pack (pack/NAME)", quote(p))
		}
		if strings.HasSuffix(name, "*") {
			return fmt.Sprintf("pattern %s: a pack name takes no wildcard", quote(p))
		}
	}
	return ""
}

// checkTierName returns what is wrong with a tier name, or "". A name is 1
// to MaxTierName ASCII letters, digits, '_' or '-': it is shown in JSON
// paths, the status endpoint and the ledger as it is.
func checkTierName(name string) string {
	ok := name != "" && len(name) <= MaxTierName
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
	}
	if !ok {
		return fmt.Sprintf(`tier name %s must be 1 to %d letters, digits, "_" or "-"`, quote(name), MaxTierName)
	}
	return ""
}

// errTierOutsideOverride is the problem of a "tier" field in the defaults
// or a tier of a document.
const errTierOutsideOverride = "only an override selects a tier (not the defaults or a tier)"

// quote formats a configured value for a problem message, shortened.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		return strconv.Quote(s[:max]) + "…"
	}
	return strconv.Quote(s)
}

var locations sync.Map // zone name → *time.Location; only valid names

// loadLocation loads an IANA zone, caching it. It refuses "" and "Local"
// (the machine's zone is not a portable setting).
func loadLocation(name string) (*time.Location, error) {
	if v, ok := locations.Load(name); ok {
		return v.(*time.Location), nil
	}
	if !zoneName(name) {
		return nil, errBadZone
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, err
	}
	locations.Store(name, loc)
	return loc, nil
}

// zoneName reports whether name looks like an IANA zone: segments of
// letters, digits, '_', '+' and '-' separated by single slashes. It keeps
// "Local", paths and spelling variants of one zone out of the cache.
func zoneName(name string) bool {
	if name == "" || name == "Local" || len(name) > 64 {
		return false
	}
	prev := byte('/')
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '+', c == '-':
		case c == '/' && prev != '/':
		default:
			return false
		}
		prev = c
	}
	return prev != '/'
}

var errBadZone = errors.New("policy: not an IANA zone name")

func checkZone(name string) string {
	if _, err := loadLocation(name); err != nil {
		return fmt.Sprintf("unknown time zone %s (want an IANA name such as \"UTC\" or \"Europe/Berlin\")", quote(name))
	}
	return ""
}

// capMessage explains a money parse error for daily_spend_cap_usd.
func capMessage(text string, err error) string {
	switch {
	case errors.Is(err, money.ErrPrecision):
		return fmt.Sprintf("%s has more than 6 decimal places", quote(text))
	case errors.Is(err, money.ErrNegative):
		return fmt.Sprintf("%s must not be negative", quote(text))
	case errors.Is(err, money.ErrRange), errors.Is(err, money.ErrTooLarge):
		return fmt.Sprintf("%s is too large (at most 1000000)", quote(text))
	}
	return fmt.Sprintf("%s is not a plain decimal amount in USD (no exponent, sign or spaces)", quote(text))
}

// Validate reports every problem of a Policy built in code, with paths under
// "$" as DecodePolicy would; it returns nil or a *catalog.ValidationError.
// Policies returned by DecodePolicy are always valid.
func (p *Policy) Validate() error {
	var ps problems
	p.validate(&ps, "$")
	return ps.err()
}

func (p *Policy) validate(ps *problems, root string) {
	checkList := func(field string, list []string) {
		path := join(root, field)
		if len(list) > MaxPatterns {
			ps.add(path, fmt.Sprintf("more than %d patterns", MaxPatterns))
			return
		}
		for i, s := range list {
			if msg := checkPattern(s); msg != "" {
				ps.add(index(path, i), msg)
			}
		}
	}
	if p.Tier != "" {
		if msg := checkTierName(string(p.Tier)); msg != "" {
			ps.add(join(root, "tier"), msg)
		}
	}
	checkList("allow_tools", p.AllowTools)
	checkList("deny_tools", p.DenyTools)
	if p.RateClassQuota != nil {
		for c, n := range p.RateClassQuota {
			if n < Unlimited || n > MaxQuota {
				ps.add(join(join(root, "rate_class_quota"), catalog.RateClass(c).String()),
					fmt.Sprintf("must be an integer from 0 to %d", MaxQuota))
			}
		}
	}
	if p.DailySpendCap != nil && !p.DailySpendCap.NoCap && p.DailySpendCap.Limit < 0 {
		ps.add(join(root, "daily_spend_cap_usd"), "must not be negative")
	}
	if p.DailySpendCap != nil && !p.DailySpendCap.NoCap && p.DailySpendCap.Limit > money.MaxAmount {
		ps.add(join(root, "daily_spend_cap_usd"), "must be at most 1000000")
	}
	if p.SpendResetTZ != "" {
		if msg := checkZone(p.SpendResetTZ); msg != "" {
			ps.add(join(root, "spend_reset_tz"), msg)
		}
	}
	if p.Mode > ModeShadow {
		ps.add(join(root, "mode"), `must be "open", "strict" or "shadow"`)
	}
	p.validateGovernance(ps, root)
}

// Validate reports every problem of a Document built in code; it returns
// nil or a *catalog.ValidationError. Documents returned by DecodeDocument
// are always valid.
func (d *Document) Validate() error {
	var ps problems
	d.validate(&ps)
	return ps.err()
}

func (d *Document) validate(ps *problems) {
	if d.Version != 1 {
		ps.add("version", "must be 1")
	}
	if d.FailMode > ModeStrict {
		ps.add("fail_mode", `must be "open" or "strict"`)
	}
	d.Defaults.validate(ps, "defaults")
	d.Defaults.validateNotGroup(ps, "defaults")
	if d.Defaults.Tier != "" {
		ps.add("defaults.tier", errTierOutsideOverride)
	}
	if len(d.Tiers) > MaxTiers {
		ps.add("tiers", fmt.Sprintf("more than %d tiers", MaxTiers))
	}
	for _, t := range d.TierNames() {
		path := join("tiers", t.String())
		if msg := checkTierName(t.String()); msg != "" {
			ps.add(path, msg)
			continue
		}
		p := d.Tiers[t] // a copy
		if p.Tier != "" {
			ps.add(join(path, "tier"), errTierOutsideOverride)
			p.Tier = ""
		}
		p.validate(ps, path)
		p.validateNotGroup(ps, path)
	}
	if len(d.Groups) > MaxGroups {
		ps.add("groups", fmt.Sprintf("more than %d groups", MaxGroups))
	}
	for _, n := range sortedKeys(d.Groups) {
		path := join("groups", n)
		if msg := CheckGroupName(n); msg != "" {
			ps.add(path, msg)
			continue
		}
		p := d.Groups[n]
		p.validate(ps, path)
		p.validateGroupLayer(ps, path)
	}
	path := "enforced.deny_tools"
	if len(d.EnforcedDenyTools) > MaxPatterns {
		ps.add(path, fmt.Sprintf("more than %d patterns", MaxPatterns))
		return
	}
	for i, s := range d.EnforcedDenyTools {
		if msg := checkPattern(s); msg != "" {
			ps.add(index(path, i), msg)
		}
	}
}

// problems collects at most maxProblems problems, then counts the rest.
type problems struct {
	list    catalog.Problems
	dropped int
}

func (ps *problems) add(path, msg string) {
	if len(ps.list.List) >= maxProblems {
		ps.dropped++
		return
	}
	ps.list.Add(path, msg)
}

func (ps *problems) err() error {
	if ps.dropped > 0 {
		ps.list.Add("$", fmt.Sprintf("%d more problems not shown", ps.dropped))
		ps.dropped = 0
	}
	return ps.list.Err()
}

// join appends an object member to a JSON path. Root "" is the document
// itself ("version"); other roots get a dot ("$.mode", "tiers.wallet").
// Keys that are not plain identifiers are written as ["key"].
func join(root, key string) string {
	plain := key != ""
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			plain = false
			break
		}
	}
	switch {
	case !plain:
		return root + "[" + quote(key) + "]"
	case root == "":
		return key
	}
	return root + "." + key
}

// index appends an array element to a JSON path.
func index(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
