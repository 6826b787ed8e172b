package policy

// Shadow policies. A layer whose mode is "shadow" is left out of the
// enforced policy and layered, as if its mode were unset, into a shadow
// policy; a layer's "shadow" field is a candidate layered over everything
// else into that shadow policy (a later layer's shadow replaces an
// earlier one's). The gateway evaluates the shadow policy beside the
// enforced one and records what it would have decided, without enforcing
// it.

// compileLayers compiles the enforced policy of layers (defaults first)
// and, when a layer is in shadow mode or carries a shadow, its shadow.
func (s *Set) compileLayers(tier Tier, layers ...Policy) *Effective {
	var enf, sh Policy
	var candidate *Policy
	hasShadow := false
	for _, l := range layers {
		if l.Shadow != nil {
			candidate = l.Shadow
		}
		if l.Mode == ModeShadow {
			hasShadow = true
			l.Mode = ModeUnset
			sh = merge(sh, l)
			continue
		}
		enf, sh = merge(enf, l), merge(sh, l)
	}
	e := s.compile(tier, enf)
	if candidate != nil {
		hasShadow = true
		sh = merge(sh, *candidate)
	}
	if hasShadow {
		e.shadow = s.compile(tier, sh)
	}
	return e
}

// Shadow returns the shadow policy evaluated beside this one, or nil.
func (e *Effective) Shadow() *Effective { return e.shadow }
