// Package ship copies a node's ledger to S3 (or any S3-compatible
// store), one UTC day at a time, as signed evidence that outlives the
// data dir, and verifies what was shipped.
//
// # What it owns
//
// Under s3://bucket/prefix/<node>/<YYYY-MM-DD>/ it writes the day's
// records as gzipped `audit export` files (records-0001.jsonl.gz, …),
// manifest.sig and, last, manifest.json (Manifest): the files' SHA-256s,
// seq range, chain heads and counts, and the SHA-256 of the node's
// previous manifest. The signature is the ledger's checkpoint key over
// a domain-separated copy of the manifest bytes (Sign). Days are staged
// under Config.StageDir until every object was uploaded and read back,
// so a run that is cut short resumes with the same bytes.
//
// It reads the ledger only through its public API (Export, Query,
// VerifyExport, LoadKey), never its store. It is the only package that
// imports the AWS SDK, and only cmd imports it. It never logs or stores
// credentials: they come from the SDK's usual chain.
//
// Verify needs nothing but the bucket (or a local copy, Dir) and the
// public key, and reports the first bad point of a changed, missing or
// reordered file or a broken manifest chain. docs/ledger.md describes
// the format, docs/operations.md the operation.
package ship
