// Package ledger is toolgate's tamper-evident audit trail: one append-only,
// hash-chained log of every tool call ("call" records, tool_metrics) and
// every money movement ("txn" records, transactions), with signed
// checkpoints, indexed queries, export and verification.
//
// # What it owns
//
// The ledger owns the key prefix "l/" of the badger DB that cmd opens and
// shares, and the file checkpoint.key in the data dir. It never touches
// other prefixes, never opens or closes the DB, and never stores secrets:
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
//
// <at> is the record's At as Unix nanoseconds with the sign bit flipped,
// 8 bytes big-endian, so keys sort by time. A group's records, their index
// entries and a due checkpoint are written in one badger transaction.
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
// # Durability
//
// Append never waits for the disk. A single writer goroutine commits
// everything queued as one transaction (group commit) and then releases
// the Tickets; with SyncAlways it also fsyncs first. A caller that Waits
// before answering never answers a call whose record can be lost by a
// process crash (and, with SyncAlways, by a machine crash).
package ledger
