package ledger

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// crash stops l, opened with hooks, as a kill -9 would leave it: the
// applier applies nothing more, the journal is neither applied nor
// deleted.
func crash(t *testing.T, l *Ledger) {
	t.Helper()
	l.opts.hooks.halted.Store(true)
	if err := l.Close(); err != nil {
		t.Fatalf("Close after halt: %v", err)
	}
}

// journalFiles returns the segment files of the data dir dir.
func journalFiles(t *testing.T, dir string) []segment {
	t.Helper()
	segs, err := listFiles(filepath.Join(dir, segDir), "", segSuffix)
	if err != nil {
		t.Fatal(err)
	}
	return segs
}

// appendConcurrently appends workers*each records (every third Append
// holds two records) and returns the acknowledged ones by seq, with their
// hashes.
func appendConcurrently(t *testing.T, l *Ledger, workers, each int) map[uint64]string {
	t.Helper()
	var mu sync.Mutex
	acked := map[uint64]string{}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				recs := []*Record{callRec(fmt.Sprintf("key:%d", w), "t", OutcomeAllowed)}
				if i%3 == 0 {
					recs = append(recs, callRec(fmt.Sprintf("key:%d", w), "u", OutcomeDenied))
				}
				if err := l.Append(recs...).Wait(); err != nil {
					t.Errorf("Wait: %v", err)
					return
				}
				mu.Lock()
				for _, r := range recs {
					acked[r.Seq] = r.Hash
				}
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	return acked
}

