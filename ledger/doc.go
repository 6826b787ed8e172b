// Package ledger is toolgate's tamper-evident audit trail: one append-only,
// hash-chained log of every tool call ("call" records, tool_metrics) and
// every money movement ("txn" records, transactions), with signed
// checkpoints, indexed queries, export and verification.
//
// # What it owns
//
// The ledger owns the key prefix "l/" of the badger DB that cmd opens and
// shares, and in the data dir the file checkpoint.key and the journal
// segments ledger-<seq>.wal. It never touches other prefixes or files,
// never opens or closes the DB, and never stores secrets:
// Record has no field for API keys, admin tokens or payment signatures, and
// callers must not put them in any string field.
//
// # Key layout
//
//	l/r/<seq u64 BE>                          record, stored form (binary.go)
//	l/t/<at><seq u64 BE>                      time index; value: type 0x00 outcome 0x00 tool
//	l/p/<principal> 0x00 <at><seq u64 BE>     principal index (identified principals only);
//	                                          value: a byte-exact copy of the l/r/ value
//	l/b/<principal>                           seq (u64 BE) of the principal's latest txn
//	                                          with balance_after (LatestBalances)
//	l/c/<seq u64 BE>                          checkpoint JSON, covering record seq
//	l/applied                                 seq (u64 BE) of the last record applied
//	                                          from the journal
//
// <at> is the record's At as Unix nanoseconds with the sign bit flipped,
// 8 bytes big-endian, so keys sort by time. The records of one or more
// journaled groups, their index entries, l/applied and a due checkpoint
// are written in one badger transaction.
// Records are stored in a compact canonical binary form from which their
// JSON (the hashed and exported form) is re-derived byte for byte; the
// principal index repeats it so that a replay reads one index range and
// no record keys. Verify checks every index entry against the chain.
//
// # Hash chain
//
// Seq starts at 1 and has no gaps. hash(n) = SHA-256(prev || canonical(n)),
// where prev is the 32-byte hash of record n-1 (32 zero bytes for n = 1)
// and canonical(n) is the record's JSON without prev and hash: fields in
// Record's declaration order, zero optional fields omitted (cost_micros
// always present, balance_after_micros present whenever set), integers in
// decimal, amounts as integer micro-USD, at as RFC 3339 UTC with
// nanoseconds and trailing zeros trimmed, strings valid UTF-8 with only
// '"', '\' and bytes below 0x20 escaped (the latter as \u00xx). The
// exported and served form (AppendJSON) is the canonical JSON with
// ,"prev":"…","hash":"…" inserted before the closing brace; verification
// of an export re-encodes each record and rejects any other byte string,
// and the stored binary form admits exactly one encoding per record.
//
// # Checkpoints
//
// A checkpoint signs {seq, hash, at, count} with the Ed25519 key in
// checkpoint.key over the bytes described at Checkpoint.SignedBytes. One is
// written every Options.CheckpointEvery records, every
// Options.CheckpointInterval, before Verify and Export, and on Close. A
// rewritten chain, even one re-hashed consistently, fails against the
// signed hashes; deleted or truncated records fail against a checkpoint
// beyond the end. Records after the newest checkpoint are vouched for only
// by the chain until the next one; exports end with a fresh checkpoint.
//
// # Durability: the journal
//
// Append never waits for the disk. A writer goroutine appends everything
// queued (a group) to the journal as one frame with one write(2), with
// SyncAlways fdatasyncs it, and then releases the Tickets: a caller that
// Waits before answering never answers a call whose record can be lost
// by a process crash (the bytes are in the page cache) or, with
// SyncAlways, by a machine crash. A second goroutine, the applier, then
// copies journaled groups into badger in seq order, merging several per
// transaction, and writes the checkpoints; a segment is deleted once
// badger holds and has synced all of it, and Close applies everything
// and deletes the journal. The frame format is described in journal.go.
//
// Open applies what the journal holds beyond l/applied before it accepts
// records, checking every frame's checksum and every record's seq, prev
// link, hash and encoding against the stored chain. A torn last frame
// (its write was cut short, so it was never acknowledged) is dropped; any
// other damage is refused with ErrTampered rather than skipped. A
// read-only Open writes nothing: it replays and checks a journal that
// holds unapplied records in memory, Verify counts them, and Export
// refuses them (ErrJournalPending).
//
// # Code layout
//
// Ledger (ledger.go) is the facade: Open, Append, Close and the reads
// (query.go, verify.go, export.go). It composes one type per role, each
// owning its state and locks: recovery (recovery.go) reads the store's
// head and replays and repairs the journal at Open; writer (writer.go)
// is the group commit onto the journal (journal.go); applier
// (applier.go) copies journaled groups into badger; checkpointer
// (checkpoint.go) decides when to sign a checkpoint and signs it. A
// group (group.go) is the unit the writer hands the applier. Tests
// inject faults through hooks (hooks.go), which production never sets.
//
// Reads (Query, QueryRaw, LatestBalances, Verify, Export) read badger.
// Query, QueryRaw and LatestBalances first wait until the applier has
// applied every record acknowledged when the read started, so a caller
// reads its own writes; Verify and Export do so through their checkpoint.
// While badger fails, the applier keeps the records in the journal and
// retries with backoff, Healthy reports the failure, those reads return
// it, and Append fails fast once 100 000 acknowledged records wait.
package ledger
