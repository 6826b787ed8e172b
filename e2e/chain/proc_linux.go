package chain

import (
	"os/exec"
	"syscall"
)

// setProcAttr asks the kernel to kill the child if the test binary dies
// without running its cleanups (a panic in another goroutine, a timeout).
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
