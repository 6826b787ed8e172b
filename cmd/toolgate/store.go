package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

func storeOptions(dir string, readOnly bool) badger.Options {
	return badger.DefaultOptions(dir).
		WithLogger(nil).
		WithReadOnly(readOnly).
		WithNumVersionsToKeep(1).
		// The store holds keys, overrides and small ledger entries (the
		// records live in the ledger's segments): writes are rare and
		// small. Each memtable is an arena of this size on the heap (and
		// an mmapped write-ahead file of twice it); 8 MiB is the least
		// that still admits badger's 1 MiB inline values, and at most 3
		// exist at once.
		WithMemTableSize(8 << 20).
		WithNumMemtables(3).
		// Keys and policies are served from memory: the block cache only
		// helps ledger queries, and badger's 256 MiB default would hold a
		// copy of every key loaded at start (64 MiB still kept ~47 MiB of
		// key blocks after loading a million keys; bench/scale).
		WithBlockCacheSize(16 << 20).
		// Tables are read in place from their mapping, not decompressed
		// into the heap: at start every key block is read once, and
		// decompressing them cost ~0.6 s of CPU with a million keys
		// (bench/startup); key rows (hex digests, ids) compress poorly.
		WithCompression(options.None).
		// Damage must stop a read, never pass as data: every block's
		// checksums when it is read (the start reads every key block;
		// compactions read the blocks they rewrite) and every table's
		// index when it is opened, and every value read from the value
		// log. Reading every table whole at open as well (OnTableAndBlockRead)
		// cost ~0.8 s of CPU per start with a million keys and verified
		// the key blocks twice.
		WithChecksumVerificationMode(options.OnBlockRead).
		WithVerifyValueChecksum(true)
}

// openStore opens the data dir's store after checking badger's
// write-ahead logs (checkWAL); with acceptLogDamage a damaged log is let
// through and badger drops the writes after the damage.
func openStore(dataDir string, readOnly, acceptLogDamage bool) (*badger.DB, error) {
	dir := filepath.Join(dataDir, "store")
	if err := checkWAL(dir); err != nil && !acceptLogDamage {
		return nil, err
	}
	db, err := badger.Open(storeOptions(dir, readOnly))
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	return db, nil
}

// needsTruncate reports whether badger refused a read-only open because
// its write-ahead log was not closed cleanly (a crash). badger formats
// the cause with %+v, so only its text is left to compare.
func needsTruncate(err error) bool {
	return err != nil && strings.Contains(err.Error(), badger.ErrTruncateNeeded.Error())
}

// openStoreReadOnly opens the data dir's store without writing to it. A
// store left by a crash cannot be opened read-only by badger (its
// write-ahead log needs a truncation), so it is copied to a temporary
// directory, opened writable there, and the copy removed by the returned
// close. The data dir is held with a shared lock during the copy, so a
// gateway starting meanwhile fails instead of changing it under the copy.
func openStoreReadOnly(dataDir string) (db *badger.DB, closeFn func() error, err error) {
	dir := filepath.Join(dataDir, "store")
	if err := checkWAL(dir); err != nil {
		return nil, nil, err
	}
	db, err = badger.Open(storeOptions(dir, true))
	if err == nil {
		return db, db.Close, nil
	}
	if !needsTruncate(err) {
		return nil, nil, fmt.Errorf("open store: %w", err)
	}
	unlock, err := lockShared(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("open store: %w", err)
	}
	defer unlock()
	tmp, err := os.MkdirTemp("", "toolgate-store-copy-")
	if err != nil {
		return nil, nil, fmt.Errorf("copy store: %w", err)
	}
	cleanup := func() { os.RemoveAll(tmp) }
	if err := copyStore(dir, tmp); err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("copy store (it was not closed cleanly, so it is read from a copy): %w", err)
	}
	db, err = badger.Open(storeOptions(tmp, false))
	if err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("open store copy: %w", err)
	}
	return db, func() error {
		err := db.Close()
		cleanup()
		return err
	}, nil
}

// copyStore copies badger's files from src to dst (an empty directory),
// leaving out its lock file.
func copyStore(src, dst string) error {
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() || e.Name() == "LOCK" {
			continue
		}
		if err := copyFile(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

var errLocked = errors.New("the store is in use (is the gateway still running? stop it, or drop --offline)")
