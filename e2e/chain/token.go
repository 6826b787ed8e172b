package chain

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/accounts/abi"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/toolgate/toolgate/money"
)

// USDCAddress is Base Sepolia's USDC address, where DeployUSDC places
// TestUSDC. Its EIP-712 domain is name "USDC", version "2".
var USDCAddress = common.HexToAddress("0x036CbD53842c5426634e7929541eC2318f3dCF7e")

// Multicall3Address is the canonical Multicall3 address, where
// DeployMulticall3 places TestMulticall3.
var Multicall3Address = common.HexToAddress("0xcA11bde05977b3631167028862bE2a173976CA11")

// The EIP-712 domain of TestUSDC (the same as Base Sepolia USDC).
const (
	TokenName    = "USDC"
	TokenVersion = "2"
)

// callTimeout bounds each RPC interaction of the helpers.
const callTimeout = 10 * time.Second

// ErrReverted is returned by Transact when the transaction was mined but
// reverted.
var ErrReverted = errors.New("chain: transaction reverted")

// Artifact is a compiled contract from e2e/contracts/<Name>.json, written by
// e2e/build-token.mjs.
type Artifact struct {
	ContractName     string          `json:"contractName"`
	SourceSHA256     string          `json:"sourceSha256"`
	Compiler         string          `json:"compiler"`
	RawABI           json.RawMessage `json:"abi"`
	Bytecode         hexutil.Bytes   `json:"bytecode"`
	DeployedBytecode hexutil.Bytes   `json:"deployedBytecode"`
	ABI              abi.ABI         `json:"-"`
}

var artifacts sync.Map // name -> *Artifact

// LoadArtifact reads and parses e2e/contracts/<name>.json ("TestUSDC",
// "TestMulticall3"). Results are cached; safe for concurrent use.
func LoadArtifact(t testing.TB, name string) *Artifact {
	t.Helper()
	if v, ok := artifacts.Load(name); ok {
		return v.(*Artifact)
	}
	d := RequireDeps(t)
	raw, err := os.ReadFile(filepath.Join(d.Dir, "contracts", name+".json"))
	if err != nil {
		t.Fatalf("read artifact: %v", err)
	}
	var art Artifact
	if err := json.Unmarshal(raw, &art); err != nil {
		t.Fatalf("decode artifact %s: %v", name, err)
	}
	if art.ABI, err = abi.JSON(bytes.NewReader(art.RawABI)); err != nil {
		t.Fatalf("parse ABI of %s: %v", name, err)
	}
	if len(art.DeployedBytecode) == 0 {
		t.Fatalf("artifact %s has no runtime bytecode", name)
	}
	v, _ := artifacts.LoadOrStore(name, &art)
	return v.(*Artifact)
}

// TokenABI returns the parsed ABI of TestUSDC.
func TokenABI(t testing.TB) abi.ABI {
	t.Helper()
	return LoadArtifact(t, "TestUSDC").ABI
}

// DeployUSDC places TestUSDC's runtime code at USDCAddress with
// anvil_setCode (the constructor never runs; the token needs none), and
// Multicall3 at its canonical address. Balances start at zero.
func DeployUSDC(t testing.TB, a *Anvil) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if err := a.SetCode(ctx, USDCAddress, LoadArtifact(t, "TestUSDC").DeployedBytecode); err != nil {
		t.Fatal(err)
	}
	DeployMulticall3(t, a)
}

// DeployMulticall3 places TestMulticall3 (tryAggregate, aggregate3) at the
// canonical Multicall3 address, which a fresh anvil lacks. The reference
// facilitator uses it to explain failed simulations.
func DeployMulticall3(t testing.TB, a *Anvil) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if err := a.SetCode(ctx, Multicall3Address, LoadArtifact(t, "TestMulticall3").DeployedBytecode); err != nil {
		t.Fatal(err)
	}
}

