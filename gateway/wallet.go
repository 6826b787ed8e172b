package gateway

import (
	"encoding/hex"
	"strings"

	"golang.org/x/crypto/sha3"
)

// normalizeAddress checks a 0x-prefixed 20-byte hex address and returns it
// in EIP-55 checksum form. Mixed-case input must carry a valid checksum.
func normalizeAddress(s string) (string, bool) {
	if len(s) != 42 || (s[:2] != "0x" && s[:2] != "0X") {
		return "", false
	}
	lower := strings.ToLower(s[2:])
	if _, err := hex.DecodeString(lower); err != nil {
		return "", false
	}
	h := sha3.NewLegacyKeccak256()
	h.Write([]byte(lower))
	sum := h.Sum(nil)
	out := []byte("0x" + lower)
	for i := 0; i < 40; i++ {
		c := out[i+2]
		if c >= 'a' && c <= 'f' && (sum[i/2]>>(4*(1-uint(i%2))))&0xf >= 8 {
			out[i+2] = c - 'a' + 'A'
		}
	}
	cs := string(out)
	mixed := strings.ToLower(s[2:]) != s[2:] && strings.ToUpper(s[2:]) != s[2:]
	if mixed && s[2:] != cs[2:] {
		return "", false
	}
	return cs, true
}
