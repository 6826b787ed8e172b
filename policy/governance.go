package policy

import (
	"bytes"
	"fmt"
	"time"

	"github.com/toolgate/toolgate/catalog"
)

// The governance fields of a policy object (docs/policies.md, "Agent
// governance"): concurrency caps, more quota windows, the loop and spend
// breakers, groups, shadow policies and human approval. They decode,
// validate, layer and compile like the seed's fields; this file keeps
// them together so that policy.go, decode.go and compile.go each call one
// hook.

// governance decodes a governance field of a policy object into p. It
// reports whether key is one.
func (d *decoder) governance(key string, val []byte, path string, p *Policy, override bool) bool {
	switch key {
	case "group":
		if s, ok := d.overrideName(val, path, override, errGroupOutsideOverride, CheckGroupName); ok {
			p.Group = s
		}
	case "approval_tools":
		p.ApprovalTools = d.patterns(val, path)
	case "approval_timeout_s":
		if n, ok := d.integer(val, path, maxApprovalTimeout); ok {
			if n < 1 {
				d.ps.add(path, fmt.Sprintf("must be an integer from 1 to %d", maxApprovalTimeout))
			}
			p.ApprovalTimeout = &n
		}
	case "shadow":
		if kind(val) != '{' {
			d.wrongType(path, "a policy object", val)
			break
		}
		var sp Policy
		d.policy(val, path, &sp, false)
		if sp.Shadow != nil {
			d.ps.add(join(path, "shadow"), "a shadow policy has no shadow of its own")
		}
		if sp.Mode == ModeShadow {
			d.ps.add(join(path, "mode"), `a shadow policy's mode is "open" or "strict"`)
		}
		sp.GroupDailySpendCap = nil
		p.Shadow = &sp
	case "group_daily_spend_cap_usd":
		p.GroupDailySpendCap = d.spendCap(val, path)
	case "max_in_flight":
		if n, ok := d.integer(val, path, MaxQuota); ok {
			p.MaxInFlight = &n
		}
	case "max_in_flight_class":
		q := d.classTable(val, path)
		p.MaxInFlightClass = &q
	case "quotas":
		p.Quotas = d.windows(val, path)
	case "loop_breaker":
		p.LoopBreaker = d.loopBreaker(val, path)
	case "spend_burst":
		p.SpendBurst = d.spendBurst(val, path)
	default:
		return false
	}
	return true
}

// classTable decodes {class: integer} with absent classes Unlimited.
func (d *decoder) classTable(val []byte, path string) Quotas {
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
	return q
}

// marshalGovernance writes p's present governance fields.
func (p Policy) marshalGovernance(b *bytes.Buffer, sep func(string)) {
	if p.Group != "" {
		sep("group")
		writeString(b, p.Group)
	}
	if p.ApprovalTools != nil {
		sep("approval_tools")
		writeStrings(b, p.ApprovalTools)
	}
	if p.ApprovalTimeout != nil {
		sep("approval_timeout_s")
		fmt.Fprintf(b, "%d", *p.ApprovalTimeout)
	}
	if p.Shadow != nil {
		sep("shadow")
		j, _ := p.Shadow.MarshalJSON()
		b.Write(j)
	}
	if c := p.GroupDailySpendCap; c != nil {
		sep("group_daily_spend_cap_usd")
		if c.NoCap {
			b.WriteString("null")
		} else {
			b.Write(c.Limit.AppendDecimal(nil, 1))
		}
	}
	if p.MaxInFlight != nil {
		sep("max_in_flight")
		fmt.Fprintf(b, "%d", *p.MaxInFlight)
	}
	if p.MaxInFlightClass != nil {
		sep("max_in_flight_class")
		q, _ := p.MaxInFlightClass.MarshalJSON()
		b.Write(q)
	}
	if p.Quotas != nil {
		sep("quotas")
		b.WriteByte('[')
		for i, w := range p.Quotas {
			if i > 0 {
				b.WriteByte(',')
			}
			j, _ := w.MarshalJSON()
			b.Write(j)
		}
		b.WriteByte(']')
	}
	if p.LoopBreaker != nil {
		sep("loop_breaker")
		p.LoopBreaker.marshal(b)
	}
	if p.SpendBurst != nil {
		sep("spend_burst")
		p.SpendBurst.marshal(b)
	}
}

// mergeGovernance layers over's present governance fields onto base.
func mergeGovernance(base, over Policy) Policy {
	if over.MaxInFlight != nil {
		base.MaxInFlight = over.MaxInFlight
	}
	if over.MaxInFlightClass != nil {
		base.MaxInFlightClass = over.MaxInFlightClass
	}
	if over.Quotas != nil {
		base.Quotas = over.Quotas
	}
	if over.LoopBreaker != nil {
		base.LoopBreaker = over.LoopBreaker
	}
	if over.ApprovalTools != nil {
		base.ApprovalTools = over.ApprovalTools
	}
	if over.ApprovalTimeout != nil {
		base.ApprovalTimeout = over.ApprovalTimeout
	}
	if over.SpendBurst != nil {
		base.SpendBurst = over.SpendBurst
	}
	return base
}

