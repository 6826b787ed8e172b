package x402

import (
	"math/big"
	"testing"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/common/math"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"
)

func TestDomainSeparator_KnownAnswer(t *testing.T) {
	tests := []struct {
		name, token, version string
		chainID              uint64
		asset                string
		want                 string
	}{
		{"base-sepolia USDC", "USDC", "2", 84532, "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
			"0x71f17a3b2ff373b803d70a5a07c046c1a2bc8e89c09ef722fcb047abe94c9818"},
		{"base USDC", "USD Coin", "2", 8453, "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
			"0x02fa7265e7c5d81118673727957699e4d68f74cd74b7db77da710fe8a2c7834f"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := DomainSeparator(tt.token, tt.version, tt.chainID, common.HexToAddress(tt.asset))
			if got.Hex() != tt.want {
				t.Errorf("got %s, want %s", got.Hex(), tt.want)
			}
		})
	}
	if got, want := transferTypeHash.Hex(), "0x7c7c6cdb67a18743f49ec6fa9b35f50d52ed05cbed4cc592e13b44501c1a2267"; got != want {
		t.Errorf("typehash: got %s, want %s", got, want)
	}
}

func TestAuthorization_Digest(t *testing.T) {
	o := vecOffer(t)
	p, err := Decode(readVector(t, "vector_v2.b64"), 2)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	a := &p.Authorization
	t.Run("KnownAnswer", func(t *testing.T) {
		got := a.Digest(o.DomainSeparator())
		if want := "0x5c80a531986e344baf32e086580dd6f14396febfae3b651251219a75f93a5351"; got.Hex() != want {
			t.Errorf("digest: got %s, want %s", got.Hex(), want)
		}
		signer, ok := recoverEOA(got, p.Signature)
		if !ok || signer != vecPayer {
			t.Errorf("recovered: got %s (ok=%v), want %s", signer.Hex(), ok, vecPayer.Hex())
		}
	})
	t.Run("MatchesApitypes", func(t *testing.T) {
		td := apitypes.TypedData{
			Types: apitypes.Types{
				"EIP712Domain": {{Name: "name", Type: "string"}, {Name: "version", Type: "string"},
					{Name: "chainId", Type: "uint256"}, {Name: "verifyingContract", Type: "address"}},
				"TransferWithAuthorization": {{Name: "from", Type: "address"}, {Name: "to", Type: "address"},
					{Name: "value", Type: "uint256"}, {Name: "validAfter", Type: "uint256"},
					{Name: "validBefore", Type: "uint256"}, {Name: "nonce", Type: "bytes32"}},
			},
			PrimaryType: "TransferWithAuthorization",
			Domain: apitypes.TypedDataDomain{Name: "USDC", Version: "2",
				ChainId: (*math.HexOrDecimal256)(big.NewInt(84532)), VerifyingContract: o.Config().Asset.Hex()},
			Message: apitypes.TypedDataMessage{
				"from": a.From.Hex(), "to": a.To.Hex(), "value": a.Value.Dec(),
				"validAfter": a.ValidAfter.Dec(), "validBefore": a.ValidBefore.Dec(),
				"nonce": hexutil.Encode(a.Nonce[:]),
			},
		}
		want, _, err := apitypes.TypedDataAndHash(td)
		if err != nil {
			t.Fatal(err)
		}
		if got := a.Digest(o.DomainSeparator()); got != common.BytesToHash(want) {
			t.Errorf("got %s, want %x", got.Hex(), want)
		}
		sh := a.StructHash()
		wantSH, err := td.HashStruct(td.PrimaryType, td.Message)
		if err != nil {
			t.Fatal(err)
		}
		if sh != common.BytesToHash(wantSH) {
			t.Errorf("struct hash: got %s, want %x", sh.Hex(), wantSH)
		}
	})
}
