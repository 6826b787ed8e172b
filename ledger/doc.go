// Package ledger is toolgate's tamper-evident audit trail: one append-only,
// hash-chained log of every tool call ("call" records, tool_metrics) and
// every money movement ("txn" records, transactions), with signed
// checkpoints, indexed queries, export and verification.
//
// # What it owns
//
// In the data dir the ledger owns the file checkpoint.key and the
// directory ledger/ (the record store: segments <first seq>.seg and
// their indexes <first seq>.idx), and in the badger DB that cmd opens and
// shares the key prefix "l/". It never touches other prefixes or files,
// never opens or closes the DB, and never stores secrets: Record has no
// field for API keys, admin tokens or payment signatures, and callers
// must not put them in any string field.
//
// # Where records live
//
// Each record is stored once, in the journal segment it was written to
// (journal.go, segment.go): the journal is the record store. Segments
// are append-only files of checksummed frames, about
// Options.SegmentBytes long; a full segment is fdatasynced and sealed,
// its index file written beside it (segindex.go: seq -> offset, the
// records in (At, seq) order, each principal's records in (At, seq)
// order, and a CRC-32C), and neither is written again. The segment being
// written is indexed in memory and sealed at Close; after a crash Open
// rebuilds its index from its frames. Reads map the segments read-only
// and walk the indexes (merged across segments), so a replay of one
// principal reads its records in place and nothing else. The ledger is
// append-only and keeps every segment; see docs/operations.md for sizes.
//
// badger holds only small entries:
//
//	l/c/<seq u64 BE>      checkpoint JSON, covering record seq
//	l/a/<seq u64 BE>      admin records only: a byte-exact copy of the record
//	                      (the management history, read whole at start)
//	l/b/<principal>       seq (u64 BE) of the principal's latest txn with
//	                      balance_after (LatestBalances)
//	l/applied             seq (u64 BE) up to which those entries are written
//
// The applier writes them, with l/applied and a due checkpoint, in one
// badger transaction per batch of journaled groups, and only when the
// batch has any: a call record costs badger nothing. Verify checks every
// index, in the segments and in badger, against the chain.
//
// A store of the earlier layout (every record in badger as l/r/<seq>, a
// time index l/t/ and a principal-index copy l/p/, the journal as
// DATA/ledger-<seq>.wal deleted once applied) is migrated by Open
// (legacy.go); the records' bytes, hashes and checkpoints do not change.
//
// Records are stored in a compact canonical binary form (binary.go) from
// which their JSON (the hashed and exported form) is re-derived byte for
// byte.
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
// queued (a group) to the segment being written as one frame with one
// write(2), with SyncAlways fdatasyncs it, and then releases the Tickets:
// a caller that Waits before answering never answers a call whose record
// can be lost by a process crash (the bytes are in the page cache) or,
// with SyncAlways, by a machine crash. A second goroutine, the applier,
// then indexes journaled groups in seq order, writes their badger
// entries and the checkpoints, and seals finished segments. The frame
// format is described in journal.go.
//
// Open seals what a crash left unsealed (a torn last frame of the last
// segment, never acknowledged, is cut off; any other damage is refused
// with ErrTampered), then checks every record after l/applied — seq,
// prev link, hash and encoding — against the chain and writes its badger
// entries before it accepts records. A read-only Open writes nothing: it
// indexes an unsealed segment in memory, Verify counts the records after
// l/applied as JournalRecords, and Export refuses them
// (ErrJournalPending).
//
// # Code layout
//
// Ledger (ledger.go) is the facade: Open, Append, Close and the reads
// (query.go, verify.go, export.go). It composes one type per role, each
// owning its state and locks: recovery (recovery.go) opens the record
// store and checks the records the badger entries lack at Open (legacy.go
// migrates the earlier layout); writer (writer.go) is the group commit
// onto the journal (journal.go); the record store (segment.go, indexes in
// segindex.go) holds the segments, their indexes and the readers'
// snapshots; applier (applier.go) indexes journaled groups and writes
// badger; checkpointer (checkpoint.go) decides when to sign a checkpoint
// and signs it. A group (group.go) is the unit the writer hands the
// applier. Tests inject faults through hooks (hooks.go), which production
// never sets.
//
// Reads (Query, QueryRaw, LatestBalances, AdminRecords, Verify, Export)
// first wait until the applier has applied every record acknowledged
// when the read started, so a caller reads its own writes; Verify and
// Export do so through their checkpoint. While badger fails, the applier
// keeps the records queued and retries with backoff, Healthy reports the
// failure, those reads return it, and Append fails fast once 100 000
// acknowledged records wait. The segments stay mapped after Close, for
// reads, until the Ledger is unreachable.
package ledger
