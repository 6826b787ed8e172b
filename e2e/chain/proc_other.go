//go:build !linux

package chain

import "os/exec"

// setProcAttr does nothing outside Linux; children are stopped at t.Cleanup.
func setProcAttr(cmd *exec.Cmd) {}
