package main

import (
	"log/slog"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/identity"
)

// openKeys loads the store's keys. A single node uses the keys snapshot
// its state seal or mark names (identity.OpenSnapshot: only for the key
// rows it provably still matches), and logs which was used; cluster mode
// loads every row (its keys are the cluster's, and it has no mark).
func openKeys(f serveFlags, db *badger.DB, sealPath, markPath string, log *slog.Logger, took *startTimes) (*identity.Store, error) {
	defer releasingTables(filepath.Join(f.data, "store"))()
	if f.clusterRedis != "" || f.keysSnapshotEvery <= 0 {
		return identity.Open(db)
	}
	// The load allocates the keys' slabs (pointers to scan) and little
	// garbage: collecting while they grow re-marks them many times over.
	// A memory limit, if set, still bounds the heap.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	keys, l, err := identity.OpenSnapshot(db, f.data, gateway.RecordedKeysSnapshots(sealPath, markPath))
	if err != nil {
		return nil, err
	}
	took.note("keys_from", l.From)
	switch l.From {
	case "rows":
		log.Info("keys: every key row decoded", "keys", keys.Len(), "keys_snapshot", l.WhyNot)
	default:
		attrs := []any{"keys", keys.Len(), "snapshot", l.Snapshot[:16], "groups", l.Groups, "groups_changed", l.Stale, "rows_decoded", l.Decoded}
		if l.WhyNot != "" {
			attrs = append(attrs, "refused", l.WhyNot)
		}
		log.Info("keys: from the keys snapshot, for the rows it still matches", attrs...)
	}
	return keys, nil
}

// releasingTables drops the store's table pages from the process
// (releaseTablePages) every 100 ms until the returned func is called: the
// keys load reads every key table once, and would otherwise hold them
// all resident at its end (~280 MiB of RSS with 1M keys, on top of its
// heap). A page it still reads is mapped again from the page cache.
func releasingTables(storeDir string) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(300 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				releaseTablePages(storeDir)
			}
		}
	}()
	return func() { close(quit); <-done }
}

// writeKeysSnapshot writes the keys snapshot at a clean stop when the
// one the keys were loaded with or last written is not current.
func writeKeysSnapshot(f serveFlags, keys *identity.Store, log *slog.Logger) {
	if f.keysSnapshotEvery <= 0 {
		return
	}
	if _, current := keys.SnapshotState(); current {
		return
	}
	t0 := time.Now()
	hash, err := keys.WriteSnapshot(f.data)
	if err != nil {
		log.Warn("keys snapshot not written; the next start decodes every key row", "err", err)
		return
	}
	log.Info("keys snapshot written", "sha256", hash[:16], "ms", time.Since(t0).Milliseconds())
}
