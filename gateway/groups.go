package gateway

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/toolgate/toolgate/ledger"
	"github.com/toolgate/toolgate/meter"
	"github.com/toolgate/toolgate/money"
	"github.com/toolgate/toolgate/policy"
)

// Groups and team budgets (docs/policies.md, "Groups"): group policies
// live in policies.json ("groups") and in the override store under
// policy.GroupKey(id), written by PUT /groups/{id}/policy; a stored group
// replaces the file's of the same name. Members name their group in their
// override; the group's shared daily cap is a reservation in the spend
// store under the group's key, beside the member's own.

// splitGroups separates the stored group policies from the principals'
// overrides (both come from the override store).
func splitGroups(raws map[string]*policy.Policy) (overrides, groups map[string]*policy.Policy) {
	overrides = make(map[string]*policy.Policy, len(raws))
	groups = map[string]*policy.Policy{}
	for k, v := range raws {
		if id, ok := strings.CutPrefix(k, policy.GroupPrefix); ok {
			groups[id] = v
			continue
		}
		overrides[k] = v
	}
	return overrides, groups
}

// withGroups returns doc with the stored groups layered over its own (a
// shallow copy; doc is not modified).
func withGroups(doc *policy.Document, groups map[string]*policy.Policy) *policy.Document {
	if len(groups) == 0 {
		return doc
	}
	d := *doc
	d.Groups = make(map[string]policy.Policy, len(doc.Groups)+len(groups))
	maps.Copy(d.Groups, doc.Groups)
	for id, p := range groups {
		d.Groups[id] = *p
	}
	return &d
}

// allRaws returns every stored policy of st: the overrides and the
// groups under their keys.
func (st *state) allRaws() map[string]*policy.Policy {
	raws := make(map[string]*policy.Policy, len(st.overrides)+len(st.groups))
	for k, v := range st.overrides {
		raws[k] = v.raw
	}
	for id, p := range st.groups {
		raws[policy.GroupKey(id)] = p
	}
	return raws
}

// rebuildWith compiles the current configuration with the stored policy
// of key (an override or a group's) replaced by raw, or removed for nil.
// The caller holds writeMu.
func (g *Gateway) rebuildWith(key string, raw *policy.Policy) (*state, error) {
	cur := g.state.Load()
	raws := cur.allRaws()
	if raw == nil {
		delete(raws, key)
	} else {
		raws[key] = raw
	}
	st, err := g.build(cur.cat, cur.doc, raws, cur.auth)
	if err != nil {
		return nil, err
	}
	st.reloads = cur.reloads
	return st, nil
}

