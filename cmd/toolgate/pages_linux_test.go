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

	"github.com/toolgate/toolgate/ledger"
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

	db, err = badger.Open(storeOptions(dir, false))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// Read every value, as the start reads every key.
	readAll := func() error {
		return db.View(func(txn *badger.Txn) error {
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
	}
	if err := readAll(); err != nil {
		t.Fatal(err)
	}
	tables := globSize(filepath.Join(dir, "*.sst"))
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
	if err := readAll(); err != nil {
		t.Fatal(err)
	}
}

// TestReleaseLedgerPages: after a query has read every record of the
// ledger's segments, the release drops their pages from the process (its
// file-backed RSS falls by most of their size), and the records still
// read back intact.
func TestReleaseLedgerPages(t *testing.T) {
	data := t.TempDir()
	db, err := badger.Open(storeOptions(filepath.Join(data, "store"), false))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	led, err := ledger.Open(db, data, ledger.Options{Sync: ledger.SyncInterval, SegmentBytes: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer led.Close()
	const n = 60000
	pad := strings.Repeat("x", 200)
	for i := 0; i < n; i += 1000 {
		recs := make([]*ledger.Record, 1000)
		for j := range recs {
			recs[j] = &ledger.Record{Type: ledger.TypeCall, Principal: fmt.Sprintf("key:k_%d", i+j), Tool: "t/" + pad, Outcome: ledger.OutcomeAllowed}
		}
		if err := led.Append(recs...).Wait(); err != nil {
			t.Fatal(err)
		}
	}
	count := func() int {
		got := 0
		if err := led.Query(ledger.Query{}, func(r *ledger.Record) error {
			if r.Tool != "t/"+pad {
				return fmt.Errorf("record %d: tool %q", r.Seq, r.Tool)
			}
			got++
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := count(); got != n {
		t.Fatalf("records: got %d, want %d", got, n)
	}
	segs := globSize(filepath.Join(data, "ledger", "*.seg"))
	if segs < 8<<20 {
		t.Fatalf("setup: %d bytes of segments, want at least 8 MiB", segs)
	}
	before := rssFile(t)
	released := releaseLedgerPages(filepath.Join(data, "ledger"))
	after := rssFile(t)
	if released < segs/2 {
		t.Fatalf("released %d bytes of %d bytes of segments", released, segs)
	}
	if before-after < segs/2 {
		t.Fatalf("RssFile %d → %d bytes: want a drop of at least half the %d bytes of segments", before, after, segs)
	}
	if got := count(); got != n {
		t.Fatalf("records after the release: got %d, want %d", got, n)
	}
}

// globSize is the total size of the files matching pattern.
func globSize(pattern string) int64 {
	var n int64
	files, _ := filepath.Glob(pattern)
	for _, f := range files {
		if st, err := os.Stat(f); err == nil {
			n += st.Size()
		}
	}
	return n
}
