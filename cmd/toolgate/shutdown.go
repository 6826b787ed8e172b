package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/toolgate/toolgate/ledger"
)

// shutdown closes what serve opened, last opened first. All its steps
// together are bounded by timeout (--shutdown-timeout), and a second
// terminating signal ends it at once: a step that hangs (badger retrying
// a memtable flush forever on a full disk) never keeps the process
// alive. What a cut-short step could not flush is named in the exit
// message; the ledger journal stays on disk for the next start.
type shutdown struct {
	timeout time.Duration
	sigs    chan os.Signal
	dataDir string
	log     *slog.Logger
	steps   []shutdownStep
	forcedS bool // a second signal already forced the exit

	led          *ledger.Ledger
	ledgerClosed atomic.Bool // the ledger step succeeded
}

type shutdownStep struct {
	what string // "closing the ledger": names the step in messages
	fn   func() error
}

func (sd *shutdown) add(what string, fn func() error) {
	sd.steps = append(sd.steps, shutdownStep{what, fn})
}

// forced is the exit after a second signal arrived while doing what.
func (sd *shutdown) forced(s os.Signal, what string) error {
	sd.forcedS = true
	return exitError{1, fmt.Sprintf("toolgate: forced exit (%s) while %s; %s", s, what, sd.notFlushed())}
}

// run runs the steps, last added first, and returns an exitError (code
// 1) naming the first step that failed or did not finish in time. After
// forced it runs nothing: the process exits at once.
func (sd *shutdown) run() error {
	if sd.forcedS {
		return nil
	}
	deadline := time.NewTimer(sd.timeout)
	defer deadline.Stop()
	var failed []string
	for i := len(sd.steps) - 1; i >= 0; i-- {
		st := sd.steps[i]
		sd.log.Info("shutdown", "step", st.what)
		done := make(chan error, 1)
		go func() { done <- st.fn() }()
	wait:
		for {
			select {
			case err := <-done:
				if err != nil {
					failed = append(failed, st.what+": "+err.Error())
				}
				break wait
			case <-deadline.C:
				return exitError{1, fmt.Sprintf("toolgate: shutdown: %s did not finish within --shutdown-timeout %s; %s",
					st.what, sd.timeout, sd.notFlushed())}
			case s := <-sd.sigs:
				if s == syscall.SIGHUP {
					continue
				}
				return exitError{1, fmt.Sprintf("toolgate: forced exit (%s) while %s; %s", s, st.what, sd.notFlushed())}
			}
		}
	}
	if len(failed) > 0 {
		return exitError{1, "toolgate: shutdown: " + strings.Join(failed, "; ") + "; " + sd.notFlushed()}
	}
	return nil
}

// notFlushed says what a cut-short shutdown leaves unflushed and how it
// is recovered, with the data dir's free space (a full disk is the usual
// cause).
func (sd *shutdown) notFlushed() string {
	var b strings.Builder
	switch {
	case sd.led == nil:
		b.WriteString("the ledger was not open")
	case !sd.ledgerClosed.Load():
		seq, _ := sd.led.Head()
		fmt.Fprintf(&b, "ledger records up to seq %d may not all be in the store: the journal in %s keeps them and the next start applies them", seq, sd.dataDir)
	default:
		b.WriteString("the store's in-memory table (latest keys, policies, nonces and ledger records) was not flushed to its table files: badger's write-ahead log and the ledger journal (kept) hold it, and the next start recovers it")
	}
	if free := freeSpace(sd.dataDir); free != "" {
		b.WriteString("; data dir: " + free)
	}
	return b.String()
}