// groupMembers returns the principals whose override names group id.
func (st *state) groupMembers(id string) []string {
	var out []string
	for p, o := range st.overrides {
		if o.raw.Group == id {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// groupReserver is a SpendStore that makes a group member's reservation
// and its group's in one call (meter.Spend: without looking the group's
// account up).
type groupReserver interface {
	ReserveWithGroup(principal string, day meter.Day, cost, limit money.Micros, hasLimit bool, group string, groupDay meter.Day, groupLimit money.Micros) (meter.Reservation, meter.SpendResult, meter.Reservation, meter.SpendResult)
}

// groupReservation is the group's part of a reservation made with the
// member's (groupReserver); nil when the member's was made alone.
type groupReservation struct {
	res meter.Reservation
	sr  meter.SpendResult
}

// groupDay is the day c's group cap is counted on: the member's when the
// group's day resets in the same zone.
func groupDay(c *call, b *policy.GroupBudget) meter.Day {
	if b.Loc == c.eff.Location() {
		return c.day
	}
	day, _ := meter.DayOf(c.start, b.Loc)
	return day
}

// reserveSpend reserves c's price for principal (day, cap) and, when the
// spend store makes both in one call and c's principal has a group cap,
// for its group (returned for admitGroup).
func (g *Gateway) reserveSpend(c *call, principal string, day meter.Day, capUSD money.Micros, hasCap bool) (meter.Reservation, meter.SpendResult, *groupReservation) {
	price := c.rt.tool.Price
	if g.gov.pair != nil {
		if b, ok := c.eff.GroupBudget(); ok {
			c.day = day
			gr := &c.groupPre
			var res meter.Reservation
			var sr meter.SpendResult
			res, sr, gr.res, gr.sr = g.gov.pair.ReserveWithGroup(principal, day, price, capUSD, hasCap, b.Key, groupDay(c, &b), b.Limit)
			return res, sr, gr
		}
	}
	res, sr := g.spend.Reserve(principal, day, price, capUSD, hasCap)
	return res, sr, nil
}

// admitGroup reserves the call's price against its group's shared daily
// cap (or takes the reservation pre made beside the member's), or refuses
// it with 429 naming the group. The member's own reservation is already
// held.
func (g *Gateway) admitGroup(c *call, pre *groupReservation) *Decision {
	b, ok := c.eff.GroupBudget()
	price := c.rt.tool.Price
	if !ok || price <= 0 {
		return nil
	}
	var res meter.Reservation
	var sr meter.SpendResult
	if pre != nil {
		res, sr = pre.res, pre.sr
	} else {
		res, sr = g.spend.Reserve(b.Key, groupDay(c, &b), price, b.Limit, true)
	}
	if sr.Err != nil {
		g.log.Error("shared spend store", "request_id", string(c.reqID), "err", sr.Err)
		g.metrics.sharedFailures.Inc()
		return sharedUnavailable
	}
	if !sr.OK {
		_, resetAt := meter.DayOf(c.start, b.Loc)
		reset := ceilSeconds(int64(resetAt.Sub(c.start)))
		d := c.decide(429, outSpendCapExceeded, "group_daily_spend_cap", "Group daily spend cap exceeded").
			str("group", b.Name).
			usd("spend_today_usd", sr.SpentToday-sr.Reserved).usd("reserved_usd", sr.Reserved).
			usd("spend_limit_usd", sr.Limit).usd("cost_usd", price).
			at("reset_at", resetAt).num("reset_in_seconds", int64(reset))
		d.RetryAfter = reset
		if sr.SpentToday-sr.Reserved <= sr.Limit-price {
			d.RetryAfter = 1 // only calls in flight hold the cap
		}
		return d
	}
	c.groupRes, c.groupHeld = res, true
	return nil
}

// commitGroup bills the group's reservation of a billed call.
func (g *Gateway) commitGroup(c *call) {
	if c.groupHeld {
		ok := false
		if cc, metered := g.spend.(costCommitter); metered && c.cost != c.rt.tool.Price {
			ok = cc.CommitCost(c.groupRes, c.cost, nil) // a metered call: the group is billed what the call cost
		} else {
			ok = g.spend.Commit(c.groupRes, nil)
		}
		if !ok {
			g.log.Error("group spend commit not confirmed by the shared store; billed in the ledger", "request_id", string(c.reqID))
			g.metrics.sharedFailures.Inc()
		}
		c.groupHeld = false
	}
}

// releaseGroup gives the group's reservation back.
func (g *Gateway) releaseGroup(c *call) {
	if c.groupHeld {
		g.spend.Release(c.groupRes)
		c.groupHeld = false
	}
}

// groupStatus serves GET /authorization/status?group=id (admin): the
// group's policy layer, members, and shared spend today.
func (g *Gateway) groupStatus(ctx *fasthttp.RequestCtx, st *state, id string) (any, *Decision) {
	if !g.canRead(ctx) {
		return nil, errAdminOnly
	}
	p, ok := st.set.Group(id)
	if !ok {
		return nil, apiErr(404, "Unknown group")
	}
	now := g.now()
	source := "policies.json"
	if _, stored := st.groups[id]; stored {
		source = "store"
	}
	members := st.groupMembers(id)
	if members == nil {
		members = []string{}
	}
	out := map[string]any{"group": id, "source": source, "policy": p, "members": members}
	if b, ok := st.set.GroupBudget(id); ok {
		day, resetAt := meter.DayOf(now, b.Loc)
		s := g.spend.Status(b.Key, day)
		out["spend_today_usd"], out["reserved_usd"] = s.Committed, s.Reserved
		out["spend_limit_usd"], out["spend_reset_tz"] = b.Limit, b.TZ
		out["spend_reset_at"] = resetAt.UTC().Format(time.RFC3339)
	} else {
		out["spend_limit_usd"] = nil
	}
	// The members' windows, as the group's policy sets them for each.
	windows := map[string]any{}
	for _, m := range members {
		eff := st.effective(st.tierOfName(m), m)
		windows[m] = map[string]any{"quota_windows": g.windowsStatus(m, eff, now)}
	}
	out["member_windows"] = windows
	return out, nil
}

// apiGroups serves /groups (list) and /groups/{id}/policy (PUT, GET,
// DELETE): stored group policies.
func (g *Gateway) apiGroups(ctx *fasthttp.RequestCtx, rest string) (any, *Decision) {
	st := g.state.Load()
	if rest == "" {
		if !ctx.IsGet() {
			return nil, errBadMethod
		}
		list := []map[string]any{}
		for _, id := range st.set.GroupNames() {
			source := "policies.json"
			if _, ok := st.groups[id]; ok {
				source = "store"
			}
			list = append(list, map[string]any{"group": id, "source": source, "members": len(st.groupMembers(id))})
		}
		return map[string]any{"groups": list}, nil
	}
	id, sub, _ := strings.Cut(rest, "/")
	if msg := policy.CheckGroupName(id); msg != "" {
		return nil, badRequest(msg)
	}
	if sub != "policy" {
		return nil, errNotFound
	}
	key := policy.GroupKey(id)
	switch string(ctx.Method()) {
	case "GET":
		p, ok := st.set.Group(id)
		if !ok {
			return nil, apiErr(404, "Unknown group")
		}
		return map[string]any{"group": id, "policy": p}, nil
	case "PUT":
		body := ctx.PostBody()
		if len(body) > maxAdminBody {
			return nil, errBodyTooBig
		}
		pol, err := policy.DecodePolicy(body)
		if err == nil {
			err = policy.ValidateGroup(pol)
		}
		if err != nil {
			return nil, invalidBody(err)
		}
		g.writeMu.Lock()
		defer g.writeMu.Unlock()
		next, err := g.rebuildWith(key, pol)
		if err != nil {
			return nil, invalidBody(err)
		}
		if err := g.overrides.Put(key, pol); err != nil {
			g.log.Error("save group policy", "group", id, "err", err)
			return nil, apiErr(503, "Store unavailable")
		}
		if err := g.recordPolicy(g.actorOf(ctx), key, pol); err != nil {
			if prev, ok := st.groups[id]; ok {
				g.overrides.Put(key, prev)
			} else {
				g.overrides.Delete(key)
			}
			return nil, apiErr(503, "Ledger unavailable; nothing was changed")
		}
		g.state.Store(next)
		return map[string]any{"group": id, "policy": pol}, nil
	case "DELETE":
		g.writeMu.Lock()
		defer g.writeMu.Unlock()
		st = g.state.Load()
		prev, stored := st.groups[id]
		if !stored {
			return nil, apiErr(404, "No stored policy for this group")
		}
		next, err := g.rebuildWith(key, nil)
		if err != nil {
			// Members still name it and policies.json does not declare it.
			return nil, apiErr(409, "Group still has members; move them out of the group first")
		}
		if err := g.overrides.Delete(key); err != nil {
			return nil, apiErr(503, "Store unavailable")
		}
		if err := g.recordPolicy(g.actorOf(ctx), key, nil); err != nil {
			g.overrides.Put(key, prev)
			return nil, apiErr(503, "Ledger unavailable; nothing was changed")
		}
		g.state.Store(next)
		return map[string]any{"group": id, "policy": nil}, nil
	}
	return nil, errBadMethod
}

// groupOfRecord returns the group a call record names in its state.
func groupOfRecord(r *ledger.Record) string {
	if len(r.State) == 0 {
		return ""
	}
	var s struct {
		Group string `json:"group"`
	}
	if json.Unmarshal(r.State, &s) != nil {
		return ""
	}
	return s.Group
}

// callState is the governance annotation of a call record (its "state"):
// the caller's group, what a shadow policy would have decided, the
// approval it ran under. nil when there is none.
func (g *Gateway) callState(c *call) json.RawMessage {
	if c.eff == nil {
		return nil
	}
	g.shadowRest(c)
	grp := c.eff.Group()
	if grp == "" && !c.shadowSet && c.approvalID == "" {
		return nil
	}
	b := []byte{'{'}
	if grp != "" {
		b = append(b, `"group":`...)
		b = appendJSONString(b, grp)
	}
	if c.shadowSet {
		if len(b) > 1 {
			b = append(b, ',')
		}
		b = append(b, `"shadow":{"outcome":`...)
		b = appendJSONString(b, c.shadowOutcome)
		if c.shadowReason != "" {
			b = append(b, `,"reason":`...)
			b = appendJSONString(b, c.shadowReason)
		}
		b = append(b, '}')
	}
	if c.approvalID != "" {
		if len(b) > 1 {
			b = append(b, ',')
		}
		b = append(b, `"approval_id":`...)
		b = appendJSONString(b, c.approvalID)
	}
	return append(b, '}')
}

// applyGroups restores today's group spend from the meters' book: the
// billed calls recorded with each group, by minute (meterssnap.go).
func (g *Gateway) applyGroups(b *meterBook, st *state, now time.Time) {
	budgets := map[string]policy.GroupBudget{}
	for _, id := range st.set.GroupNames() {
		if gb, ok := st.set.GroupBudget(id); ok {
			budgets[id] = gb
		}
	}
	if len(budgets) == 0 {
		return
	}
	spent := map[string]money.Micros{}
	for k, v := range b.groups {
		gb, ok := budgets[k.group]
		if !ok {
			continue
		}
		today, _ := meter.DayOf(now, gb.Loc)
		if d, _ := meter.DayOf(time.Unix(k.minute*60, 0), gb.Loc); d == today {
			spent[gb.Name] = spent[gb.Name].SatAdd(v)
		}
	}
	for id, v := range spent {
		gb := budgets[id]
		day, _ := meter.DayOf(now, gb.Loc)
		g.spend.Restore(gb.Key, day, v)
	}
}
