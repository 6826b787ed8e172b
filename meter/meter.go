// Package meter owns toolgate's in-memory metering on the request path:
// per-minute rate-class quotas (Quotas) and per-day spend with prepaid
// credits (Spend), both keyed by principal strings such as "key:AbC123" or
// "wallet:0x…".
//
// Every method takes the current time from its caller, so tests drive a
// fake clock, and every decision is a result value, not an error. State is
// sharded by principal (one shardedMap per table) so unrelated callers do
// not contend, and the hot methods allocate nothing for a principal
// already known.
//
// The package must not do I/O, log, read the wall clock, know about HTTP,
// policies or the catalog, or persist anything: the gateway rebuilds spend
// from its ledger at start (Spend.Restore, Spend.RestoreBalance) and calls
// Sweep periodically to bound memory.
package meter
