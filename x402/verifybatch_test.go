package x402

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/toolgate/toolgate/e2e/chain"
	"github.com/toolgate/toolgate/money"
)

// countingTransport counts the HTTP requests sent to the node.
type countingTransport struct{ n atomic.Int64 }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return http.DefaultTransport.RoundTrip(r)
}

// sequentialBackend hides the JSON-RPC client of an *ethclient.Client, so
// that Verify reads one call at a time.
type sequentialBackend struct{ ChainBackend }

// TestChain_VerifyOneRoundTrip: local verification of an EOA payment is one
// request to the node (authorizationState, balanceOf and the simulated
// transfer in one batch), and the batched and one-by-one reads give the
// same answers for a valid payment, a used nonce, too small a balance and
// a bad signature, on a real anvil node.
func TestChain_VerifyOneRoundTrip(t *testing.T) {
	a := chain.Start(t)
	chain.DeployUSDC(t, a)
	chain.Mint(t, a, chain.Payer.Address, money.PerUSD)
	o := anvilOffer(t)
	ctx := context.Background()
	ct := &countingTransport{}
	rc, err := rpc.DialOptions(ctx, a.RPC(), rpc.WithHTTPClient(&http.Client{Transport: ct}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rc.Close)
	client := ethclient.NewClient(rc)
	batched := NewChain(client, chain.Accounts[3].Key)
	sequential := NewChain(sequentialBackend{client}, chain.Accounts[3].Key)

	used, _ := anvilPayment(t, o, chain.Payer, 10_000)
	if r, err := batched.Settle(ctx, used, o); err != nil || !r.Success {
		t.Fatalf("settle: %+v %v", r, err)
	}
	poor, _ := anvilPayment(t, o, chain.NewAccount(t), 10_000)
	badSig, _ := anvilPayment(t, o, chain.Payer, 10_000)
	badSig.Signature[10] ^= 0xff
	valid, _ := anvilPayment(t, o, chain.Payer, 10_000)
	if err := sequential.checkChain(ctx, 84532); err != nil { // its one-time chain id read
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		p      *Payment
		reason string
		reads  int64 // one by one: authorizationState, balanceOf, the transfer, until one refuses
	}{
		{"Valid", valid, "", 3},
		{"NonceUsed", used, ReasonNonceUsed, 1},
		{"InsufficientBalance", poor, ReasonInsufficientFunds, 2},
		{"BadSignature", badSig, ReasonSignature, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, c := range []struct {
				name  string
				chain *Chain
				trips int64
			}{{"batched", batched, 1}, {"sequential", sequential, tc.reads}} {
				before := ct.n.Load()
				vr, err := c.chain.Verify(ctx, tc.p, o)
				if err != nil || vr.Valid != (tc.reason == "") || vr.Reason != tc.reason {
					t.Errorf("%s: got %+v %v, want reason %q", c.name, vr, err, tc.reason)
				}
				if trips := ct.n.Load() - before; trips != c.trips {
					t.Errorf("%s: %d requests to the node, want %d", c.name, trips, c.trips)
				}
			}
		})
	}
}
