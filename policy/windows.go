package policy

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strconv"
	"time"

	"github.com/toolgate/toolgate/catalog"
)

// WindowRule is a compiled quota window: Key names it (a hash of its
// selector and length, stable across reloads), Per and Limit as
// configured. It is an alias of an unnamed struct type, identical to
// WindowRule, so that the gateway hands a policy's rules to the
// meter as they are.
type WindowRule = struct {
	Key   uint64
	Per   time.Duration
	Limit int
}

// Limits on the quotas field.
const (
	// MaxWindows is the most entries one quotas list may hold.
	MaxWindows = 16
	// MaxPer is the longest window.
	MaxPer = 31 * 24 * time.Hour
)

// Window is one entry of a policy's quotas list: at most Limit calls in
// any window of length Per, counted over the calls of one rate class
// (Tool "") or of the tools Tool matches (a pattern).
type Window struct {
	Class catalog.RateClass
	Tool  string
	Per   time.Duration
	Limit int
	// PerText is Per as written ("24h"); "" writes FormatPer(Per).
	PerText string
}

// PerLabel returns the window's length as configured ("24h", "1h").
func (w Window) PerLabel() string {
	if w.PerText != "" {
		return w.PerText
	}
	return FormatPer(w.Per)
}

// MarshalJSON writes {"class"|"tool": …, "per": "1h", "limit": N}.
func (w Window) MarshalJSON() ([]byte, error) {
	b := []byte{'{'}
	if w.Tool != "" {
		b = append(b, `"tool":`...)
		b = strconv.AppendQuote(b, w.Tool)
	} else {
		b = append(b, `"class":`...)
		b = strconv.AppendQuote(b, w.Class.String())
	}
	b = append(b, `,"per":`...)
	b = strconv.AppendQuote(b, w.PerLabel())
	b = append(b, `,"limit":`...)
	b = strconv.AppendInt(b, int64(w.Limit), 10)
	return append(b, '}'), nil
}

// Label names the window's selector: "class:heavy" or "tool:email/send".
func (w Window) Label() (key, value string) {
	if w.Tool != "" {
		return "tool", w.Tool
	}
	return "class", w.Class.String()
}

// FormatPer writes a window length as configured: "90s", "30m", "1h", "7d".
func FormatPer(d time.Duration) string {
	switch {
	case d%(24*time.Hour) == 0:
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	}
	return strconv.FormatInt(int64(d/time.Second), 10) + "s"
}

// parsePer reads "<n>s", "<n>m", "<n>h" or "<n>d".
func parsePer(s string) (time.Duration, string) {
	bad := fmt.Sprintf(`%s is not a window length (want a whole number and s, m, h or d: "90s", "1h", "24h", "7d")`, quote(s))
	if len(s) < 2 || len(s) > 12 {
		return 0, bad
	}
	n, err := strconv.ParseInt(s[:len(s)-1], 10, 64)
	if err != nil || n <= 0 || s[0] == '+' {
		return 0, bad
	}
	unit := map[byte]time.Duration{'s': time.Second, 'm': time.Minute, 'h': time.Hour, 'd': 24 * time.Hour}[s[len(s)-1]]
	if unit == 0 {
		return 0, bad
	}
	if n > int64(MaxPer/unit) {
		return 0, fmt.Sprintf("%s is longer than 31 days", quote(s))
	}
	return time.Duration(n) * unit, ""
}

