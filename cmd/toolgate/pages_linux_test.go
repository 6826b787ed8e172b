//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

func rssFile(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "RssFile:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no RssFile")
	return 0
}

// TestReleaseTablePages: after a verified open has read every table, the
// release gives the tables' pages back (the process's file-backed RSS
// falls by most of their size), and every value still reads back intact.
func TestReleaseTablePages(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	val := func(i int) []byte { return bytes.Repeat([]byte(fmt.Sprintf("%08d", i)), 64) } // 512 B, scrambled below
	db, err := badger.Open(storeOptions(dir, false))
	if err != nil {
		t.Fatal(err)
	}
	wb := db.NewWriteBatch()
	const n = 40000
	for i := range n {
		v := val(i)
		for j := range v { // make it incompressible enough
			v[j] ^= byte(i*31 + j*7)
		}
		if err := wb.Set([]byte(fmt.Sprintf("k/%08d", i)), v); err != nil {
			t.Fatal(err)
		}
	}
	if err := wb.Flush(); err != nil {
		t.Fatal(err)
	}
	db.Close() // flushes into table files

	db, err = badger.Open(storeOptions(dir, false)) // verifies every table: reads them all
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var tables int64
	ssts, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	for _, f := range ssts {
		if st, err := os.Stat(f); err == nil {
			tables += st.Size()
		}
	}
	if tables < 8<<20 {
		t.Fatalf("setup: %d bytes of tables, want at least 8 MiB", tables)
	}
	before := rssFile(t)
	released := releaseTablePages(dir)
	after := rssFile(t)
	if released < tables/2 {
		t.Fatalf("released %d bytes of %d bytes of tables", released, tables)
	}
	if before-after < tables/2 {
		t.Fatalf("RssFile %d → %d bytes: want a drop of at least half the %d bytes of tables", before, after, tables)
	}
	err = db.View(func(txn *badger.Txn) error {
		for i := range n {
			item, err := txn.Get([]byte(fmt.Sprintf("k/%08d", i)))
			if err != nil {
				return err
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			want := val(i)
			for j := range want {
				want[j] ^= byte(i*31 + j*7)
			}
			if !bytes.Equal(v, want) {
				return fmt.Errorf("value %d changed", i)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
