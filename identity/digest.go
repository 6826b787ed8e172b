package identity

import (
	"crypto/sha256"
	"encoding/binary"
	"math/bits"
)

// Digest returns a digest of every key the store holds, revoked ones
// included: the sum modulo 2²⁵⁶ of a SHA-256 per key over its id, name,
// creation, expiry and revocation times and secret digest, so that it
// does not depend on the order keys are visited in. Two stores with the
// same keys in the same states have the same Digest; a changed field of
// any key changes it. n is the number of keys summed.
//
// It is how a gateway recognizes, at start, the exact key state it left
// at a clean shutdown without reading the ledger's history (the state
// seal, gateway.SealState). It reveals nothing usable about a secret: the
// secret digests it covers are themselves SHA-256 of 160-bit secrets.
func (s *Store) Digest() (sum [32]byte, n int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.idx.sum.bytes(), s.idx.ids
}

// digestSum is the running sum of Digest: a key's hash is added when it
// is indexed and subtracted when a newer version replaces it, so Digest
// costs nothing at start or shutdown (the hashing runs on Open's
// indexing goroutine, beside the decoding).
type digestSum [4]uint64 // little-endian limbs

func keyStateHash(k *Key) [32]byte {
	var buf [160]byte
	return sha256.Sum256(appendKeyDigestInput(buf[:0], k))
}

func (d *digestSum) add(k *Key) {
	h := keyStateHash(k)
	var c uint64
	for i := range d {
		d[i], c = bits.Add64(d[i], binary.LittleEndian.Uint64(h[8*i:]), c)
	}
}

func (d *digestSum) sub(k *Key) {
	h := keyStateHash(k)
	var b uint64
	for i := range d {
		d[i], b = bits.Sub64(d[i], binary.LittleEndian.Uint64(h[8*i:]), b)
	}
}

func appendKeyDigestInput(b []byte, k *Key) []byte {
	b = append(b, "toolgate/identity/key-state/v1\x00"...)
	b = binary.AppendUvarint(b, uint64(len(k.ID)))
	b = append(b, k.ID...)
	b = binary.AppendUvarint(b, uint64(len(k.Name)))
	b = append(b, k.Name...)
	b = binary.AppendUvarint(b, uint64(len(k.Hint)))
	b = append(b, k.Hint...)
	b = binary.BigEndian.AppendUint64(b, uint64(k.created))
	b = binary.BigEndian.AppendUint64(b, uint64(k.expires))
	b = binary.BigEndian.AppendUint64(b, uint64(k.revoked))
	return append(b, k.Hash[:]...)
}

// addSum adds the terms summed in o.
func (d *digestSum) addSum(o *digestSum) {
	var c uint64
	for i := range d {
		d[i], c = bits.Add64(d[i], o[i], c)
	}
}

// subSum takes the terms summed in o away.
func (d *digestSum) subSum(o *digestSum) {
	var b uint64
	for i := range d {
		d[i], b = bits.Sub64(d[i], o[i], b)
	}
}

// bytes returns the sum as Digest does.
func (d *digestSum) bytes() (out [32]byte) {
	for i, l := range d {
		binary.LittleEndian.PutUint64(out[8*i:], l)
	}
	return out
}