// windows decodes a quotas list.
func (d *decoder) windows(val []byte, path string) []Window {
	out := []Window{}
	if kind(val) != '[' {
		d.wrongType(path, "an array of quota windows", val)
		return out
	}
	var elems []json.RawMessage
	if err := json.Unmarshal(val, &elems); err != nil {
		d.ps.add(path, "invalid JSON")
		return out
	}
	if len(elems) > MaxWindows {
		d.ps.add(path, fmt.Sprintf("more than %d quota windows", MaxWindows))
		return out
	}
	for i, e := range elems {
		p := index(path, i)
		var w Window
		var hasClass, hasTool, hasPer, hasLimit, ok = false, false, false, false, true
		d.object(e, p, func(key string, val []byte, path string) {
			switch key {
			case "class":
				hasClass = true
				if s, sok := d.str(val, path); sok {
					c, cok := catalog.ParseRateClass(s)
					if !cok {
						d.ps.add(path, fmt.Sprintf("unknown rate class %s (want light, medium or heavy)", quote(s)))
						ok = false
					}
					w.Class = c
				} else {
					ok = false
				}
			case "tool":
				hasTool = true
				if s, sok := d.str(val, path); sok {
					if msg := checkPattern(s); msg != "" {
						d.ps.add(path, msg)
						ok = false
					}
					w.Tool = s
				} else {
					ok = false
				}
			case "per":
				hasPer = true
				if s, sok := d.str(val, path); sok {
					per, msg := parsePer(s)
					if msg != "" {
						d.ps.add(path, msg)
						ok = false
					}
					w.Per, w.PerText = per, s
				} else {
					ok = false
				}
			case "limit":
				hasLimit = true
				if n, nok := d.integer(val, path, MaxQuota); nok {
					w.Limit = n
				} else {
					ok = false
				}
			default:
				d.ps.add(path, "unknown field")
				ok = false
			}
		})
		switch {
		case kind(e) != '{':
			continue
		case hasClass == hasTool:
			d.ps.add(p, `needs exactly one of "class" or "tool"`)
			continue
		case !hasPer:
			d.ps.add(join(p, "per"), "missing")
			continue
		case !hasLimit:
			d.ps.add(join(p, "limit"), "missing")
			continue
		}
		if ok {
			out = append(out, w)
		}
	}
	return out
}

// validateWindows checks a quotas list built in code.
func validateWindows(ps *problems, path string, ws []Window) {
	if len(ws) > MaxWindows {
		ps.add(path, fmt.Sprintf("more than %d quota windows", MaxWindows))
		return
	}
	for i, w := range ws {
		p := index(path, i)
		if w.Tool != "" {
			if msg := checkPattern(w.Tool); msg != "" {
				ps.add(join(p, "tool"), msg)
			}
		} else if int(w.Class) >= catalog.NumRateClasses {
			ps.add(join(p, "class"), "unknown rate class")
		}
		if w.Per < time.Second || w.Per > MaxPer || w.Per%time.Second != 0 {
			ps.add(join(p, "per"), "must be whole seconds from 1s to 31d")
		}
		if w.Limit < 0 || w.Limit > MaxQuota {
			ps.add(join(p, "limit"), fmt.Sprintf("must be an integer from 0 to %d", MaxQuota))
		}
	}
}

// compileWindows precomputes, per catalog tool, the windows it counts in.
func (e *Effective) compileWindows(ws []Window) {
	if len(ws) == 0 {
		return
	}
	e.windows = make([]WindowRule, len(ws))
	for i, w := range ws {
		h := fnv.New64a()
		k, v := w.Label()
		h.Write([]byte(k))
		h.Write([]byte{0})
		h.Write([]byte(v))
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(w.Per))
		h.Write(b[:])
		e.windows[i] = WindowRule{Key: h.Sum64(), Per: w.Per, Limit: w.Limit}
	}
	e.toolWindows = make([][]WindowRule, len(e.tools))
	e.toolWindowIx = make([][]int, len(e.tools))
	for ti, t := range e.tools {
		for i, w := range ws {
			if w.matches(t) {
				e.toolWindows[ti] = append(e.toolWindows[ti], e.windows[i])
				e.toolWindowIx[ti] = append(e.toolWindowIx[ti], i)
			}
		}
	}
}

func (w Window) matches(t *catalog.Tool) bool {
	if w.Tool != "" {
		return matchOne(w.Tool, t)
	}
	return t.RateClass == w.Class
}

// Windows returns the quota windows tool counts in and, for each, its
// index in the policy's quotas list (Window). It does not allocate for a
// tool of the compiled catalog; a tool of another catalog (after a
// reload) gets its windows computed. Both slices are shared: do not
// modify them.
func (e *Effective) Windows(tool *catalog.Tool) ([]WindowRule, []int) {
	if len(e.windows) == 0 {
		return nil, nil
	}
	i := tool.Index
	if uint(i) < uint(len(e.tools)) && e.tools[i] == tool {
		return e.toolWindows[i], e.toolWindowIx[i]
	}
	var rules []WindowRule
	var ix []int
	for k, w := range e.policy.Quotas {
		if w.matches(tool) {
			rules, ix = append(rules, e.windows[k]), append(ix, k)
		}
	}
	return rules, ix
}

// Window returns the policy's i-th quota window and its rule.
func (e *Effective) Window(i int) (Window, WindowRule) {
	return e.policy.Quotas[i], e.windows[i]
}

// NumWindows returns the length of the policy's quotas list.
func (e *Effective) NumWindows() int { return len(e.windows) }
