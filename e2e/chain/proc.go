package chain

import (
	"bytes"
	"os/exec"
	"sync"
	"testing"
)

// tailBuffer keeps the last max bytes written to it; it collects a child
// process's stderr for failure messages. Safe for concurrent use.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(bytes.TrimSpace(b.buf))
}

// process is a child started by this package and stopped at cleanup.
type process struct {
	cmd    *exec.Cmd
	stderr *tailBuffer
	done   chan struct{} // closed when the process has exited
	err    error         // Wait's result, valid after done
}

// startProcess starts cmd with stderr captured, in its own process group
// setting from setProcAttr (the child dies with the test binary on Linux).
func startProcess(cmd *exec.Cmd) (*process, error) {
	p := &process{cmd: cmd, stderr: &tailBuffer{max: 16 << 10}, done: make(chan struct{})}
	if cmd.Stderr == nil {
		cmd.Stderr = p.stderr
	}
	setProcAttr(cmd)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop kills the process by its own PID and waits for it to exit.
func (p *process) stop() {
	if !p.exited() {
		_ = p.cmd.Process.Kill()
	}
	<-p.done
}

// logOnFailure registers a cleanup that prints the captured stderr of the
// process when the test failed.
func (p *process) logOnFailure(t testing.TB, name string) {
	t.Cleanup(func() {
		if t.Failed() {
			if s := p.stderr.String(); s != "" {
				t.Logf("%s stderr (tail):\n%s", name, s)
			}
		}
	})
}
