package ledger

import "crypto/ed25519"

// LoadKey reads the checkpoint signing key (KeyFile) of the data dir dir,
// with the checks Open makes: it must exist, be an Ed25519 PKCS #8 key
// (ErrKeyInvalid) and be readable by its owner only (ErrKeyPermissions).
// It never creates one. Audit shipping signs its manifests with it, so
// that one published public key verifies checkpoints and shipped days.
// Keep the returned key in memory only.
func LoadKey(dir string) (ed25519.PrivateKey, error) {
	return loadOrCreateKey(dir, false)
}
