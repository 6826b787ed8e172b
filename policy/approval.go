package policy

import (
	"fmt"
	"time"

	"github.com/toolgate/toolgate/catalog"
)

// Human approval: calls of the tools approval_tools matches are held
// until an operator approves or denies them, or approval_timeout_s
// (default DefaultApprovalTimeout) passes (denied).

// DefaultApprovalTimeout is how long a held call waits for a decision.
const DefaultApprovalTimeout = time.Hour

const maxApprovalTimeout = 7 * 24 * 3600

// NeedsApproval reports whether a call of tool is held for approval. It
// does not allocate for a tool of the compiled catalog.
func (e *Effective) NeedsApproval(tool *catalog.Tool) bool {
	if len(e.policy.ApprovalTools) == 0 {
		return false
	}
	i := tool.Index
	if uint(i) < uint(len(e.tools)) && e.tools[i] == tool {
		return e.approval.has(i)
	}
	return matchAny(e.policy.ApprovalTools, tool)
}

// ApprovalTimeout returns how long a held call waits for a decision.
func (e *Effective) ApprovalTimeout() time.Duration {
	if e.policy.ApprovalTimeout != nil {
		return time.Duration(*e.policy.ApprovalTimeout) * time.Second
	}
	return DefaultApprovalTimeout
}

func validateApproval(ps *problems, root string, p *Policy) {
	if p.ApprovalTools != nil {
		path := join(root, "approval_tools")
		if len(p.ApprovalTools) > MaxPatterns {
			ps.add(path, fmt.Sprintf("more than %d patterns", MaxPatterns))
		}
		for i, s := range p.ApprovalTools {
			if msg := checkPattern(s); msg != "" {
				ps.add(index(path, i), msg)
			}
		}
	}
	if t := p.ApprovalTimeout; t != nil && (*t < 1 || *t > maxApprovalTimeout) {
		ps.add(join(root, "approval_timeout_s"), fmt.Sprintf("must be an integer from 1 to %d", maxApprovalTimeout))
	}
}
