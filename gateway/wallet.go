package gateway

import "github.com/toolgate/toolgate/x402"

// normalizeAddress checks a wallet address and returns its EIP-55 form.
func normalizeAddress(s string) (string, bool) { return x402.ChecksumAddress(s) }
