package x402

import (
	"crypto/ecdsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/toolgate/toolgate/money"
)

// Values of the x402-notes.md §1.9 / §3.2 vector.
var (
	vecPayTo = common.HexToAddress("0x209693Bc6afc0C5328bA36FaF03C514EF312287C")
	vecPayer = common.HexToAddress("0x680a3d384acf515f0fC5FaE2eE41A95b6905deF7")
	vecNow   = time.Unix(1740672089, 0)
)

func vecConfig() Config {
	return Config{PayTo: vecPayTo, PublicURL: "https://gw.example.com"}
}

func vecOffer(t testing.TB) *Offer {
	t.Helper()
	o, err := NewOffer(vecConfig(), Resource{
		ToolID: "extract/structured", Path: "/v1/tools/extract/structured",
		Description: "Extract structured JSON from text", Price: 10000,
	})
	if err != nil {
		t.Fatalf("NewOffer: %v", err)
	}
	return o
}

func readVector(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(strings.TrimSpace(string(b)))
}

// testKey returns a throwaway key derived from a label.
func testKey(label string) *ecdsa.PrivateKey {
	k, err := crypto.ToECDSA(crypto.Keccak256([]byte(label)))
	if err != nil {
		panic(err)
	}
	return k
}

// payArgs describes a payment to build and sign in a test.
type payArgs struct {
	version                 int
	key                     *ecdsa.PrivateKey // signer; nil: no signature
	from                    *common.Address   // default: address of key
	accepted                map[string]any    // v2 overrides of accepted fields
	scheme, network         string            // v1 top level
	to                      common.Address
	value                   string
	validAfter, validBefore int64
	nonce                   string // hex; default a fixed 32-byte nonce
	sigOverride             string // replaces the signature hex
	domain                  *common.Hash
}

// payHeader builds a base64 payment header for o signed as a describes.
func payHeader(t testing.TB, o *Offer, a payArgs) []byte {
	t.Helper()
	if a.version == 0 {
		a.version = 2
	}
	if a.nonce == "" {
		a.nonce = "0x" + strings.Repeat("ab", 32)
	}
	from := common.Address{}
	if a.key != nil {
		from = crypto.PubkeyToAddress(a.key.PublicKey)
	}
	if a.from != nil {
		from = *a.from
	}
	authz := map[string]string{
		"from": from.Hex(), "to": a.to.Hex(), "value": a.value,
		"validAfter": fmt.Sprint(a.validAfter), "validBefore": fmt.Sprint(a.validBefore), "nonce": a.nonce,
	}
	sig := a.sigOverride
	if sig == "" && a.key != nil {
		var auth Authorization
		auth.From, auth.To = from, a.to
		if err := auth.Value.SetFromDecimal(a.value); err != nil {
			t.Fatal(err)
		}
		auth.ValidAfter.SetUint64(uint64(a.validAfter))
		auth.ValidBefore.SetUint64(uint64(a.validBefore))
		copy(auth.Nonce[:], hexutil.MustDecode(a.nonce))
		dom := o.DomainSeparator()
		if a.domain != nil {
			dom = *a.domain
		}
		d := auth.Digest(dom)
		s, err := crypto.Sign(d[:], a.key)
		if err != nil {
			t.Fatal(err)
		}
		s[64] += 27
		sig = hexutil.Encode(s)
	}
	payload := map[string]any{"signature": sig, "authorization": authz}
	var obj map[string]any
	if a.version == 1 {
		obj = map[string]any{"x402Version": 1, "scheme": a.scheme, "network": a.network, "payload": payload}
	} else {
		var acc map[string]any
		if err := json.Unmarshal(o.Requirements(2), &acc); err != nil {
			t.Fatal(err)
		}
		for k, v := range a.accepted {
			acc[k] = v
		}
		obj = map[string]any{"x402Version": 2, "accepted": acc, "payload": payload,
			"resource": map[string]any{"url": o.ResourceURL()}}
	}
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(base64.StdEncoding.EncodeToString(raw))
}

// goodArgs is a valid v2 payment for o at vecNow by key.
func goodArgs(o *Offer, key *ecdsa.PrivateKey) payArgs {
	return payArgs{
		key: key, to: o.Config().PayTo, value: fmt.Sprint(int64(o.Resource().Price)),
		validAfter: vecNow.Unix() - 600, validBefore: vecNow.Unix() + 60,
	}
}

var _ = money.Micros(0)
