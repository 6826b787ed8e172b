package gateway

import (
	"context"
	"log/slog"
	"sync/atomic"
	"syscall"

	"github.com/toolgate/toolgate/ledger"
)

// spaceGuard watches the free space of the data dir. Badger writes its
// write-ahead log through memory-mapped files: on a full filesystem a write
// faults (SIGBUS) instead of returning an error, so the gateway must stop
// writing before the disk is full, not after. Below the threshold the
// gateway refuses what it cannot record and recovers by itself when space
// returns.
type spaceGuard struct {
	low  atomic.Bool
	free atomic.Int64
}

// freeBytes returns the space available to unprivileged writers in dir.
func freeBytes(dir string) (int64, error) {
	var s syscall.Statfs_t
	if err := syscall.Statfs(dir, &s); err != nil {
		return 0, err
	}
	return int64(s.Bavail) * int64(s.Bsize), nil
}

// checkSpace refreshes the free-space reading of the data dir and the
// low-space state, logging each change of state once.
func (g *Gateway) checkSpace() {
	free, err := freeBytes(g.opts.DataDir)
	if err != nil {
		g.log.Error("statfs data dir", "dir", g.opts.DataDir, "err", err)
		return
	}
	g.space.free.Store(free)
	low := free < g.opts.MinFreeBytes
	if was := g.space.low.Swap(low); was != low {
		if low {
			g.log.Error("data dir low on space: refusing calls that must be recorded", "free_bytes", free, "min_free_bytes", g.opts.MinFreeBytes)
		} else {
			g.log.Info("data dir has space again: recording resumed", "free_bytes", free)
		}
	}
}

// spaceDenial is the answer to a call that cannot be recorded now.
var spaceDenial = func() *Decision {
	d := fixed(503, outStoreUnavailable, "store_low_on_space", "Gateway storage is full; the call was not run and nothing was charged").
		flag("retry", true)
	d.RetryAfter = 10
	return d
}()

// append queues c's records, or, for a call admitted unrecorded while
// the store is low on space (free tools under fail_mode open), logs them
// instead and returns a done Ticket.
func (g *Gateway) append(c *call, recs ...*ledger.Record) ledger.Ticket {
	if c.unrecorded {
		for _, r := range recs {
			g.log.LogAttrs(context.Background(), slog.LevelWarn, "unrecorded call (store low on space)",
				slog.String("request_id", r.RequestID), slog.String("principal", r.Principal),
				slog.String("tool", r.Tool), slog.String("outcome", r.Outcome), slog.Int("status", r.Status))
		}
		return ledger.Ticket{}
	}
	return g.led.Append(recs...)
}
