package x402

import (
	"bytes"
	"context"
	"errors"
	"math/big"
	"slices"
	"sync"
	"testing"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
)

// word returns x as a 32-byte big-endian ABI word.
func word(x int) []byte { return common.LeftPadBytes(big.NewInt(int64(x)).Bytes(), 32) }

// padded returns b right-padded with zeros to a multiple of 32 bytes.
func padded(b []byte) []byte {
	out := append([]byte{}, b...)
	for len(out)%32 != 0 {
		out = append(out, 0)
	}
	return out
}

// wrap6492 encodes abi.encode(factory, calldata, inner) ‖ magic by hand
// (head: address, offset, offset; tail: length-prefixed padded bytes), so
// the decoder is not checked against the same encoder.
func wrap6492(factory common.Address, calldata, inner []byte) []byte {
	off1 := 3 * 32
	off2 := off1 + 32 + len(padded(calldata))
	var b []byte
	b = append(b, common.LeftPadBytes(factory[:], 32)...)
	b = append(b, word(off1)...)
	b = append(b, word(off2)...)
	b = append(b, word(len(calldata))...)
	b = append(b, padded(calldata)...)
	b = append(b, word(len(inner))...)
	b = append(b, padded(inner)...)
	return append(b, ERC6492Magic[:]...)
}

func TestDecodeERC6492(t *testing.T) {
	factory := common.HexToAddress("0x6492000000000000000000000000000000006492")
	calldata := bytes.Repeat([]byte{0xab}, 68)
	inner := bytes.Repeat([]byte{0xcd}, 65)
	good := wrap6492(factory, calldata, inner)
	if !bytes.Equal(ERC6492Magic[:2], []byte{0x64, 0x92}) || !bytes.Equal(ERC6492Magic[30:], []byte{0x64, 0x92}) {
		t.Fatalf("magic: got %x, want 0x6492…6492", ERC6492Magic)
	}
	wrongMagic := bytes.Clone(good)
	wrongMagic[len(wrongMagic)-1] = 0x93
	badOffset := bytes.Clone(good)
	copy(badOffset[32:64], word(1<<20)) // calldata offset far beyond the body
	tests := []struct {
		name    string
		sig     []byte
		wantErr error
		wantDep bool
	}{
		{name: "Good", sig: good, wantDep: true},
		{name: "NoFactory", sig: wrap6492(common.Address{}, nil, inner)},
		{name: "EOASignature", sig: inner, wantErr: ErrNotERC6492},
		{name: "Empty", sig: nil, wantErr: ErrNotERC6492},
		{name: "MagicOnly", sig: ERC6492Magic[:], wantErr: ErrMalformedERC6492},
		{name: "WrongMagic", sig: wrongMagic, wantErr: ErrNotERC6492},
		{name: "TruncatedBody", sig: append(bytes.Clone(good[:len(good)-32-40]), ERC6492Magic[:]...), wantErr: ErrMalformedERC6492},
		{name: "TruncatedMagic", sig: good[:len(good)-1], wantErr: ErrNotERC6492},
		{name: "BadOffset", sig: badOffset, wantErr: ErrMalformedERC6492},
		{name: "EmptyInner", sig: wrap6492(factory, calldata, nil), wantErr: ErrMalformedERC6492},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeERC6492(tt.sig)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %+v %v, want %v", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got %v, want no error", err)
			}
			if got.HasDeployment() != tt.wantDep {
				t.Errorf("HasDeployment: got %t, want %t", got.HasDeployment(), tt.wantDep)
			}
			if !bytes.Equal(got.Signature, inner) {
				t.Errorf("inner signature: got %x, want %x", got.Signature, inner)
			}
			if tt.wantDep && (got.Factory != factory || !bytes.Equal(got.FactoryCalldata, calldata)) {
				t.Errorf("deployment: got %s %x, want %s %x", got.Factory, got.FactoryCalldata, factory, calldata)
			}
		})
	}
	t.Run("NoAliasing", func(t *testing.T) {
		sig := bytes.Clone(good)
		got, err := DecodeERC6492(sig)
		if err != nil {
			t.Fatal(err)
		}
		for i := range sig {
			sig[i] = 0
		}
		if !bytes.Equal(got.Signature, inner) || !bytes.Equal(got.FactoryCalldata, calldata) {
			t.Errorf("decoded fields changed with the input: got %x / %x", got.FactoryCalldata, got.Signature)
		}
	})
}

func TestIsERC6492(t *testing.T) {
	tests := []struct {
		name string
		sig  []byte
		want bool
	}{
		{name: "Magic", sig: append(make([]byte, 10), ERC6492Magic[:]...), want: true},
		{name: "EOA", sig: make([]byte, 65)},
		{name: "Short", sig: ERC6492Magic[1:]},
		{name: "MagicNotAtEnd", sig: append(bytes.Clone(ERC6492Magic[:]), 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsERC6492(tt.sig); got != tt.want {
				t.Errorf("got %t, want %t", got, tt.want)
			}
		})
	}
}

