package x402

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient"
)

// DialChain connects to an Ethereum JSON-RPC endpoint and returns an
// on-chain settler whose relayer key is read from keyFile (hex, with or
// without 0x; the file should be mode 0600). The key is never logged.
func DialChain(ctx context.Context, rpcURL, keyFile string) (*Chain, error) {
	raw, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("relayer key: %w", err)
	}
	key, err := crypto.HexToECDSA(strings.TrimPrefix(strings.TrimSpace(string(raw)), "0x"))
	if err != nil {
		return nil, fmt.Errorf("relayer key %s: not a hex secp256k1 private key", keyFile)
	}
	client, err := ethclient.DialContext(ctx, rpcURL)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", rpcURL, err)
	}
	return NewChain(client, key), nil
}

// ChecksumAddress validates a 0x-prefixed 20-byte hex address and returns
// its EIP-55 form. Mixed-case input must carry a correct checksum.
func ChecksumAddress(s string) (string, bool) {
	if len(s) != 42 || !common.IsHexAddress(s) || (s[:2] != "0x" && s[:2] != "0X") {
		return "", false
	}
	a := common.HexToAddress(s)
	cs := a.Hex()
	body := s[2:]
	if body != strings.ToLower(body) && body != strings.ToUpper(body) && body != cs[2:] {
		return "", false
	}
	return cs, true
}

// MarkSettled records that k's authorization was executed in transaction
// txHex (0x-prefixed hex; empty when the backend did not say).
func (l *NonceLock) MarkSettled(k NonceKey, txHex string) error {
	return l.Settled(k, common.HexToHash(txHex))
}

// NonceHex returns k's nonce as 0x-prefixed hex, for records and logs.
func (k NonceKey) NonceHex() string { return "0x" + common.Bytes2Hex(k.Nonce[:]) }

// ReconcileTx is Reconcile with the transaction hash in hex (may be empty).
func (c *Chain) ReconcileTx(ctx context.Context, k NonceKey, txHex string) (SettleResult, error) {
	var tx common.Hash
	if txHex != "" {
		tx = common.HexToHash(txHex)
	}
	return c.Reconcile(ctx, k, tx)
}

// NewConfig builds a Config from command-line strings (addresses in hex;
// empty asset means the network's USDC) and validates it.
func NewConfig(network, asset, assetName, assetVersion, payTo, publicURL string) (Config, error) {
	c := Config{Network: network, AssetName: assetName, AssetVersion: assetVersion, PublicURL: publicURL}
	var bad []string
	if a, ok := ChecksumAddress(payTo); ok {
		c.PayTo = common.HexToAddress(a)
	} else {
		bad = append(bad, fmt.Sprintf("pay-to %q is not an address", payTo))
	}
	if asset != "" {
		if a, ok := ChecksumAddress(asset); ok {
			c.Asset = common.HexToAddress(a)
		} else {
			bad = append(bad, fmt.Sprintf("asset %q is not an address", asset))
		}
	}
	if len(bad) > 0 {
		return c, fmt.Errorf("%w: %s", ErrConfig, strings.Join(bad, "; "))
	}
	return c, c.Validate()
}

// Ping checks that the facilitator answers (GET /supported).
func (f *Facilitator) Ping(ctx context.Context) error {
	_, err := f.Supported(ctx)
	return err
}

// Ping checks that the RPC node answers.
func (c *Chain) Ping(ctx context.Context) error {
	_, err := c.backend.BlockNumber(ctx)
	return err
}

// ErrReadOnlyChain is returned by Settle on a Chain dialed without a
// relayer key (DialReader): it can verify and reconcile, not settle.
var ErrReadOnlyChain = errors.New("x402: chain opened without a relayer key")

// DialReader connects to an Ethereum JSON-RPC endpoint for reading only:
// the returned Chain verifies and reconciles (authorizationState, receipts,
// AuthorizationUsed logs) but cannot settle. A gateway settling through a
// facilitator uses it to find out what became of settlements whose outcome
// the facilitator did not report.
func DialReader(ctx context.Context, rpcURL string) (*Chain, error) {
	client, err := ethclient.DialContext(ctx, rpcURL)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", rpcURL, err)
	}
	return &Chain{backend: client, ReceiptTimeout: 30 * time.Second, PollInterval: 500 * time.Millisecond, LogLookback: 5000}, nil
}