// Mint creates amount test USDC for to. The transaction is sent by Minter
// through anvil's unlocked-account eth_sendTransaction, so anvil assigns the
// nonce and concurrent Mint calls on one chain are safe.
func Mint(t testing.TB, a *Anvil, to common.Address, amount money.Micros) {
	t.Helper()
	if amount < 0 {
		t.Fatalf("mint: negative amount %d", amount)
	}
	data, err := TokenABI(t).Pack("mint", to, big.NewInt(int64(amount)))
	if err != nil {
		t.Fatalf("pack mint: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	var hash common.Hash
	tx := map[string]any{"from": Minter.Address, "to": USDCAddress, "data": hexutil.Bytes(data)}
	if err := a.rpc.CallContext(ctx, &hash, "eth_sendTransaction", tx); err != nil {
		t.Fatalf("mint %d to %s: %v", amount, to, err)
	}
	r, err := waitReceipt(ctx, a, hash)
	if err != nil {
		t.Fatalf("mint %d to %s: %v", amount, to, err)
	}
	if r.Status != types.ReceiptStatusSuccessful {
		t.Fatalf("mint %d to %s: %v (tx %s)", amount, to, ErrReverted, hash)
	}
}

// BalanceOf returns the TestUSDC balance of owner.
func BalanceOf(t testing.TB, a *Anvil, owner common.Address) money.Micros {
	t.Helper()
	var out *big.Int
	callToken(t, a, &out, "balanceOf", owner)
	if !out.IsInt64() {
		t.Fatalf("balance of %s does not fit in money.Micros: %s", owner, out)
	}
	return money.Micros(out.Int64())
}

// AuthorizationState reports whether the EIP-3009 nonce of authorizer has
// been used or canceled on chain.
func AuthorizationState(t testing.TB, a *Anvil, authorizer common.Address, nonce [32]byte) bool {
	t.Helper()
	var used bool
	callToken(t, a, &used, "authorizationState", authorizer, nonce)
	return used
}

// DomainSeparator returns TestUSDC's on-chain DOMAIN_SEPARATOR().
func DomainSeparator(t testing.TB, a *Anvil) [32]byte {
	t.Helper()
	var out [32]byte
	callToken(t, a, &out, "DOMAIN_SEPARATOR")
	return out
}

// callToken runs a view call on TestUSDC and decodes its single result
// into out (a pointer).
func callToken(t testing.TB, a *Anvil, out any, method string, args ...any) {
	t.Helper()
	tokenABI := TokenABI(t)
	data, err := tokenABI.Pack(method, args...)
	if err != nil {
		t.Fatalf("pack %s: %v", method, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	ret, err := a.eth.CallContract(ctx, ethereum.CallMsg{To: &USDCAddress, Data: data}, nil)
	if err != nil {
		t.Fatalf("call %s: %v", method, err)
	}
	vals, err := tokenABI.Unpack(method, ret)
	if err != nil || len(vals) != 1 {
		t.Fatalf("decode %s result %x: %v", method, ret, err)
	}
	abi.ConvertType(vals[0], out)
}

// PackBySignature ABI-encodes a call of the method whose canonical
// signature is sig, e.g. "transferWithAuthorization(address,...,bytes)";
// unlike abi.ABI.Pack it does not depend on how overloads were named.
func PackBySignature(contract abi.ABI, sig string, args ...any) ([]byte, error) {
	for _, m := range contract.Methods {
		if m.Sig == sig {
			in, err := m.Inputs.Pack(args...)
			if err != nil {
				return nil, fmt.Errorf("pack %s: %w", sig, err)
			}
			return append(append([]byte{}, m.ID...), in...), nil
		}
	}
	return nil, fmt.Errorf("pack %s: no such method", sig)
}

// Transact signs a dynamic-fee transaction from `from` to `to` with data,
// sends it and waits for its receipt. With gas 0 the gas is estimated, so a
// call that would revert fails before sending, with the revert reason in the
// error. A mined transaction that reverted returns its receipt and an error
// wrapping ErrReverted. Transactions from one account must not be sent
// concurrently.
func Transact(ctx context.Context, a *Anvil, from Account, to common.Address, data []byte, gas uint64) (*types.Receipt, error) {
	nonce, err := a.eth.PendingNonceAt(ctx, from.Address)
	if err != nil {
		return nil, fmt.Errorf("nonce: %w", err)
	}
	if gas == 0 {
		gas, err = a.eth.EstimateGas(ctx, ethereum.CallMsg{From: from.Address, To: &to, Data: data})
		if err != nil {
			return nil, fmt.Errorf("estimate gas: %w", err)
		}
	}
	tip, err := a.eth.SuggestGasTipCap(ctx)
	if err != nil {
		return nil, fmt.Errorf("gas tip: %w", err)
	}
	head, err := a.eth.HeaderByNumber(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("head: %w", err)
	}
	feeCap := new(big.Int).Add(tip, new(big.Int).Mul(head.BaseFee, big.NewInt(2)))
	tx := types.NewTx(&types.DynamicFeeTx{
		ChainID:   big.NewInt(ChainID),
		Nonce:     nonce,
		GasTipCap: tip,
		GasFeeCap: feeCap,
		Gas:       gas,
		To:        &to,
		Data:      data,
	})
	signed, err := types.SignTx(tx, types.LatestSignerForChainID(big.NewInt(ChainID)), from.Key)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	if err := a.eth.SendTransaction(ctx, signed); err != nil {
		return nil, fmt.Errorf("send: %w", err)
	}
	r, err := waitReceipt(ctx, a, signed.Hash())
	if err != nil {
		return nil, err
	}
	if r.Status != types.ReceiptStatusSuccessful {
		return r, fmt.Errorf("tx %s: %w", signed.Hash(), ErrReverted)
	}
	return r, nil
}

// waitReceipt polls for a receipt; anvil automines, so it is usually there
// at once.
func waitReceipt(ctx context.Context, a *Anvil, hash common.Hash) (*types.Receipt, error) {
	for {
		r, err := a.eth.TransactionReceipt(ctx, hash)
		if err == nil {
			return r, nil
		}
		if !errors.Is(err, ethereum.NotFound) {
			return nil, fmt.Errorf("receipt %s: %w", hash, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("receipt %s: %w", hash, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}
