package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/toolgate/toolgate/catalog"
	"github.com/toolgate/toolgate/money"
)

// ErrNilPolicy is returned by Compile and Set.Effective for a missing
// document or catalog.
var ErrNilPolicy = errors.New("policy: nil document or catalog")

// Load reads and decodes the policies.json at path. A decoding error is a
// *catalog.ValidationError whose paths are relative to the document; an I/O
// error is wrapped with the path.
func Load(path string) (*Document, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load policies: %w", err)
	}
	doc, err := DecodeDocument(data)
	if err != nil {
		return nil, fmt.Errorf("load policies %s: %w", path, err)
	}
	return doc, nil
}

// DecodeDocument decodes policies.json strictly. On any problem it returns
// nil and a *catalog.ValidationError listing every problem (at most 100,
// then a count) with its JSON path: "version", "tiers.wallet.mode",
// "defaults.deny_tools[2]"; problems of the document as a whole are at "$".
// Unknown and duplicate fields, wrong JSON types, trailing data, invalid
// patterns, zones, quotas and amounts are all problems. It never panics.
func DecodeDocument(data []byte) (*Document, error) {
	d := decoder{}
	doc := d.document(data)
	if err := d.ps.err(); err != nil {
		return nil, err
	}
	return doc, nil
}

// DecodePolicy decodes one policy object (a PUT body or an override read
// back from storage) strictly, reporting problems under the path "$"
// ("$.deny_tools[2]"). See DecodeDocument for the error contract.
func DecodePolicy(data []byte) (*Policy, error) {
	return DecodePolicyAt(data, "$")
}

// DecodePolicyAt is DecodePolicy with problems reported under path, for a
// policy embedded in a larger body (e.g. "policy" in a key-creation body).
func DecodePolicyAt(data []byte, path string) (*Policy, error) {
	d := decoder{}
	var p Policy
	if d.valid(data, path) {
		d.policy(data, path, &p, true)
	}
	if err := d.ps.err(); err != nil {
		return nil, err
	}
	return &p, nil
}

type decoder struct {
	ps problems
}

// valid reports a syntax problem (with line and column) at root if data is
// not exactly one JSON value.
func (d *decoder) valid(data []byte, root string) bool {
	if json.Valid(data) {
		return true
	}
	if root == "" {
		root = "$"
	}
	var v any
	err := json.Unmarshal(data, &v)
	var se *json.SyntaxError
	if errors.As(err, &se) {
		line, col := 1, 1
		for _, c := range data[:min(max(int(se.Offset)-1, 0), len(data))] {
			if c == '\n' {
				line, col = line+1, 1
			} else {
				col++
			}
		}
		d.ps.add(root, fmt.Sprintf("invalid JSON at line %d, column %d: %s", line, col, se.Error()))
		return false
	}
	msg := "invalid JSON"
	if err != nil {
		msg += ": " + err.Error()
	}
	d.ps.add(root, msg)
	return false
}

