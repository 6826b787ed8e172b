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
	var acc [4]uint64 // little-endian limbs of the running sum
	var buf []byte
	s.Each(func(k *Key) {
		buf = appendKeyDigestInput(buf[:0], k)
		h := sha256.Sum256(buf)
		var c uint64
		for i := range acc {
			acc[i], c = bits.Add64(acc[i], binary.LittleEndian.Uint64(h[8*i:]), c)
		}
		n++
	})
	for i := range acc {
		binary.LittleEndian.PutUint64(sum[8*i:], acc[i])
	}
	return sum, n
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
