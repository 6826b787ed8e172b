package x402

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/ethereum/go-ethereum/common"
)

// DefaultNetwork is the CAIP-2 network used when Config.Network is empty
// (Base Sepolia).
const DefaultNetwork = "eip155:84532"

// ErrConfig is returned (wrapped, with every problem listed) by
// Config.Validate and NewOffer when the configuration is unusable.
var ErrConfig = errors.New("x402: invalid config")

// v1Networks maps legacy (v1) network names to EVM chain IDs
// (x402-notes.md §1.5).
var v1Networks = map[string]uint64{
	"base": 8453, "base-sepolia": 84532,
	"avalanche": 43114, "avalanche-fuji": 43113,
	"polygon": 137, "polygon-amoy": 80002,
	"sei": 1329, "sei-testnet": 1328,
	"iotex": 4689, "peaq": 3338, "story": 1514, "educhain": 41923,
	"abstract": 2741, "abstract-testnet": 11124,
	"skale-base-sepolia": 324705682,
	"megaeth":            4326, "monad": 143, "stable": 988, "stable-testnet": 2201,
	"ethereum": 1, "sepolia": 11155111,
}

// legacyZodNetworks is the network enum of the legacy x402-fetch client
// (x402-notes.md §1.4). A v1 accepts entry naming any other network makes
// that client throw, so such networks get no v1 entry at all.
var legacyZodNetworks = map[string]bool{
	"abstract": true, "abstract-testnet": true, "base-sepolia": true, "base": true,
	"avalanche-fuji": true, "avalanche": true, "iotex": true, "sei": true,
	"sei-testnet": true, "polygon": true, "polygon-amoy": true, "peaq": true,
	"story": true, "educhain": true, "skale-base-sepolia": true,
}

// usdc is the canonical USDC deployment and its EIP-712 domain on a chain.
type usdc struct {
	addr          common.Address
	name, version string
}

var knownUSDC = map[uint64]usdc{
	8453:  {common.HexToAddress("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"), "USD Coin", "2"},
	84532: {common.HexToAddress("0x036CbD53842c5426634e7929541eC2318f3dCF7e"), "USDC", "2"},
}

// ParseNetwork returns the EVM chain ID of a CAIP-2 network
// ("eip155:84532") or of a v1 network name ("base-sepolia").
func ParseNetwork(network string) (chainID uint64, ok bool) {
	if rest, found := strings.CutPrefix(network, "eip155:"); found {
		id, err := strconv.ParseUint(rest, 10, 64)
		if err != nil || id == 0 || (len(rest) > 1 && rest[0] == '0') {
			return 0, false
		}
		return id, true
	}
	id, ok := v1Networks[network]
	return id, ok
}

// V1Network returns the legacy (v1) network name of a chain ID, and whether
// the legacy x402-fetch client accepts that name.
func V1Network(chainID uint64) (name string, legacyOK bool) {
	for n, id := range v1Networks {
		if id == chainID {
			return n, legacyZodNetworks[n]
		}
	}
	return "", false
}

// Config is the gateway-wide x402 configuration. The zero value is not
// usable: PayTo and PublicURL are required; everything else has a default
// (see Validate). A Config is a plain value; copy it freely.
type Config struct {
	// Network is the CAIP-2 network, default "eip155:84532" (Base Sepolia).
	// A v1 name such as "base" is accepted and normalised.
	Network string
	// Asset is the EIP-3009 token; default the network's USDC.
	Asset common.Address
	// AssetName and AssetVersion are the token's EIP-712 domain name and
	// version; defaults for USDC on Base Sepolia "USDC"/"2", on Base
	// "USD Coin"/"2". Required for any other asset.
	AssetName, AssetVersion string
	// PayTo receives the payments. Required.
	PayTo common.Address
	// PublicURL is the external base URL of the gateway (scheme and host,
	// optional path prefix), used for resource URLs. Required.
	PublicURL string
	// UptoFacilitator, when set, turns on the upto scheme for metered
	// tools (Resource.Metered): Permit2 and the upto proxy are deployed on
	// the network, and this is the address of the facilitator that settles
	// upto payments (its GET /supported extra.facilitatorAddress), which
	// each payer names in its authorization. Zero: metered tools are
	// offered with the exact scheme only, at their maximum.
	UptoFacilitator common.Address
}

// Validate fills the defaults into c and reports every problem at once as
// one error wrapping ErrConfig.
func (c *Config) Validate() error {
	var probs []string
	if c.Network == "" {
		c.Network = DefaultNetwork
	}
	id, ok := ParseNetwork(c.Network)
	if !ok {
		probs = append(probs, fmt.Sprintf("network: %q is not an eip155 CAIP-2 network or known v1 name", c.Network))
	} else {
		c.Network = "eip155:" + strconv.FormatUint(id, 10)
		if known, has := knownUSDC[id]; has {
			if c.Asset == (common.Address{}) {
				c.Asset = known.addr
			}
			if c.Asset == known.addr {
				if c.AssetName == "" {
					c.AssetName = known.name
				}
				if c.AssetVersion == "" {
					c.AssetVersion = known.version
				}
			}
		}
		if c.Asset == (common.Address{}) {
			probs = append(probs, fmt.Sprintf("asset: required on %s (no default USDC known)", c.Network))
		}
	}
	if c.AssetName == "" {
		probs = append(probs, "asset_name: required for a non-default asset (EIP-712 domain name)")
	}
	if c.AssetVersion == "" {
		probs = append(probs, "asset_version: required for a non-default asset (EIP-712 domain version)")
	}
	if c.PayTo == (common.Address{}) {
		probs = append(probs, "pay_to: required (non-zero address)")
	}
	if c.PublicURL == "" {
		probs = append(probs, "public_url: required (e.g. https://gw.example.com)")
	} else if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		probs = append(probs, fmt.Sprintf("public_url: %q is not an absolute http(s) URL without query", c.PublicURL))
	} else {
		c.PublicURL = strings.TrimRight(c.PublicURL, "/")
	}
	if len(probs) > 0 {
		return fmt.Errorf("%w: %s", ErrConfig, strings.Join(probs, "; "))
	}
	return nil
}
