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

// Groups (team budgets). A principal belongs to a group when its override
// names one ("group": "team-a"); the group's policy is then a layer
// between the tier and the override (defaults ← tier ← group ← override),
// and the group's group_daily_spend_cap_usd is one daily ceiling shared by
// all its members. Groups are declared in policies.json ("groups") or
// stored (PUT /groups/{id}/policy, kept in the override store under
// GroupKey(id)); a stored group replaces the file's of the same name.

// MaxGroups is the most groups a document (with the stored ones) holds.
const MaxGroups = 10_000

// GroupPrefix starts the key of a stored group policy in the override
// store and of a group's spend in the spend store: "group:team-a".
const GroupPrefix = "group:"

// GroupKey returns the store key of group id.
func GroupKey(id string) string { return GroupPrefix + id }

// ErrUnknownGroup: an override names a group that is not declared.
var ErrUnknownGroup = errors.New("policy: unknown group")

const errGroupOutsideOverride = "only an override selects a group (not the defaults, a tier or a group)"
const errGroupCapOutsideGroup = "only a group policy sets group_daily_spend_cap_usd"

// CheckGroupName returns what is wrong with a group name, or "": the
// same rule as tier names.
func CheckGroupName(name string) string {
	if msg := checkTierName(name); msg != "" {
		return strings.Replace(msg, "tier name", "group name", 1)
	}
	return ""
}

// ValidateGroup reports every problem of p as a group's policy, with paths
// under "$": it may not select a tier or a group.
func ValidateGroup(p *Policy) error {
	var ps problems
	p.validate(&ps, "$")
	p.validateGroupLayer(&ps, "$")
	return ps.err()
}

func (p *Policy) validateGroupLayer(ps *problems, root string) {
	if p.Tier != "" {
		ps.add(join(root, "tier"), errTierOutsideOverride)
	}
	if p.Group != "" {
		ps.add(join(root, "group"), errGroupOutsideOverride)
	}
}

// validateNotGroup reports the group-only fields of a layer that is not a
// group's.
func (p *Policy) validateNotGroup(ps *problems, root string) {
	if p.GroupDailySpendCap != nil {
		ps.add(join(root, "group_daily_spend_cap_usd"), errGroupCapOutsideGroup)
	}
}

// GroupNames returns the groups of the compiled Set, sorted.
func (s *Set) GroupNames() []string {
	names := make([]string, 0, len(s.doc.Groups))
	for n := range s.doc.Groups {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Group returns group id's policy layer as declared, and whether it exists.
func (s *Set) Group(id string) (Policy, bool) {
	p, ok := s.doc.Groups[id]
	return p, ok
}

// GroupBudget is a group's shared daily cap and the zone its day resets
// in (the group policy's own spend_reset_tz, else UTC).
type GroupBudget struct {
	Name  string
	Key   string // GroupKey(Name), for the spend store
	Limit money.Micros
	Loc   *time.Location
	TZ    string
}

// GroupBudget returns group id's shared cap, ok false when it has none.
func (s *Set) GroupBudget(id string) (GroupBudget, bool) {
	p, ok := s.doc.Groups[id]
	if !ok || p.GroupDailySpendCap == nil || p.GroupDailySpendCap.NoCap {
		return GroupBudget{}, false
	}
	b := GroupBudget{Name: id, Key: GroupKey(id), Limit: p.GroupDailySpendCap.Limit, Loc: time.UTC, TZ: "UTC"}
	if p.SpendResetTZ != "" {
		if loc, err := loadLocation(p.SpendResetTZ); err == nil {
			b.Loc, b.TZ = loc, p.SpendResetTZ
		}
	}
	return b, true
}

// Group returns the name of the group whose layer the policy includes, ""
// for none.
func (e *Effective) Group() string { return e.group.Name }

// GroupBudget returns the shared daily cap of the principal's group, ok
// false when there is none.
func (e *Effective) GroupBudget() (GroupBudget, bool) { return e.group, e.group.Key != "" }

func (s *Set) unknownGroup(g string) error {
	names := s.GroupNames()
	want := "none declared"
	if len(names) > 0 {
		want = strings.Join(names[:min(len(names), 8)], ", ")
		if len(names) > 8 {
			want += fmt.Sprintf(" or %d more", len(names)-8)
		}
	}
	var ps catalog.Problems
	ps.Add("$.group", fmt.Sprintf("unknown group %s (want one of: %s)", quote(g), want))
	var ve *catalog.ValidationError
	errors.As(ps.Err(), &ve)
	return unknownGroupError{ve}
}

type unknownGroupError struct{ *catalog.ValidationError }

func (e unknownGroupError) Unwrap() []error { return []error{e.ValidationError, ErrUnknownGroup} }