// TestDeploylessPrelude_Layout checks the hand-assembled init code: its
// length is where the arguments start, both jump targets are JUMPDESTs and
// every PUSH1 operand that addresses the arguments is in range.
func TestDeploylessPrelude_Layout(t *testing.T) {
	p := deploylessPrelude
	if len(p) != deploylessArgs {
		t.Fatalf("prelude length: got %#x, want deploylessArgs %#x", len(p), deploylessArgs)
	}
	var jumps []int
	for i := 0; i < len(p); i++ {
		if p[i] == 0x60 { // PUSH1
			if i+2 < len(p) && p[i+2] == 0x57 { // … JUMPI
				jumps = append(jumps, int(p[i+1]))
			}
			i++
			continue
		}
		if p[i] >= 0x61 && p[i] <= 0x7f {
			t.Fatalf("offset %#x: unexpected PUSH%d", i, p[i]-0x5f)
		}
	}
	if !slices.Equal(jumps, []int{0x1d, 0x40}) {
		t.Fatalf("jump targets: got %x, want [1d 40]", jumps)
	}
	for _, j := range jumps {
		if p[j] != 0x5b {
			t.Errorf("jump target %#x: got opcode %#x, want JUMPDEST", j, p[j])
		}
	}
	code := deploylessInitcode(common.HexToAddress("0x01"), []byte{1, 2, 3}, common.HexToAddress("0x02"), []byte{4, 5})
	if got, want := len(code), deploylessArgs+96+5; got != want {
		t.Errorf("init code length: got %d, want %d", got, want)
	}
	if code[deploylessArgs+31] != 1 || code[deploylessArgs+63] != 2 || code[deploylessArgs+95] != 3 {
		t.Errorf("argument words: got %x", code[deploylessArgs:deploylessArgs+96])
	}
	if !bytes.Equal(code[deploylessArgs+96:], []byte{1, 2, 3, 4, 5}) {
		t.Errorf("calldata: got %x, want 0102030405", code[deploylessArgs+96:])
	}
}

// codeBackend is nonceBackend plus CodeAt: the payer's wallet gets code
// once a transaction to the factory has been broadcast. It records the
// recipient of every broadcast in order.
type codeBackend struct {
	*nonceBackend
	factory  common.Address
	mu       sync.Mutex
	deployed bool
	to       []common.Address
}

func (b *codeBackend) CodeAt(context.Context, common.Address, *big.Int) ([]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.deployed {
		return []byte{0x00}, nil
	}
	return nil, nil
}

func (b *codeBackend) SendTransaction(ctx context.Context, tx *types.Transaction) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.nonceBackend.SendTransaction(ctx, tx); err != nil {
		return err
	}
	b.to = append(b.to, *tx.To())
	if *tx.To() == b.factory {
		b.deployed = true
	}
	return nil
}

// TestChain_SettleERC6492NonceManager settles ERC-6492 payments of one
// undeployed wallet concurrently: the deployment goes first, every
// transfer follows it, and the relayer's nonces stay gapless across both
// kinds of transaction.
func TestChain_SettleERC6492NonceManager(t *testing.T) {
	o := vecOffer(t)
	p, err := Decode(readVector(t, "vector_v2.b64"), 2)
	if err != nil {
		t.Fatal(err)
	}
	factory := common.HexToAddress("0x6492000000000000000000000000000000006492")
	// Not an EOA signature by `from` (that would skip the deployment).
	p.Signature = wrap6492(factory, []byte{0xde, 0xad, 0xbe, 0xef}, bytes.Repeat([]byte{0x11}, 65))
	used := &types.Log{Address: o.Config().Asset, Topics: []common.Hash{authorizationUsedTopic,
		common.BytesToHash(p.Authorization.From[:]), common.Hash(p.Authorization.Nonce)}}
	b := &codeBackend{factory: factory, nonceBackend: &nonceBackend{next: 3, receipts: map[common.Hash]*types.Receipt{}, logs: []*types.Log{used}}}
	c := NewChain(b, testKey("relayer"))
	c.PollInterval = 1

	const n = 10
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r, err := c.Settle(context.Background(), p, o); err != nil || !r.Success {
				t.Errorf("got %+v %v, want success", r, err)
			}
		}()
	}
	wg.Wait()
	deploys, transfers := 0, 0
	for i, to := range b.to {
		switch to {
		case factory:
			deploys++
		case o.Config().Asset:
			if deploys == 0 {
				t.Errorf("broadcast %d: transfer before any deployment", i)
			}
			transfers++
		default:
			t.Errorf("broadcast %d: got recipient %s", i, to)
		}
	}
	if deploys < 1 || transfers != n {
		t.Errorf("got %d deployments and %d transfers, want ≥ 1 and %d", deploys, transfers, n)
	}
	for i, got := range b.sent {
		if want := uint64(3 + i); got != want {
			t.Errorf("broadcast %d: got nonce %d, want %d", i, got, want)
		}
	}
	t.Run("NoCodeReader", func(t *testing.T) {
		// (Verify stops earlier here: the fake reports a zero balance.)
		c := NewChain(&nonceBackend{receipts: map[common.Hash]*types.Receipt{}}, testKey("relayer"))
		if _, err := c.Settle(context.Background(), p, o); !errors.Is(err, ErrChain) {
			t.Errorf("settle: got %v, want an error wrapping ErrChain", err)
		}
	})
}
