package x402

import (
	"context"
	"errors"
	"math/big"
	"strings"
	"sync"
	"testing"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
)

func TestEIP3009ABI_Selectors(t *testing.T) {
	tests := []struct{ name, method, want string }{
		{"vrs", "transferWithAuthorization", "0xe3ee160e"},
		{"bytes", "transferWithAuthorization0", "0xcf092995"},
		{"authorizationState", "authorizationState", "0xe94a0102"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := hexutil.Encode(eip3009ABI.Methods[tt.method].ID); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
	if got, want := authorizationUsedTopic.Hex(), "0x98de503528ee59b575ef0c0a2576a82497bfc029a5685b209e9ec333479b10a5"; got != want {
		t.Errorf("AuthorizationUsed topic: got %s, want %s", got, want)
	}
}

func TestTransferCalldata(t *testing.T) {
	p, err := Decode(readVector(t, "vector_v2.b64"), 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("VRS", func(t *testing.T) {
		data, err := transferCalldata(&p.Authorization, p.Signature)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) != 4+9*32 || hexutil.Encode(data[:4]) != "0xe3ee160e" {
			t.Fatalf("got %d bytes selector %x, want 292 bytes 0xe3ee160e", len(data), data[:4])
		}
		if v := data[4+6*32+31]; v != 28 {
			t.Errorf("v: got %d, want 28", v)
		}
		if !strings.EqualFold(hexutil.Encode(data[4+7*32:4+8*32]), hexutil.Encode(p.Signature[:32])) {
			t.Errorf("r not the signature's first 32 bytes")
		}
	})
	t.Run("VZeroOne", func(t *testing.T) {
		sig := append([]byte(nil), p.Signature...)
		sig[64] = 1
		data, _ := transferCalldata(&p.Authorization, sig)
		if v := data[4+6*32+31]; v != 28 {
			t.Errorf("v: got %d, want 28", v)
		}
	})
	t.Run("Bytes", func(t *testing.T) {
		data, err := transferCalldata(&p.Authorization, make([]byte, 100))
		if err != nil {
			t.Fatal(err)
		}
		if hexutil.Encode(data[:4]) != "0xcf092995" {
			t.Errorf("selector: got %x, want 0xcf092995", data[:4])
		}
	})
}

type rpcErr struct {
	msg  string
	data any
}

func (e rpcErr) Error() string  { return e.msg }
func (e rpcErr) ErrorCode() int { return 3 }
func (e rpcErr) ErrorData() any { return e.data }

func TestTransferReason(t *testing.T) {
	// Error(string) revert data for "FiatTokenV2: invalid signature".
	revert := "0x08c379a0" + "0000000000000000000000000000000000000000000000000000000000000020" +
		"000000000000000000000000000000000000000000000000000000000000001e" +
		"46696174546f6b656e56323a20696e76616c6964207369676e61747572650000"
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"Expired", rpcErr{msg: "execution reverted: FiatTokenV2: authorization is expired"}, ReasonValidBefore},
		{"NotYet", rpcErr{msg: "execution reverted: FiatTokenV2: authorization is not yet valid"}, ReasonValidAfter},
		{"Used", rpcErr{msg: "execution reverted: FiatTokenV2: authorization is used or canceled"}, ReasonNonceUsed},
		{"Balance", rpcErr{msg: "execution reverted: ERC20: transfer amount exceeds balance"}, ReasonInsufficientFunds},
		{"SigFromData", rpcErr{msg: "execution reverted", data: revert}, ReasonSignature},
		{"Other", rpcErr{msg: "execution reverted"}, ReasonTransferFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := transferReason(tt.err, ReasonTransferFailed); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
	if !isRPCError(rpcErr{}) || isRPCError(errors.New("dial tcp: refused")) {
		t.Error("isRPCError misclassifies")
	}
}

// nonceBackend is a function-field ChainBackend for the relayer nonce
// manager: it executes nothing, it only checks that every broadcast uses
// the next nonce. It is not a chain; settlement itself is tested against
// anvil (TestChain_Anvil).
type nonceBackend struct {
	mu        sync.Mutex
	next      uint64 // node's pending nonce
	sent      []uint64
	rejectOne bool // reject the first send with "nonce too low" after bumping next
	receipts  map[common.Hash]*types.Receipt
	logs      []*types.Log // put in every receipt
}

func (b *nonceBackend) ChainID(context.Context) (*big.Int, error)   { return big.NewInt(84532), nil }
func (b *nonceBackend) BlockNumber(context.Context) (uint64, error) { return 1, nil }
func (b *nonceBackend) HeaderByNumber(context.Context, *big.Int) (*types.Header, error) {
	return &types.Header{BaseFee: big.NewInt(1e9)}, nil
}
func (b *nonceBackend) CallContract(context.Context, ethereum.CallMsg, *big.Int) ([]byte, error) {
	return make([]byte, 32), nil
}
func (b *nonceBackend) EstimateGas(context.Context, ethereum.CallMsg) (uint64, error) {
	return 80000, nil
}
func (b *nonceBackend) PendingNonceAt(context.Context, common.Address) (uint64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.next, nil
}
func (b *nonceBackend) SuggestGasTipCap(context.Context) (*big.Int, error) { return big.NewInt(1), nil }
func (b *nonceBackend) SuggestGasPrice(context.Context) (*big.Int, error)  { return big.NewInt(1), nil }
func (b *nonceBackend) SendTransaction(_ context.Context, tx *types.Transaction) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rejectOne {
		b.rejectOne = false
		b.next++ // someone else used our nonce
		return rpcErr{msg: "nonce too low"}
	}
	if tx.Nonce() != b.next {
		return rpcErr{msg: "nonce mismatch"}
	}
	b.next++
	b.sent = append(b.sent, tx.Nonce())
	b.receipts[tx.Hash()] = &types.Receipt{Status: types.ReceiptStatusSuccessful, TxHash: tx.Hash(), Logs: b.logs}
	return nil
}
func (b *nonceBackend) TransactionReceipt(_ context.Context, h common.Hash) (*types.Receipt, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if r, ok := b.receipts[h]; ok {
		return r, nil
	}
	return nil, ethereum.NotFound
}
func (b *nonceBackend) FilterLogs(context.Context, ethereum.FilterQuery) ([]types.Log, error) {
	return nil, nil
}

func TestChain_SettleNonceManager(t *testing.T) {
	o := vecOffer(t)
	p, err := Decode(readVector(t, "vector_v2.b64"), 2)
	if err != nil {
		t.Fatal(err)
	}
	used := &types.Log{Address: o.Config().Asset, Topics: []common.Hash{authorizationUsedTopic,
		common.BytesToHash(p.Authorization.From[:]), common.Hash(p.Authorization.Nonce)}}
	t.Run("NoEventIsFailure", func(t *testing.T) {
		// A successful receipt without the token's AuthorizationUsed event
		// (e.g. the asset address has no code) is not a payment.
		c := NewChain(&nonceBackend{receipts: map[common.Hash]*types.Receipt{}}, testKey("relayer"))
		c.PollInterval = 1
		r, err := c.Settle(context.Background(), p, o)
		if err != nil || r.Success || r.Reason != ReasonTransactionFailed {
			t.Errorf("got %+v %v, want %s", r, err, ReasonTransactionFailed)
		}
	})
	b := &nonceBackend{next: 7, rejectOne: true, receipts: map[common.Hash]*types.Receipt{}, logs: []*types.Log{used}}
	c := NewChain(b, testKey("relayer"))
	c.PollInterval = 1
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := c.Settle(context.Background(), p, o)
			if err != nil {
				errs <- err
			} else if !r.Success || r.Transaction == "" || r.Network != "eip155:84532" {
				errs <- errors.New("got " + r.Reason + ", want success")
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(b.sent) != n {
		t.Fatalf("got %d broadcasts, want %d", len(b.sent), n)
	}
	for i, got := range b.sent {
		if want := uint64(8 + i); got != want { // 7 was taken by "someone else"
			t.Errorf("broadcast %d: got nonce %d, want %d", i, got, want)
		}
	}
}
