package catalog

import (
	"strings"
)

// Problem is one defect in a configuration document: the JSON path of the
// offending value (e.g. `tools[2].price_usd`) and what is wrong with it.
type Problem struct {
	Path    string `json:"path"`
	Message string `json:"message"`
}

func (p Problem) String() string {
	if p.Path == "" {
		return p.Message
	}
	return p.Path + ": " + p.Message
}

// ValidationError lists every problem found in a document, not only the
// first. It is returned by the decoders of tools.json (this package) and
// policies.json / policy objects (package policy).
type ValidationError struct {
	Problems []Problem
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString("invalid document: ")
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p.String())
	}
	return b.String()
}

// Problems accumulates Problems while a decoder walks a document.
// The zero value is ready to use.
type Problems struct {
	List []Problem
}

// Add records a problem at path.
func (ps *Problems) Add(path, msg string) {
	ps.List = append(ps.List, Problem{Path: path, Message: msg})
}

// Err returns a *ValidationError holding the problems, or nil if there are none.
func (ps *Problems) Err() error {
	if len(ps.List) == 0 {
		return nil
	}
	return &ValidationError{Problems: ps.List}
}
