package x402

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
)

func TestOffer_Verify(t *testing.T) {
	o := vecOffer(t)
	key := testKey("payer")
	other := testKey("someone else")
	payer := crypto.PubkeyToAddress(key.PublicKey)

	t.Run("VectorV2", func(t *testing.T) {
		p, err := Decode(readVector(t, "vector_v2.b64"), 2)
		if err != nil {
			t.Fatal(err)
		}
		v, err := o.Verify(p, vecNow, 6*time.Second)
		if err != nil || v.Status != StatusValid {
			t.Fatalf("got %v %q err=%v, want valid", v.Status, v.Reason, err)
		}
		if v.Payer != vecPayer.Hex() || v.Amount != 10000 || v.Key.From != vecPayer || v.Key.ChainID != 84532 {
			t.Errorf("got payer %s amount %d key %v, want %s 10000", v.Payer, v.Amount, v.Key, vecPayer.Hex())
		}
		if !v.ValidBefore.Equal(time.Unix(1740672149, 0)) {
			t.Errorf("validBefore: got %v, want 1740672149", v.ValidBefore.Unix())
		}
	})
	t.Run("VectorV1", func(t *testing.T) {
		p, err := Decode(readVector(t, "vector_v1.b64"), 1)
		if err != nil {
			t.Fatal(err)
		}
		v, _ := o.Verify(p, vecNow, 6*time.Second)
		if v.Status != StatusValid {
			t.Fatalf("got %v %q, want valid", v.Status, v.Reason)
		}
	})

	wrongDomain := DomainSeparator("USD Coin", "2", 84532, o.Config().Asset)
	tests := []struct {
		name       string
		mutate     func(*payArgs)
		minValid   time.Duration
		wantStatus Status
		wantReason string
	}{
		{name: "OK", mutate: func(*payArgs) {}, wantStatus: StatusValid},
		{name: "OKLowercaseAccepted", mutate: func(a *payArgs) {
			a.accepted = map[string]any{"payTo": strings.ToLower(vecPayTo.Hex()), "asset": strings.ToLower(o.Config().Asset.Hex())}
		}, wantStatus: StatusValid},
		{name: "WrongScheme", mutate: func(a *payArgs) { a.accepted = map[string]any{"scheme": "upto"} }, wantReason: ReasonScheme},
		{name: "WrongNetwork", mutate: func(a *payArgs) { a.accepted = map[string]any{"network": "eip155:8453"} }, wantReason: ReasonNetworkMismatch},
		{name: "WrongAcceptedAmount", mutate: func(a *payArgs) { a.accepted = map[string]any{"amount": "1"} }, wantReason: ReasonValueMismatch},
		{name: "WrongAcceptedPayTo", mutate: func(a *payArgs) { a.accepted = map[string]any{"payTo": payer.Hex()} }, wantReason: ReasonRecipientMismatch},
		{name: "WrongAsset", mutate: func(a *payArgs) {
			a.accepted = map[string]any{"asset": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"}
		}, wantReason: ReasonAssetMismatch},
		{name: "WrongAmount", mutate: func(a *payArgs) { a.value = "9999" }, wantReason: ReasonValueMismatch},
		{name: "AmountTooHigh", mutate: func(a *payArgs) { a.value = "10001" }, wantReason: ReasonValueMismatch},
		{name: "HugeAmount", mutate: func(a *payArgs) { a.value = "1" + strings.Repeat("0", 70) }, wantReason: ReasonValueMismatch},
		{name: "WrongPayTo", mutate: func(a *payArgs) { a.to = payer }, wantReason: ReasonRecipientMismatch},
		{name: "Expired", mutate: func(a *payArgs) { a.validBefore = vecNow.Unix() - 1 }, wantReason: ReasonValidBefore},
		{name: "TooShortValidity", mutate: func(a *payArgs) { a.validBefore = vecNow.Unix() + 5 }, minValid: 6 * time.Second, wantReason: ReasonValidBefore},
		{name: "ExactMinValidity", mutate: func(a *payArgs) { a.validBefore = vecNow.Unix() + 30 }, minValid: 30 * time.Second, wantStatus: StatusValid},
		{name: "NotYetValid", mutate: func(a *payArgs) { a.validAfter = vecNow.Unix() + 1 }, wantReason: ReasonValidAfter},
		{name: "ValidAfterNow", mutate: func(a *payArgs) { a.validAfter = vecNow.Unix() }, wantStatus: StatusValid},
		{name: "BadSigZero", mutate: func(a *payArgs) { a.sigOverride = "0x" + strings.Repeat("00", 64) + "1b" }, wantReason: ReasonSignature},
		{name: "BadSigHighS", mutate: func(a *payArgs) {
			a.sigOverride = "0x" + strings.Repeat("11", 32) + strings.Repeat("ff", 31) + "00" + "1b"
		}, wantReason: ReasonSignature},
		{name: "SigNotHex", mutate: func(a *payArgs) { a.sigOverride = "0xzz" }, wantReason: ReasonSignatureFormat},
		{name: "WrongDomainName", mutate: func(a *payArgs) { a.domain = &wrongDomain }, wantStatus: StatusNeedsRemote, wantReason: ReasonSignature},
		{name: "SigByAnotherKey", mutate: func(a *payArgs) { a.key = other; a.from = &payer }, wantStatus: StatusNeedsRemote, wantReason: ReasonSignature},
		{name: "SmartWalletLongSig", mutate: func(a *payArgs) { a.sigOverride = "0x" + strings.Repeat("12", 200) }, wantStatus: StatusNeedsRemote, wantReason: ReasonSignature},
		{name: "NonceTooShort", mutate: func(a *payArgs) { a.nonce = "0x" + strings.Repeat("ab", 31) }, wantReason: ReasonInvalidPayload},
		{name: "NonceTooLong", mutate: func(a *payArgs) { a.nonce = "0x" + strings.Repeat("ab", 33) }, wantReason: ReasonInvalidPayload},
		{name: "NoSignature", mutate: func(a *payArgs) { a.key = nil; a.from = &payer }, wantReason: ReasonMissingSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := goodArgs(o, key)
			tt.mutate(&a)
			p, err := Decode(payHeader(t, o, a), 2)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			v, err := o.Verify(p, vecNow, tt.minValid)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if v.Status != tt.wantStatus || v.Reason != tt.wantReason {
				t.Errorf("got %v %q, want %v %q", v.Status, v.Reason, tt.wantStatus, tt.wantReason)
			}
			if v.Status == StatusValid && v.Payer != payer.Hex() {
				t.Errorf("payer: got %s, want %s", v.Payer, payer.Hex())
			}
		})
	}

	t.Run("V1", func(t *testing.T) {
		for _, tt := range []struct {
			name, scheme, network, want string
		}{
			{"OK", "exact", "base-sepolia", ""},
			{"CAIP2Network", "exact", "eip155:84532", ReasonNetworkMismatch},
			{"OtherNetwork", "exact", "base", ReasonNetworkMismatch},
			{"Scheme", "upto", "base-sepolia", ReasonScheme},
		} {
			t.Run(tt.name, func(t *testing.T) {
				a := goodArgs(o, key)
				a.version, a.scheme, a.network = 1, tt.scheme, tt.network
				p, err := Decode(payHeader(t, o, a), 1)
				if err != nil {
					t.Fatal(err)
				}
				v, _ := o.Verify(p, vecNow, 0)
				if v.Reason != tt.want || (tt.want == "") != v.OK() {
					t.Errorf("got %v %q, want %q", v.Status, v.Reason, tt.want)
				}
			})
		}
	})
	t.Run("ErrNilPayment", func(t *testing.T) {
		if _, err := o.Verify(nil, vecNow, 0); !errors.Is(err, ErrNilPayment) {
			t.Errorf("got %v, want ErrNilPayment", err)
		}
	})
	t.Run("OtherOfferPrice", func(t *testing.T) {
		o2, err := NewOffer(vecConfig(), Resource{ToolID: "x", Path: "/x", Price: 20000})
		if err != nil {
			t.Fatal(err)
		}
		p, _ := Decode(payHeader(t, o, goodArgs(o, key)), 0)
		if v, _ := o2.Verify(p, vecNow, 0); v.Reason != ReasonValueMismatch {
			t.Errorf("got %q, want %q", v.Reason, ReasonValueMismatch)
		}
	})
	_ = common.Address{}
}