// checkStored asserts that the store holds exactly seqs 1..n, gap-free,
// with the acknowledged hashes, and that the chain verifies.
func checkStored(t *testing.T, l *Ledger, acked map[uint64]string, n uint64) {
	t.Helper()
	err := l.Query(Query{}, func(r *Record) error {
		if h, ok := acked[r.Seq]; ok && h != r.Hash {
			return fmt.Errorf("seq %d: got hash %s, want %s", r.Seq, r.Hash, h)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := storedSeqs(t, l); got != n {
		t.Fatalf("stored records: got %d, want %d", got, n)
	}
	for seq := range acked {
		if seq > n {
			t.Fatalf("acknowledged seq %d beyond the stored head %d", seq, n)
		}
	}
	if rep := l.Verify(); !rep.OK || uint64(rep.Records) != n {
		t.Fatalf("Verify: got %+v, want ok with %d records", rep, n)
	}
}

// TestLedger_Crash appends concurrently while the applier applies
// nothing (from the start, or from halfway), "crashes" without Close and
// reopens the same DB and data dir: every acknowledged record is in the
// store, gap-free, and the chain verifies; the journal is gone after a
// clean Close.
func TestLedger_Crash(t *testing.T) {
	tests := []struct {
		name    string
		sync    SyncMode
		haltAll bool // halt before the first Append
	}{
		{"SyncAlways/HaltFirst", SyncAlways, true},
		{"SyncInterval/HaltFirst", SyncInterval, true},
		{"SyncInterval/HaltHalfway", SyncInterval, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			db := openDB(t, dir, false)
			defer db.Close()
			opts := Options{Sync: tt.sync, CheckpointEvery: 50, SegmentBytes: 16 << 10} // several segments
			h := &hooks{}
			crashing := opts
			crashing.hooks = h
			l, err := Open(db, dir, crashing)
			if err != nil {
				t.Fatal(err)
			}
			if tt.haltAll {
				h.halted.Store(true)
			}
			acked := appendConcurrently(t, l, 16, 30)
			if !tt.haltAll {
				h.halted.Store(true)
				for k, v := range appendConcurrently(t, l, 16, 30) {
					acked[k] = v
				}
			}
			head, _ := l.Head()
			crash(t, l)
			if u := unsealed(t, dir); len(u) == 0 {
				t.Fatal("no unsealed segment after the crash")
			}
			if segs := journalFiles(t, dir); len(segs) < 2 {
				t.Fatalf("journal segments after the crash: got %d (%v), want several; head %d", len(segs), segs, head)
			}
			if uint64(len(acked)) != head {
				t.Fatalf("acknowledged %d records, head %d", len(acked), head)
			}

			l, err = Open(db, dir, opts)
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			if seq, _ := l.Head(); seq != head {
				t.Fatalf("Head after reopen: got %d, want %d", seq, head)
			}
			checkStored(t, l, acked, head)
			r := callRec("key:z", "t", OutcomeAllowed)
			if err := l.Append(r).Wait(); err != nil || r.Seq != head+1 || r.Prev != acked[head] {
				t.Fatalf("Append after reopen: got seq %d prev %s (%v), want %d %s", r.Seq, r.Prev, err, head+1, acked[head])
			}
			if err := l.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			// The segments are the store: kept, and all sealed.
			if segs := journalFiles(t, dir); len(segs) < 2 {
				t.Errorf("segments after Close: got %d, want several", len(segs))
			}
			if u := unsealed(t, dir); len(u) != 0 {
				t.Errorf("segments without an index after Close: %v", u)
			}
		})
	}
}

// TestLedger_Segments: records spread over many segments are kept (the
// segments are the store), each finished one sealed with its index, and
// reads, verification and a reopen see every record across them.
func TestLedger_Segments(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir, false)
	defer db.Close()
	opts := Options{Sync: SyncInterval, SegmentBytes: 8 << 10, Now: stepClock(time.Second)}
	l, err := Open(db, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 400; i++ {
		if err := l.Append(callRec(fmt.Sprintf("key:%d", i%3), "t", OutcomeAllowed)).Wait(); err != nil {
			t.Fatal(err)
		}
	}
	if rep := l.Verify(); !rep.OK || rep.Records != 400 {
		t.Fatalf("Verify: %+v", rep)
	}
	// 400 records of ~100 bytes are ~5 segments of 8 KiB; all but the
	// one being written sealed.
	segs := journalFiles(t, dir)
	if len(segs) < 4 {
		t.Errorf("segments: got %d, want at least 4", len(segs))
	}
	if u := unsealed(t, dir); len(u) != 1 || u[0] != segs[len(segs)-1].path {
		t.Errorf("unsealed segments: got %v, want only the last of %d", u, len(segs))
	}
	check := func(l *Ledger) {
		t.Helper()
		if got := storedSeqs(t, l); got != 400 {
			t.Errorf("stored: got %d, want 400", got)
		}
		got := collect(t, l, Query{Principal: "key:1", Desc: true})
		if len(got) != 133 || got[0].Seq != 398 || got[132].Seq != 2 {
			t.Errorf("principal query across segments: got %d records", len(got))
		}
		got = collect(t, l, Query{Since: t0.Add(100 * time.Second), Until: t0.Add(300 * time.Second)})
		if len(got) != 200 || got[0].Seq != 101 || got[199].Seq != 300 {
			t.Errorf("time query across segments: got %d records", len(got))
		}
	}
	check(l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if u := unsealed(t, dir); len(u) != 0 {
		t.Errorf("unsealed segments after Close: %v", u)
	}
	l, err = Open(db, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	check(l)
	if rep := l.Verify(); !rep.OK || rep.Records != 400 {
		t.Fatalf("Verify after reopen: %+v", rep)
	}
}

// unsealed returns the segments of data dir dir without an index file.
func unsealed(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, s := range journalFiles(t, dir) {
		if _, err := os.Stat(strings.TrimSuffix(s.path, segSuffix) + idxSuffix); err != nil {
			out = append(out, s.path)
		}
	}
	return out
}

// buildJournal appends n records, one per Append, with the applier
// halted, and crashes: the store is empty and the journal holds n frames
// in one segment. It returns the data dir, the open DB and the hashes.
func buildJournal(t *testing.T, n int) (string, *badger.DB, []string) {
	t.Helper()
	dir := t.TempDir()
	db := openDB(t, dir, false)
	t.Cleanup(func() { db.Close() })
	l, err := Open(db, dir, Options{hooks: &hooks{}})
	if err != nil {
		t.Fatal(err)
	}
	l.opts.hooks.halted.Store(true)
	hashes := []string{""}
	for i := 0; i < n; i++ {
		r := callRec("key:a", "t", OutcomeAllowed)
		if err := l.Append(r).Wait(); err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, r.Hash)
	}
	crash(t, l)
	return dir, db, hashes
}

// frameOffsets returns the offset of every frame in a segment file.
func frameOffsets(t *testing.T, path string) []int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var offs []int
	for off := 0; off < len(b); off += frameHeader + int(binary.LittleEndian.Uint32(b[off:])) {
		offs = append(offs, off)
	}
	return offs
}

func TestLedger_JournalTornTail(t *testing.T) {
	const n = 10
	tests := []struct {
		name string
		// damage edits the segment, whose frames start at offs.
		damage func(t *testing.T, path string, offs []int)
	}{
		{"TruncatedMidFrame", func(t *testing.T, path string, offs []int) {
			if err := os.Truncate(path, int64(offs[n-1]+frameHeader+5)); err != nil {
				t.Fatal(err)
			}
		}},
		{"TruncatedMidHeader", func(t *testing.T, path string, offs []int) {
			if err := os.Truncate(path, int64(offs[n-1]+3)); err != nil {
				t.Fatal(err)
			}
		}},
		{"LastFrameCorrupt", func(t *testing.T, path string, offs []int) {
			flipByte(t, path, offs[n-1]+frameHeader+20)
		}},
		{"ZeroedTail", func(t *testing.T, path string, offs []int) {
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			fi, _ := f.Stat()
			// The last frame's blocks never reached the disk: zeros.
			if _, err := f.WriteAt(make([]byte, int(fi.Size())-offs[n-1]+100), int64(offs[n-1])); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, db, hashes := buildJournal(t, n)
			segs := journalFiles(t, dir)
			if len(segs) != 1 {
				t.Fatalf("segments: got %d, want 1", len(segs))
			}
			offs := frameOffsets(t, segs[0].path)
			if len(offs) != n {
				t.Fatalf("frames: got %d, want %d", len(offs), n)
			}
			tt.damage(t, segs[0].path, offs)
			l, err := Open(db, dir, Options{})
			if err != nil {
				t.Fatalf("Open: got %v, want recovery up to record %d", err, n-1)
			}
			defer l.Close()
			if seq, h := l.Head(); seq != n-1 || h != hashes[n-1] {
				t.Fatalf("Head: got %d %s, want %d %s", seq, h, n-1, hashes[n-1])
			}
			acked := map[uint64]string{}
			for i := 1; i < n; i++ {
				acked[uint64(i)] = hashes[i]
			}
			checkStored(t, l, acked, n-1)
			r := callRec("key:a", "t", OutcomeAllowed)
			if err := l.Append(r).Wait(); err != nil || r.Seq != n || r.Prev != hashes[n-1] {
				t.Fatalf("Append: got seq %d prev %s (%v), want %d %s", r.Seq, r.Prev, err, n, hashes[n-1])
			}
		})
	}
}

func flipByte(t *testing.T, path string, off int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 0x40
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestLedger_JournalCorrupt: damage before the last frame, or a frame
// whose checksum is right but whose records do not continue the chain,
// is refused loudly: Open never skips or forks.
func TestLedger_JournalCorrupt(t *testing.T) {
	const n = 10
	tests := []struct {
		name   string
		damage func(t *testing.T, dir, path string, offs []int)
	}{
		{"MiddleFrameBytes", func(t *testing.T, dir, path string, offs []int) {
			flipByte(t, path, offs[4]+frameHeader+20)
		}},
		{"MiddleFrameLength", func(t *testing.T, dir, path string, offs []int) {
			flipByte(t, path, offs[4])
		}},
		{"MiddleFrameLengthPastEnd", func(t *testing.T, dir, path string, offs []int) {
			// The length now claims more than the file holds, like a torn
			// tail; the valid frames behind it must not be dropped.
			flipByte(t, path, offs[4]+2)
		}},
		{"RewrittenWithChecksum", func(t *testing.T, dir, path string, offs []int) {
			// Edit record 5's tool and fix the frame checksum, as a forger
			// without the chain would: its hash no longer matches.
			b, _ := os.ReadFile(path)
			body := b[offs[4]+frameHeader : offs[5]]
			i := strings.Index(string(body), "\x01t")
			if i < 0 {
				t.Fatal("tool not found in frame")
			}
			body[i+1] = 'u'
			binary.LittleEndian.PutUint32(b[offs[4]+4:], crc32Checksum(body))
			os.WriteFile(path, b, 0o600)
		}},
		{"FrameDropped", func(t *testing.T, dir, path string, offs []int) {
			b, _ := os.ReadFile(path)
			os.WriteFile(path, append(b[:offs[4]:offs[4]], b[offs[5]:]...), 0o600)
		}},
		{"SegmentMissing", func(t *testing.T, dir, path string, offs []int) {
			// The journal resumes after a hole: the segment holding
			// records 1..10 is renamed as if it began at 3.
			os.Rename(path, filepath.Join(dir, segDir, segName(3, segSuffix)))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, db, _ := buildJournal(t, n)
			segs := journalFiles(t, dir)
			tt.damage(t, dir, segs[0].path, frameOffsets(t, segs[0].path))
			l, err := Open(db, dir, Options{})
			if err == nil {
				l.Close()
				t.Fatal("Open: got nil, want ErrTampered")
			}
			if !errors.Is(err, ErrTampered) {
				t.Errorf("Open: got %v, want ErrTampered", err)
			}
			t.Logf("refused: %v", err)
		})
	}
}

// TestLedger_ReadYourWrites: a Query right after Wait sees the record,
// although Wait answers before the record is in badger.
func TestLedger_ReadYourWrites(t *testing.T) {
	l, _, _ := newLedger(t, Options{Sync: SyncInterval})
	const workers, each = 16, 40
	var wg sync.WaitGroup
	var misses atomic.Int64
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			p := fmt.Sprintf("key:%d", w)
			for i := 0; i < each; i++ {
				r := callRec(p, "t", OutcomeDenied)
				if err := l.Append(r).Wait(); err != nil {
					t.Error(err)
					return
				}
				var got uint64
				err := l.Query(Query{Principal: p, Desc: true, Limit: 1}, func(q *Record) error {
					got = q.Seq
					return nil
				})
				if err != nil {
					t.Error(err)
					return
				}
				if got != r.Seq {
					misses.Add(1)
				}
			}
		}(w)
	}
	wg.Wait()
	if n := misses.Load(); n > 0 {
		t.Errorf("queries right after Wait that missed the record: got %d, want 0", n)
	}
}

// TestLedger_ApplyFailure: while badger fails, Appends are still
// acknowledged (from the journal) up to the backlog bound, Healthy
// reports the failure, reads say the store lags; past the bound Append
// fails fast. Once badger works again everything acknowledged is applied
// and verifies.
func TestLedger_ApplyFailure(t *testing.T) {
	const bound = 100
	var failing atomic.Bool
	h := &hooks{maxBacklog: bound, commit: func() error {
		if failing.Load() {
			return errors.New("injected badger fault")
		}
		return nil
	}}
	l, _, _ := newLedger(t, Options{Sync: SyncInterval, CheckpointEvery: 10, hooks: h})
	acked := map[uint64]string{}
	add := func() error {
		r := callRec("key:a", "t", OutcomeAllowed)
		err := l.Append(r).Wait()
		if err == nil {
			acked[r.Seq] = r.Hash
		}
		return err
	}
	for i := 0; i < 20; i++ {
		if err := add(); err != nil {
			t.Fatal(err)
		}
	}
	failing.Store(true)
	for i := 0; i < bound/2; i++ {
		if err := add(); err != nil {
			t.Fatalf("Append %d while badger fails, under the bound: %v", i, err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for l.Healthy() == nil {
		if time.Now().After(deadline) {
			t.Fatal("Healthy: got nil, want the applier's failure")
		}
		time.Sleep(time.Millisecond)
	}
	if err := l.Healthy(); !errors.Is(err, ErrWriteFailed) || !strings.Contains(err.Error(), "injected") {
		t.Errorf("Healthy: got %v, want ErrWriteFailed naming the fault", err)
	}
	if err := l.Query(Query{}, func(*Record) error { return nil }); !errors.Is(err, ErrWriteFailed) {
		t.Errorf("Query while the store lags: got %v, want ErrWriteFailed", err)
	}
	// Past the bound: fail fast, nothing acknowledged that cannot be held.
	var fastFail error
	for i := 0; i < 2*bound && fastFail == nil; i++ {
		fastFail = add()
	}
	if !errors.Is(fastFail, ErrWriteFailed) {
		t.Fatalf("Append past the backlog bound: got %v, want ErrWriteFailed", fastFail)
	}
	// The applier needs badger only for checkpoints (every 10 here) and
	// admin or balance entries, so while badger fails it still applies
	// records 21..29 and stops at the checkpoint due at 30: at most the
	// bound beyond that is acknowledged.
	if head, _ := l.Head(); head > 20+10+bound {
		t.Errorf("acknowledged head while failing: got %d, want at most %d", head, 20+10+bound)
	}

	failing.Store(false)
	deadline = time.Now().Add(10 * time.Second)
	for l.Healthy() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("Healthy after the fault cleared: %v", l.Healthy())
		}
		time.Sleep(time.Millisecond)
	}
	if err := add(); err != nil {
		t.Fatalf("Append after recovery: %v", err)
	}
	head, _ := l.Head()
	checkStored(t, l, acked, head)
	if uint64(len(acked)) != head {
		t.Errorf("acknowledged: got %d, want every stored record (%d)", len(acked), head)
	}
}

// TestOpen_ReadOnlyJournal: a read-only Open on a journal holding
// unapplied records (a crash) writes nothing: Verify checks them in
// memory and counts them, Export refuses them, a damaged journal is
// refused, and everything works once a writable Open applied them.
func TestOpen_ReadOnlyJournal(t *testing.T) {
	dir, db, _ := buildJournal(t, 5)
	db.Close()
	segs := journalFiles(t, dir)
	before := map[string][]byte{}
	for _, s := range segs {
		b, err := os.ReadFile(s.path)
		if err != nil {
			t.Fatal(err)
		}
		before[s.path] = b
	}
	t.Run("OK", func(t *testing.T) {
		ro := openDB(t, dir, true)
		defer ro.Close()
		l, err := Open(ro, dir, Options{})
		if err != nil {
			t.Fatalf("read-only Open: %v", err)
		}
		if rep := l.Verify(); !rep.OK || rep.Records != 5 || rep.JournalRecords != 5 {
			t.Errorf("Verify: got %+v, want ok with 5 records, 5 of them in the journal", rep)
		}
		if err := l.Export(io.Discard, time.Time{}, time.Time{}); !errors.Is(err, ErrJournalPending) {
			t.Errorf("Export: got %v, want ErrJournalPending", err)
		}
		for s, b := range before {
			if got, _ := os.ReadFile(s); !bytes.Equal(got, b) {
				t.Errorf("journal %s changed by a read-only Open", s)
			}
		}
	})
	t.Run("ErrTampered", func(t *testing.T) {
		path := segs[0].path
		offs := frameOffsets(t, path)
		if len(offs) < 2 {
			t.Fatalf("want 2 frames or more, got %d", len(offs))
		}
		b := append([]byte(nil), before[path]...)
		b[offs[0]+frameHeader+3] ^= 0x40 // inside the first frame, not the last
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(path, before[path], 0o600)
		ro := openDB(t, dir, true)
		defer ro.Close()
		if _, err := Open(ro, dir, Options{}); !errors.Is(err, ErrTampered) {
			t.Errorf("read-only Open of a damaged journal: got %v, want ErrTampered", err)
		}
	})

	db = openDB(t, dir, false)
	l, err := Open(db, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	db.Close()
	ro := openDB(t, dir, true)
	defer ro.Close()
	l, err = Open(ro, dir, Options{})
	if err != nil {
		t.Fatalf("read-only Open after apply: %v", err)
	}
	if rep := l.Verify(); !rep.OK || rep.Records != 5 || rep.JournalRecords != 0 {
		t.Errorf("Verify: got %+v, want ok with 5 records", rep)
	}
}

// TestLedger_CloseApplyFailure: when badger fails at Close, Close says so
// and keeps the journal; the next Open applies it. With segments of 1400
// bytes (ten records) the failure falls in the second segment.
func TestLedger_CloseApplyFailure(t *testing.T) {
	for _, segBytes := range []int64{0, 1400} {
		t.Run(fmt.Sprintf("segment=%d", segBytes), func(t *testing.T) { closeApplyFailure(t, segBytes) })
	}
}

func closeApplyFailure(t *testing.T, segBytes int64) {
	dir := t.TempDir()
	db := openDB(t, dir, false)
	defer db.Close()
	var failing atomic.Bool
	h := &hooks{commit: func() error {
		if failing.Load() {
			return errors.New("injected badger fault")
		}
		return nil
	}}
	l, err := Open(db, dir, Options{Sync: SyncInterval, CheckpointEvery: 5, SegmentBytes: segBytes, hooks: h})
	if err != nil {
		t.Fatal(err)
	}
	acked := map[uint64]string{}
	appendN := func(n int) {
		for i := 0; i < n; i++ {
			r := callRec("key:a", "t", OutcomeAllowed)
			if err := l.Append(r).Wait(); err != nil {
				t.Fatal(err)
			}
			acked[r.Seq] = r.Hash
		}
	}
	// Ten records applied and indexed, then twenty journaled while badger
	// fails: the checkpoint due at 15 fails to commit, and the applier
	// stops short of the segment's end, so the segment Close leaves holds
	// records its in-memory index lacks.
	appendN(10)
	if err := l.waitApplied(); err != nil {
		t.Fatal(err)
	}
	failing.Store(true)
	appendN(20)
	if err := l.waitApplied(); !errors.Is(err, ErrWriteFailed) {
		t.Fatalf("waitApplied while badger fails: got %v, want ErrWriteFailed", err)
	}
	if err := l.Close(); !errors.Is(err, ErrWriteFailed) {
		t.Fatalf("Close: got %v, want ErrWriteFailed", err)
	}
	if segs := journalFiles(t, dir); len(segs) == 0 {
		t.Fatal("journal deleted although badger did not take it")
	}
	l, err = Open(db, dir, Options{Sync: SyncInterval, SegmentBytes: segBytes})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer l.Close()
	checkStored(t, l, acked, 30)
}

// TestLedger_QueryDuringRotation: queries run while appenders fill
// segments of 4 KiB, so the applier seals segments and maps new ones
// under the readers: every query right after a Wait sees its record, and
// every one returns its principal's records in order.
func TestLedger_QueryDuringRotation(t *testing.T) {
	l, _, dir := newLedger(t, Options{Sync: SyncInterval, SegmentBytes: 4 << 10})
	const workers, each = 8, 60
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			p := fmt.Sprintf("key:%d", w)
			for i := 0; i < each; i++ {
				r := callRec(p, "t", OutcomeAllowed)
				if err := l.Append(r).Wait(); err != nil {
					t.Error(err)
					return
				}
				var seqs []uint64
				if err := l.Query(Query{Principal: p}, func(q *Record) error { seqs = append(seqs, q.Seq); return nil }); err != nil {
					t.Error(err)
					return
				}
				if len(seqs) != i+1 || seqs[i] != r.Seq {
					t.Errorf("%s after %d appends: got %d records ending %v, want %d ending %d", p, i+1, len(seqs), seqs[max(len(seqs)-1, 0):], i+1, r.Seq)
					return
				}
				n := 0
				if err := l.Query(Query{Desc: true, Limit: 5}, func(*Record) error { n++; return nil }); err != nil || n != 5 && r.Seq >= 5 {
					t.Errorf("time query: got %d records, %v", n, err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	if segs := journalFiles(t, dir); len(segs) < 5 {
		t.Errorf("segments: got %d, want several (the test needs rotations)", len(segs))
	}
	if rep := l.Verify(); !rep.OK || rep.Records != workers*each {
		t.Errorf("Verify: got %+v, want ok with %d records", rep, workers*each)
	}
}