// validateGovernance reports the problems of p's governance fields built
// in code.
func (p *Policy) validateGovernance(ps *problems, root string) {
	if sp := p.Shadow; sp != nil {
		path := join(root, "shadow")
		sp.validate(ps, path)
		if sp.Shadow != nil {
			ps.add(join(path, "shadow"), "a shadow policy has no shadow of its own")
		}
		if sp.Mode == ModeShadow {
			ps.add(join(path, "mode"), `a shadow policy's mode is "open" or "strict"`)
		}
		if sp.Tier != "" || sp.Group != "" {
			ps.add(path, "a shadow policy selects no tier or group")
		}
	}
	if p.Group != "" {
		if msg := CheckGroupName(p.Group); msg != "" {
			ps.add(join(root, "group"), msg)
		}
	}
	if c := p.GroupDailySpendCap; c != nil && !c.NoCap && (c.Limit < 0 || c.Limit > 1_000_000_000_000) {
		ps.add(join(root, "group_daily_spend_cap_usd"), "must be from 0 to 1000000")
	}
	if p.Quotas != nil {
		validateWindows(ps, join(root, "quotas"), p.Quotas)
	}
	validateBreakers(ps, root, p)
	validateApproval(ps, root, p)
	if p.MaxInFlight != nil && (*p.MaxInFlight < 0 || *p.MaxInFlight > MaxQuota) {
		ps.add(join(root, "max_in_flight"), fmt.Sprintf("must be an integer from 0 to %d", MaxQuota))
	}
	if p.MaxInFlightClass != nil {
		for c, n := range p.MaxInFlightClass {
			if n < Unlimited || n > MaxQuota {
				ps.add(join(join(root, "max_in_flight_class"), catalog.RateClass(c).String()),
					fmt.Sprintf("must be an integer from 0 to %d", MaxQuota))
			}
		}
	}
}

// cloneGovernance deep-copies p's governance fields.
func (p Policy) cloneGovernance() Policy {
	if p.Quotas != nil {
		p.Quotas = append(make([]Window, 0, len(p.Quotas)), p.Quotas...)
	}
	if p.GroupDailySpendCap != nil {
		c := *p.GroupDailySpendCap
		p.GroupDailySpendCap = &c
	}
	if p.Shadow != nil {
		sp := p.Shadow.clone()
		p.Shadow = &sp
	}
	p.ApprovalTools = cloneStrings(p.ApprovalTools)
	if p.ApprovalTimeout != nil {
		n := *p.ApprovalTimeout
		p.ApprovalTimeout = &n
	}
	if p.LoopBreaker != nil {
		lb := *p.LoopBreaker
		p.LoopBreaker = &lb
	}
	if p.SpendBurst != nil {
		sb := *p.SpendBurst
		p.SpendBurst = &sb
	}
	if p.MaxInFlight != nil {
		n := *p.MaxInFlight
		p.MaxInFlight = &n
	}
	if p.MaxInFlightClass != nil {
		q := *p.MaxInFlightClass
		p.MaxInFlightClass = &q
	}
	return p
}

// compileGovernance fills e's governance decisions from the merged p.
func (e *Effective) compileGovernance(p Policy) {
	e.inFlight = Unlimited
	e.inFlightClass = Quotas{Unlimited, Unlimited, Unlimited}
	if p.MaxInFlight != nil {
		e.inFlight = *p.MaxInFlight
	}
	if p.MaxInFlightClass != nil {
		e.inFlightClass = *p.MaxInFlightClass
	}
	e.compileWindows(p.Quotas)
}

// MaxInFlight returns the calls a principal may have in flight at once, in
// total and in class: Unlimited (-1) when no layer limits them.
func (e *Effective) MaxInFlight(class catalog.RateClass) (all, inClass int) {
	inClass = 0
	if int(class) < len(e.inFlightClass) {
		inClass = e.inFlightClass[class]
	}
	return e.inFlight, inClass
}

// GovernanceView is the governance part of View.
type GovernanceView struct {
	Quotas           []Window   `json:"quotas,omitempty"`
	LoopBreaker      *loopView  `json:"loop_breaker,omitempty"`
	ApprovalTools    []string   `json:"approval_tools,omitempty"`
	SpendBurst       *burstView `json:"spend_burst,omitempty"`
	MaxInFlight      *int       `json:"max_in_flight,omitempty"`
	MaxInFlightClass *Quotas    `json:"max_in_flight_class,omitempty"`
}

func (e *Effective) governanceView() GovernanceView {
	v := GovernanceView{Quotas: e.policy.Quotas, ApprovalTools: cloneStrings(e.policy.ApprovalTools)}
	if n, w, c := e.LoopBreaker(); n > 0 {
		v.LoopBreaker = &loopView{Repeats: n, WithinS: int64(w / time.Second), CooldownS: int64(c / time.Second)}
	}
	if usd, w, ok := e.SpendBurst(); ok {
		v.SpendBurst = &burstView{USD: usd, WithinS: int64(w / time.Second)}
	}
	if e.inFlight >= 0 {
		n := e.inFlight
		v.MaxInFlight = &n
	}
	if e.inFlightClass != (Quotas{Unlimited, Unlimited, Unlimited}) {
		q := e.inFlightClass
		v.MaxInFlightClass = &q
	}
	return v
}
