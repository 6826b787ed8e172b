// Package x402 owns toolgate's side of the x402 payment protocol: the v1 and
// v2 wire types, the base64 header codec, the per-tool payment offer (its
// precomputed 402 bytes and EIP-712 domain), local verification of EIP-3009
// TransferWithAuthorization payments, the persistent nonce lock, and the two
// settlement backends (a facilitator HTTP client and direct on-chain
// settlement through go-ethereum).
//
// The package takes plain values and returns decisions: it never serves HTTP
// and never sees a request context of the gateway. An invalid payment is a
// result carrying an x402 reason string, not an error; errors mean that a
// decision could not be made (malformed input, I/O failure).
//
// x402 is the only toolgate package that imports go-ethereum, and it must not
// import fasthttp (the facilitator client uses net/http).
package x402