func (d *decoder) document(data []byte) *Document {
	if !d.valid(data, "") {
		return nil
	}
	doc := &Document{FailMode: ModeOpen}
	seenVersion := false
	d.object(data, "", func(key string, val []byte, path string) {
		switch key {
		case "version":
			seenVersion = true
			if k := kind(val); k != '-' && (k < '0' || k > '9') {
				d.wrongType(path, "the number 1", val)
			} else if n, ok := d.integer(val, path, 1); ok && n == 1 {
				doc.Version = 1
			} else if ok {
				d.ps.add(path, "must be 1")
			}
		case "fail_mode":
			doc.FailMode = d.mode(val, path, false)
		case "defaults":
			d.policy(val, path, &doc.Defaults, false)
		case "tiers":
			n := 0
			d.object(val, path, func(key string, val []byte, path string) {
				if n++; n > MaxTiers {
					if n == MaxTiers+1 {
						d.ps.add(path, fmt.Sprintf("more than %d tiers", MaxTiers))
					}
					return
				}
				if msg := checkTierName(key); msg != "" {
					d.ps.add(path, msg)
					return
				}
				var p Policy
				d.policy(val, path, &p, false)
				if doc.Tiers == nil {
					doc.Tiers = make(map[Tier]Policy, len(defaultTiers))
				}
				doc.Tiers[Tier(key)] = p
			})
		case "groups":
			n := 0
			d.object(val, path, func(key string, val []byte, path string) {
				if n++; n > MaxGroups {
					if n == MaxGroups+1 {
						d.ps.add(path, fmt.Sprintf("more than %d groups", MaxGroups))
					}
					return
				}
				if msg := CheckGroupName(key); msg != "" {
					d.ps.add(path, msg)
					return
				}
				var p Policy
				d.policy(val, path, &p, false)
				if doc.Groups == nil {
					doc.Groups = map[string]Policy{}
				}
				doc.Groups[key] = p
			})
		case "enforced":
			d.object(val, path, func(key string, val []byte, path string) {
				if key != "deny_tools" {
					d.ps.add(path, "unknown field")
					return
				}
				doc.EnforcedDenyTools = d.patterns(val, path)
				if len(doc.EnforcedDenyTools) == 0 {
					doc.EnforcedDenyTools = nil
				}
			})
		default:
			d.ps.add(path, "unknown field")
		}
	})
	if doc.Tiers == nil {
		doc.Tiers = make(map[Tier]Policy, len(defaultTiers))
	}
	for _, t := range defaultTiers {
		if _, ok := doc.Tiers[t]; !ok {
			doc.Tiers[t] = Policy{}
		}
	}
	doc.Defaults.validateNotGroup(&d.ps, "defaults")
	for _, t := range doc.TierNames() {
		p := doc.Tiers[t]
		p.validateNotGroup(&d.ps, join("tiers", t.String()))
	}
	if !seenVersion && kind(data) == '{' {
		d.ps.add("version", "missing (must be 1)")
	}
	return doc
}

// policy decodes a policy object into p; override says whether it may
// select a tier (an override may, the defaults and tiers of a document may
// not).
func (d *decoder) policy(data []byte, root string, p *Policy, override bool) {
	d.object(data, root, func(key string, val []byte, path string) {
		switch key {
		case "tier":
			if s, ok := d.overrideName(val, path, override, errTierOutsideOverride, checkTierName); ok {
				p.Tier = Tier(s)
			}
		case "allow_tools":
			p.AllowTools = d.patterns(val, path)
		case "deny_tools":
			p.DenyTools = d.patterns(val, path)
		case "rate_class_quota":
			q := Quotas{Unlimited, Unlimited, Unlimited}
			d.object(val, path, func(key string, val []byte, path string) {
				c, ok := catalog.ParseRateClass(key)
				if !ok {
					d.ps.add(path, "unknown rate class (want light, medium or heavy)")
					return
				}
				if n, ok := d.integer(val, path, MaxQuota); ok {
					q[c] = n
				}
			})
			p.RateClassQuota = &q
		case "daily_spend_cap_usd":
			p.DailySpendCap = d.spendCap(val, path)
		case "spend_reset_tz":
			if s, ok := d.str(val, path); ok {
				if msg := checkZone(s); msg != "" {
					d.ps.add(path, msg)
				} else {
					p.SpendResetTZ = s
				}
			}
		case "mode":
			p.Mode = d.mode(val, path, true)
		default:
			if !d.governance(key, val, path, p, override) {
				d.ps.add(path, "unknown field")
			}
		}
	})
}

// kind returns the first byte of a JSON value: '{', '[', '"', 'n', 't',
// 'f', or a digit or '-' for numbers; 0 for nothing.
func kind(v []byte) byte {
	v = bytes.TrimLeft(v, " \t\r\n")
	if len(v) == 0 {
		return 0
	}
	return v[0]
}

// typeName names a JSON value's type for a problem message.
func typeName(v []byte) string {
	switch kind(v) {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 'n':
		return "null"
	case 't', 'f':
		return "a boolean"
	}
	return "a number"
}

func (d *decoder) wrongType(path, want string, v []byte) {
	d.ps.add(path, fmt.Sprintf("must be %s, not %s", want, typeName(v)))
}

