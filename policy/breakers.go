package policy

import (
	"bytes"
	"fmt"
	"strconv"
	"time"

	"github.com/toolgate/toolgate/money"
)

// Defaults and bounds of the breakers.
const (
	DefaultLoopRepeats  = 20
	DefaultLoopWithin   = 60 * time.Second
	DefaultLoopCooldown = 300 * time.Second
	DefaultBurstWithin  = 60 * time.Second
	maxLoopRepeats      = 10_000
	maxBreakerSeconds   = 86_400
)

// LoopBreaker is a policy's loop_breaker: Repeats identical calls (same
// tool, same body) within Within trip it, and further identical calls are
// refused for Cooldown. Off (JSON null) lifts an earlier layer's.
type LoopBreaker struct {
	Repeats  int
	Within   time.Duration
	Cooldown time.Duration
	Off      bool
}

// SpendBurst is a policy's spend_burst: at most USD spent within Within.
// Off (JSON null) lifts an earlier layer's.
type SpendBurst struct {
	USD    money.Micros
	Within time.Duration
	Off    bool
}

func (d *decoder) seconds(val []byte, path string, min int) (time.Duration, bool) {
	n, ok := d.integer(val, path, maxBreakerSeconds)
	if ok && n < min {
		d.ps.add(path, fmt.Sprintf("must be an integer from %d to %d", min, maxBreakerSeconds))
		return 0, false
	}
	return time.Duration(n) * time.Second, ok
}

func (d *decoder) loopBreaker(val []byte, path string) *LoopBreaker {
	if kind(val) == 'n' {
		return &LoopBreaker{Off: true}
	}
	lb := &LoopBreaker{Repeats: DefaultLoopRepeats, Within: DefaultLoopWithin, Cooldown: DefaultLoopCooldown}
	d.object(val, path, func(key string, val []byte, path string) {
		switch key {
		case "repeats":
			if n, ok := d.integer(val, path, maxLoopRepeats); ok {
				if n < 1 {
					d.ps.add(path, fmt.Sprintf("must be an integer from 1 to %d", maxLoopRepeats))
				}
				lb.Repeats = n
			}
		case "within_s":
			lb.Within, _ = d.seconds(val, path, 1)
		case "cooldown_s":
			lb.Cooldown, _ = d.seconds(val, path, 0)
		default:
			d.ps.add(path, "unknown field")
		}
	})
	return lb
}

func (d *decoder) spendBurst(val []byte, path string) *SpendBurst {
	if kind(val) == 'n' {
		return &SpendBurst{Off: true}
	}
	sb := &SpendBurst{Within: DefaultBurstWithin}
	hasUSD := false
	d.object(val, path, func(key string, val []byte, path string) {
		switch key {
		case "usd":
			hasUSD = true
			if c := d.spendCap(val, path); c != nil {
				if c.NoCap {
					d.ps.add(path, "must be a decimal amount in USD, not null")
				} else if c.Limit == 0 {
					d.ps.add(path, "must be greater than zero")
				}
				sb.USD = c.Limit
			}
		case "within_s":
			sb.Within, _ = d.seconds(val, path, 1)
		default:
			d.ps.add(path, "unknown field")
		}
	})
	if !hasUSD && kind(val) == '{' {
		d.ps.add(join(path, "usd"), "missing")
	}
	return sb
}

func (lb *LoopBreaker) marshal(b *bytes.Buffer) {
	if lb.Off {
		b.WriteString("null")
		return
	}
	fmt.Fprintf(b, `{"repeats":%d,"within_s":%d,"cooldown_s":%d}`, lb.Repeats, int64(lb.Within/time.Second), int64(lb.Cooldown/time.Second))
}

func (sb *SpendBurst) marshal(b *bytes.Buffer) {
	if sb.Off {
		b.WriteString("null")
		return
	}
	b.WriteString(`{"usd":`)
	b.Write(sb.USD.AppendDecimal(nil, 2))
	b.WriteString(`,"within_s":`)
	b.WriteString(strconv.FormatInt(int64(sb.Within/time.Second), 10))
	b.WriteByte('}')
}

func validateBreakers(ps *problems, root string, p *Policy) {
	if lb := p.LoopBreaker; lb != nil && !lb.Off {
		path := join(root, "loop_breaker")
		if lb.Repeats < 1 || lb.Repeats > maxLoopRepeats {
			ps.add(join(path, "repeats"), fmt.Sprintf("must be an integer from 1 to %d", maxLoopRepeats))
		}
		if lb.Within < time.Second || lb.Within > maxBreakerSeconds*time.Second {
			ps.add(join(path, "within_s"), "must be from 1 to 86400 seconds")
		}
		if lb.Cooldown < 0 || lb.Cooldown > maxBreakerSeconds*time.Second {
			ps.add(join(path, "cooldown_s"), "must be from 0 to 86400 seconds")
		}
	}
	if sb := p.SpendBurst; sb != nil && !sb.Off {
		path := join(root, "spend_burst")
		if sb.USD <= 0 || sb.USD > money.MaxAmount {
			ps.add(join(path, "usd"), "must be greater than zero and at most 1000000")
		}
		if sb.Within < time.Second || sb.Within > maxBreakerSeconds*time.Second {
			ps.add(join(path, "within_s"), "must be from 1 to 86400 seconds")
		}
	}
}

// LoopBreaker returns the effective loop breaker: repeats 0 when off.
func (e *Effective) LoopBreaker() (repeats int, within, cooldown time.Duration) {
	if lb := e.policy.LoopBreaker; lb != nil && !lb.Off {
		return lb.Repeats, lb.Within, lb.Cooldown
	}
	return 0, 0, 0
}

// SpendBurst returns the effective spend burst limit and window, ok false
// when there is none.
func (e *Effective) SpendBurst() (usd money.Micros, within time.Duration, ok bool) {
	if sb := e.policy.SpendBurst; sb != nil && !sb.Off {
		return sb.USD, sb.Within, true
	}
	return 0, 0, false
}

// breakersView is the status endpoint's view of the breakers.
type loopView struct {
	Repeats   int   `json:"repeats"`
	WithinS   int64 `json:"within_s"`
	CooldownS int64 `json:"cooldown_s"`
}

type burstView struct {
	USD     money.Micros `json:"usd"`
	WithinS int64        `json:"within_s"`
}