// object calls fn for each member of a JSON object in document order,
// reporting duplicate keys instead of calling fn a second time. data must
// be valid JSON (checked once at the top).
func (d *decoder) object(data []byte, path string, fn func(key string, val []byte, path string)) {
	if kind(data) != '{' {
		if path == "" {
			path = "$"
		}
		d.wrongType(path, "an object", data)
		return
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil {
		d.ps.add(path, "invalid JSON")
		return
	}
	var seen map[string]struct{}
	for dec.More() {
		tok, err := dec.Token()
		key, ok := tok.(string)
		if err != nil || !ok {
			d.ps.add(path, "invalid JSON")
			return
		}
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			d.ps.add(path, "invalid JSON")
			return
		}
		p := join(path, key)
		if _, dup := seen[key]; dup {
			d.ps.add(p, "duplicate field")
			continue
		}
		if seen == nil {
			seen = make(map[string]struct{})
		}
		seen[key] = struct{}{}
		fn(key, val, p)
	}
}

// patterns decodes an array of patterns, deduplicated in first-seen order.
// It returns a non-nil slice, possibly empty, even after problems.
func (d *decoder) patterns(data []byte, path string) []string {
	out := []string{}
	if kind(data) != '[' {
		d.wrongType(path, "an array of patterns", data)
		return out
	}
	var elems []json.RawMessage
	if err := json.Unmarshal(data, &elems); err != nil {
		d.ps.add(path, "invalid JSON")
		return out
	}
	if len(elems) > MaxPatterns {
		d.ps.add(path, fmt.Sprintf("more than %d patterns", MaxPatterns))
		return out
	}
	seen := make(map[string]struct{}, len(elems))
	for i, e := range elems {
		p := index(path, i)
		s, ok := d.str(e, p)
		if !ok {
			continue
		}
		if msg := checkPattern(s); msg != "" {
			d.ps.add(p, msg)
			continue
		}
		if _, dup := seen[s]; dup {
			continue
		}
		seen[s] = struct{}{}
		out = append(out, s)
	}
	return out
}

func (d *decoder) str(data []byte, path string) (string, bool) {
	if kind(data) != '"' {
		d.wrongType(path, "a string", data)
		return "", false
	}
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		d.ps.add(path, "invalid JSON string")
		return "", false
	}
	return s, true
}

// integer decodes a JSON integer literal from 0 to max.
func (d *decoder) integer(data []byte, path string, max int) (int, bool) {
	k := kind(data)
	if k != '-' && (k < '0' || k > '9') {
		d.wrongType(path, "a non-negative integer", data)
		return 0, false
	}
	text := string(bytes.TrimSpace(data))
	n, err := strconv.ParseInt(text, 10, 64)
	if err != nil || n < 0 || n > int64(max) {
		if max == 1 {
			d.ps.add(path, fmt.Sprintf("must be 1, not %s", quote(text)))
		} else {
			d.ps.add(path, fmt.Sprintf("must be an integer from 0 to %d, not %s", max, quote(text)))
		}
		return 0, false
	}
	return int(n), true
}

func (d *decoder) mode(data []byte, path string, shadow bool) Mode {
	s, ok := d.str(data, path)
	if !ok {
		return ModeUnset
	}
	m, ok := ParseMode(s)
	switch {
	case !shadow && (!ok || m == ModeShadow):
		d.ps.add(path, fmt.Sprintf(`must be "open" or "strict", not %s`, quote(s)))
		return ModeUnset
	case !ok:
		d.ps.add(path, fmt.Sprintf(`must be "open", "strict" or "shadow", not %s`, quote(s)))
	}
	return m
}

func (d *decoder) spendCap(data []byte, path string) *SpendCap {
	switch k := kind(data); {
	case k == 'n':
		return &SpendCap{NoCap: true}
	case k == '"' || k == '-' || k >= '0' && k <= '9':
		m, err := money.ParseAmount(bytes.TrimSpace(data))
		if err != nil {
			text := string(bytes.TrimSpace(data))
			if k == '"' {
				_ = json.Unmarshal(data, &text)
			}
			d.ps.add(path, capMessage(text, err))
			return nil
		}
		return &SpendCap{Limit: m}
	}
	d.wrongType(path, "a decimal amount in USD or null", data)
	return nil
}

// overrideName decodes a name field only an override may carry ("tier",
// "group"): a string, in an override, that check accepts (check returns
// the problem, or ""). Problems are reported at path.
func (d *decoder) overrideName(val []byte, path string, override bool, outside string, check func(string) string) (string, bool) {
	s, ok := d.str(val, path)
	switch {
	case !ok:
		return "", false
	case !override:
		d.ps.add(path, outside)
		return "", false
	}
	if msg := check(s); msg != "" {
		d.ps.add(path, msg)
		return "", false
	}
	return s, true
}
