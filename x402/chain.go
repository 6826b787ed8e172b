package x402

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/accounts/abi"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/rpc"
)

// ErrChain wraps RPC failures of the Chain settler that leave no decision.
var ErrChain = errors.New("x402: chain")

// eip3009ABI holds the token functions the Chain settler uses. The bytes
// overload of transferWithAuthorization is named transferWithAuthorization0
// by the abi package.
var eip3009ABI = mustABI(`[
{"type":"function","name":"transferWithAuthorization","stateMutability":"nonpayable","inputs":[
 {"name":"from","type":"address"},{"name":"to","type":"address"},{"name":"value","type":"uint256"},
 {"name":"validAfter","type":"uint256"},{"name":"validBefore","type":"uint256"},{"name":"nonce","type":"bytes32"},
 {"name":"v","type":"uint8"},{"name":"r","type":"bytes32"},{"name":"s","type":"bytes32"}],"outputs":[]},
{"type":"function","name":"transferWithAuthorization","stateMutability":"nonpayable","inputs":[
 {"name":"from","type":"address"},{"name":"to","type":"address"},{"name":"value","type":"uint256"},
 {"name":"validAfter","type":"uint256"},{"name":"validBefore","type":"uint256"},{"name":"nonce","type":"bytes32"},
 {"name":"signature","type":"bytes"}],"outputs":[]},
{"type":"function","name":"authorizationState","stateMutability":"view","inputs":[
 {"name":"authorizer","type":"address"},{"name":"nonce","type":"bytes32"}],"outputs":[{"name":"","type":"bool"}]},
{"type":"function","name":"balanceOf","stateMutability":"view","inputs":[
 {"name":"account","type":"address"}],"outputs":[{"name":"","type":"uint256"}]}
]`)

// authorizationUsedTopic is AuthorizationUsed(address indexed, bytes32 indexed).
var authorizationUsedTopic = crypto.Keccak256Hash([]byte("AuthorizationUsed(address,bytes32)"))

func mustABI(s string) abi.ABI {
	a, err := abi.JSON(strings.NewReader(s))
	if err != nil {
		panic(err)
	}
	return a
}

// ChainBackend is the part of *ethclient.Client the Chain settler uses.
type ChainBackend interface {
	ChainID(ctx context.Context) (*big.Int, error)
	BlockNumber(ctx context.Context) (uint64, error)
	HeaderByNumber(ctx context.Context, number *big.Int) (*types.Header, error)
	CallContract(ctx context.Context, msg ethereum.CallMsg, block *big.Int) ([]byte, error)
	EstimateGas(ctx context.Context, msg ethereum.CallMsg) (uint64, error)
	PendingNonceAt(ctx context.Context, account common.Address) (uint64, error)
	SuggestGasTipCap(ctx context.Context) (*big.Int, error)
	SuggestGasPrice(ctx context.Context) (*big.Int, error)
	SendTransaction(ctx context.Context, tx *types.Transaction) error
	TransactionReceipt(ctx context.Context, hash common.Hash) (*types.Receipt, error)
	FilterLogs(ctx context.Context, q ethereum.FilterQuery) ([]types.Log, error)
}

// Chain settles payments itself: a relayer key submits
// transferWithAuthorization to the token and pays the gas. Create it with
// NewChain; it is safe for concurrent use (broadcasts are serialised by a
// relayer nonce manager, receipt waits are not).
type Chain struct {
	backend ChainBackend
	relayer *ecdsa.PrivateKey
	from    common.Address

	// ReceiptTimeout bounds the wait for a receipt after broadcast,
	// independent of the caller's ctx; default 30 s. On expiry Settle
	// returns a pending result.
	ReceiptTimeout time.Duration
	// PollInterval is the receipt polling period; default 500 ms.
	PollInterval time.Duration
	// LogLookback is how many blocks Reconcile searches for the
	// AuthorizationUsed event; default 5000.
	LogLookback uint64
	// DeployWallets lets Settle deploy the wallet of an ERC-6492 payment
	// (the relayer pays the factory call's gas); default true. When false,
	// such payments from wallets without code are refused with
	// ReasonUndeployedSmartWallet.
	DeployWallets bool

	chainMu sync.Mutex
	chainID *big.Int // set once by checkChain; read-only afterwards

	mu      sync.Mutex // relayer nonce manager
	nonce   uint64
	nonceOK bool
}

var _ Settler = (*Chain)(nil)

// NewChain returns a settler that sends transactions through b signed by
// relayer. Set the exported fields before first use.
func NewChain(b ChainBackend, relayer *ecdsa.PrivateKey) *Chain {
	return &Chain{backend: b, relayer: relayer, from: crypto.PubkeyToAddress(relayer.PublicKey),
		ReceiptTimeout: 30 * time.Second, PollInterval: 500 * time.Millisecond, LogLookback: 5000,
		DeployWallets: true}
}

// Relayer returns the address that pays gas.
func (c *Chain) Relayer() common.Address { return c.from }

func (c *Chain) checkChain(ctx context.Context, want uint64) error {
	c.chainMu.Lock()
	defer c.chainMu.Unlock()
	if c.chainID == nil {
		id, err := c.backend.ChainID(ctx)
		if err != nil {
			return fmt.Errorf("%w: chain id: %w", ErrChain, err)
		}
		c.chainID = id
	}
	if !c.chainID.IsUint64() || c.chainID.Uint64() != want {
		return fmt.Errorf("%w: node is on chain %s, offer wants %d", ErrChain, c.chainID, want)
	}
	return nil
}

// transferCalldata packs transferWithAuthorization: the v,r,s overload for
// 65-byte signatures, the bytes overload otherwise.
func transferCalldata(a *Authorization, sig []byte) ([]byte, error) {
	value, after, before := a.Value.ToBig(), a.ValidAfter.ToBig(), a.ValidBefore.ToBig()
	if len(sig) == 65 {
		v := sig[64]
		if v < 27 {
			v += 27
		}
		var r, s [32]byte
		copy(r[:], sig[:32])
		copy(s[:], sig[32:64])
		return eip3009ABI.Pack("transferWithAuthorization", a.From, a.To, value, after, before, a.Nonce, v, r, s)
	}
	return eip3009ABI.Pack("transferWithAuthorization0", a.From, a.To, value, after, before, a.Nonce, sig)
}

// Verify checks p on chain: authorizationState unused, balanceOf ≥ value,
// and an eth_call of the transfer from the relayer succeeds. It also
// verifies smart-wallet signatures, since the token checks them: EIP-1271
// as is, and ERC-6492 by unwrapping the inner signature for a deployed
// wallet, or, for a wallet without code, by simulating the factory call
// and then "factory call + transfer" as one deployless eth_call. ERC-6492
// needs a backend that implements CodeReader.
func (c *Chain) Verify(ctx context.Context, p *Payment, o *Offer) (VerifyResult, error) {
	if p.Scheme == SchemeUpto {
		// Direct settlement knows EIP-3009 only; upto needs a facilitator.
		return VerifyResult{Reason: ReasonUptoScheme, Payer: p.Permit2.From.Hex()}, nil
	}
	if err := c.checkChain(ctx, o.chainID); err != nil {
		return VerifyResult{}, err
	}
	a := &p.Authorization
	res := VerifyResult{Payer: a.From.Hex()}
	if !IsERC6492(p.Signature) {
		// The signature is handed to the token as is: the three reads go
		// in one batch where the backend can.
		data, err := transferCalldata(a, p.Signature)
		if err != nil {
			return VerifyResult{}, fmt.Errorf("%w: pack: %w", ErrChain, err)
		}
		if r, ok, err := c.verifyBatch(ctx, o.cfg.Asset, a, data, res); ok {
			if err != nil {
				return VerifyResult{}, err
			}
			return r, nil
		}
	}
	used, err := c.authorizationState(ctx, o.cfg.Asset, a.From, a.Nonce)
	if err != nil {
		if isRPCError(err) {
			res.Reason, res.Message = ReasonNotEIP3009, err.Error()
			return res, nil
		}
		return VerifyResult{}, err
	}
	if used {
		res.Reason = ReasonNonceUsed
		return res, nil
	}
	bal, err := c.balanceOf(ctx, o.cfg.Asset, a.From)
	if err != nil {
		return VerifyResult{}, err
	}
	if bal.Cmp(a.Value.ToBig()) < 0 {
		res.Reason = ReasonInsufficientFunds
		return res, nil
	}
	plan, reason, err := c.planSignature(ctx, a.From, a.Digest(o.domain), p.Signature)
	if err != nil {
		return VerifyResult{}, err
	}
	if reason != "" {
		res.Reason = reason
		return res, nil
	}
	data, err := transferCalldata(a, plan.sig)
	if err != nil {
		return VerifyResult{}, fmt.Errorf("%w: pack: %w", ErrChain, err)
	}
	asset := o.cfg.Asset
	if plan.deploy != nil {
		// Undeployed ERC-6492 wallet: simulate its deployment and the
		// transfer together.
		reason, msg, err := c.simulateDeployAndTransfer(ctx, plan.deploy, asset, data)
		if err != nil {
			return VerifyResult{}, err
		}
		if reason != "" {
			res.Reason, res.Message = reason, msg
			return res, nil
		}
		res.Valid = true
		return res, nil
	}
	if _, err := c.backend.CallContract(ctx, ethereum.CallMsg{From: c.from, To: &asset, Data: data}, nil); err != nil {
		if isRPCError(err) {
			res.Reason, res.Message = transferReason(err, ReasonSimulationFailed), revertText(err)
			return res, nil
		}
		return VerifyResult{}, fmt.Errorf("%w: simulate: %w", ErrChain, err)
	}
	res.Valid = true
	return res, nil
}

// Settle submits the transfer and waits for its receipt (ReceiptTimeout).
// For an ERC-6492 signature of a wallet without code it first simulates
// deployment plus transfer (as Verify does; a failure is returned without
// sending anything), then sends the factory call and waits for its
// receipt; a failed deployment is a failure with ReasonWalletDeployment
// (no funds moved). The transfer then carries the inner signature, as it
// does for a deployed wallet.
// Success requires a successful receipt carrying the token's
// AuthorizationUsed event. A revert found by gas estimation is a failure
// without broadcast. A broadcast whose receipt does not arrive in time
// gives a pending result with the transaction hash (reconcile with
// Reconcile). When sending fails in transport, the broadcast may or may not
// have happened: the error wraps ErrOutcomeUnknown and the result is still
// pending with the transaction hash.
func (c *Chain) Settle(ctx context.Context, p *Payment, o *Offer) (SettleResult, error) {
	if c.relayer == nil {
		return SettleResult{}, ErrReadOnlyChain
	}
	if p.Scheme == SchemeUpto {
		return SettleResult{Reason: ReasonUptoScheme, Payer: p.Permit2.From.Hex(), Network: o.cfg.Network}, nil
	}
	if err := c.checkChain(ctx, o.chainID); err != nil {
		return SettleResult{}, err
	}
	a := &p.Authorization
	res := SettleResult{Payer: a.From.Hex(), Network: o.Network(p.Version)}
	plan, reason, err := c.planSignature(ctx, a.From, a.Digest(o.domain), p.Signature)
	if err != nil {
		return SettleResult{}, err
	}
	if reason != "" {
		res.Reason = reason
		return res, nil
	}
	data, err := transferCalldata(a, plan.sig)
	if err != nil {
		return SettleResult{}, fmt.Errorf("%w: pack: %w", ErrChain, err)
	}
	asset := o.cfg.Asset
	if plan.deploy != nil {
		// Undeployed ERC-6492 wallet: simulate first, so the relayer pays
		// no deployment for a payment that cannot settle; then deploy (its
		// own transaction, receipt awaited) and transfer with the inner
		// signature.
		reason, msg, err := c.simulateDeployAndTransfer(ctx, plan.deploy, asset, data)
		if err == nil && reason == "" {
			reason, msg, err = c.deployWallet(ctx, a.From, plan.deploy)
		}
		if err != nil {
			return SettleResult{}, err
		}
		if reason != "" {
			res.Reason, res.Message = reason, msg
			return res, nil
		}
	}
	gas, err := c.backend.EstimateGas(ctx, ethereum.CallMsg{From: c.from, To: &asset, Data: data})
	if err != nil {
		if isRPCError(err) {
			res.Reason, res.Message = transferReason(err, ReasonTransferFailed), revertText(err)
			return res, nil
		}
		return SettleResult{}, fmt.Errorf("%w: estimate gas: %w", ErrChain, err)
	}
	gas += gas / 5
	mk, err := c.feeTemplate(ctx)
	if err != nil {
		return SettleResult{}, err
	}
	tx, err := c.sendTx(ctx, mk, gas, asset, data)
	switch {
	case err == nil:
	case tx == nil: // nothing was sent (relayer nonce, signing)
		return SettleResult{}, err
	case !isRPCError(err):
		// Transport failure: the broadcast may or may not have happened.
		res.Pending, res.Reason, res.Transaction = true, ReasonSettlementPending, tx.Hash().Hex()
		return res, fmt.Errorf("%w: send %s: %w", ErrOutcomeUnknown, tx.Hash().Hex(), err)
	default: // the node refused it
		res.Reason, res.Message = transferReason(err, ReasonTransferFailed), err.Error()
		return res, nil
	}

	res.Transaction = tx.Hash().Hex()
	rcpt, err := c.waitReceipt(ctx, tx.Hash())
	if err != nil {
		res.Pending, res.Reason, res.Message = true, ReasonSettlementPending, err.Error()
		return res, nil
	}
	if rcpt.Status == types.ReceiptStatusSuccessful {
		if !usedInReceipt(rcpt, asset, a.From, a.Nonce) {
			// A call to an address without code "succeeds" too.
			res.Reason, res.Message = ReasonTransactionFailed, "no AuthorizationUsed event from the asset"
			return res, nil
		}
		res.Success = true
		return res, nil
	}
	// Reverted: perhaps someone else submitted the same authorization first
	// (the funds then reached PayTo all the same).
	k := NonceKey{ChainID: o.chainID, Asset: asset, From: a.From, Nonce: a.Nonce}
	rec, err := c.Reconcile(ctx, k, common.Hash{})
	if err == nil && rec.Success {
		rec.Network = res.Network
		return rec, nil
	}
	res.Reason = ReasonTransactionFailed
	return res, nil
}

// Reconcile finds out what became of an authorization whose settlement
// was left pending: tx (zero if unknown) is the transaction we sent. It
// reports success when the authorization is used on chain (with the
// transaction that used it, when found), failure when our transaction
// reverted and the authorization is still unused, and pending otherwise.
// The gateway decides expiry: an unused authorization past validBefore can
// no longer be settled by anyone.
func (c *Chain) Reconcile(ctx context.Context, k NonceKey, tx common.Hash) (SettleResult, error) {
	if err := c.checkChain(ctx, k.ChainID); err != nil {
		return SettleResult{}, err
	}
	res := SettleResult{Payer: k.From.Hex(), Network: fmt.Sprintf("eip155:%d", k.ChainID)}
	var rcpt *types.Receipt
	if tx != (common.Hash{}) {
		r, err := c.backend.TransactionReceipt(ctx, tx)
		switch {
		case err == nil:
			rcpt = r
		case !errors.Is(err, ethereum.NotFound):
			return SettleResult{}, fmt.Errorf("%w: receipt: %w", ErrChain, err)
		}
		if rcpt != nil && rcpt.Status == types.ReceiptStatusSuccessful {
			res.Success, res.Transaction = true, tx.Hex()
			return res, nil
		}
	}
	var used bool
	var err error
	if k.Asset == Permit2Address {
		// An upto payment: Permit2 keeps its nonce, and logs no use.
		used, err = c.permit2NonceUsed(ctx, k.From, k.Nonce)
	} else {
		used, err = c.authorizationState(ctx, k.Asset, k.From, k.Nonce)
	}
	if err != nil {
		return SettleResult{}, err
	}
	if used {
		res.Success = true
		if k.Asset == Permit2Address {
			return res, nil
		}
		if h, ok := c.findUse(ctx, k); ok {
			res.Transaction = h.Hex()
		}
		return res, nil
	}
	if rcpt != nil {
		res.Reason, res.Transaction = ReasonTransactionFailed, tx.Hex()
		return res, nil
	}
	res.Pending, res.Reason = true, ReasonSettlementPending
	if tx != (common.Hash{}) {
		res.Transaction = tx.Hex()
	}
	return res, nil
}

// usedInReceipt reports whether r carries the token's AuthorizationUsed
// event for (from, nonce).
func usedInReceipt(r *types.Receipt, asset, from common.Address, nonce [32]byte) bool {
	for _, l := range r.Logs {
		if l.Address == asset && len(l.Topics) == 3 && l.Topics[0] == authorizationUsedTopic &&
			l.Topics[1] == common.BytesToHash(from[:]) && l.Topics[2] == common.Hash(nonce) {
			return true
		}
	}
	return false
}

// findUse searches recent blocks for the AuthorizationUsed event of k.
func (c *Chain) findUse(ctx context.Context, k NonceKey) (common.Hash, bool) {
	head, err := c.backend.BlockNumber(ctx)
	if err != nil {
		return common.Hash{}, false
	}
	from := uint64(0)
	if head > c.LogLookback {
		from = head - c.LogLookback
	}
	logs, err := c.backend.FilterLogs(ctx, ethereum.FilterQuery{
		FromBlock: new(big.Int).SetUint64(from), Addresses: []common.Address{k.Asset},
		Topics: [][]common.Hash{{authorizationUsedTopic}, {common.BytesToHash(k.From[:])}, {common.Hash(k.Nonce)}},
	})
	if err != nil || len(logs) == 0 {
		return common.Hash{}, false
	}
	return logs[len(logs)-1].TxHash, true
}

func (c *Chain) authorizationState(ctx context.Context, asset, from common.Address, nonce [32]byte) (bool, error) {
	data, err := eip3009ABI.Pack("authorizationState", from, nonce)
	if err != nil {
		return false, err
	}
	out, err := c.backend.CallContract(ctx, ethereum.CallMsg{To: &asset, Data: data}, nil)
	if err != nil {
		return false, fmt.Errorf("%w: authorizationState: %w", ErrChain, err)
	}
	vals, err := eip3009ABI.Unpack("authorizationState", out)
	if err != nil || len(vals) != 1 {
		return false, fmt.Errorf("%w: authorizationState: bad return %x", ErrChain, out)
	}
	used, _ := vals[0].(bool)
	return used, nil
}

// permit2ABI is the nonce bitmap view of Permit2.
var permit2ABI = mustABI(`[{"type":"function","name":"nonceBitmap","stateMutability":"view","inputs":[
 {"name":"owner","type":"address"},{"name":"word","type":"uint256"}],"outputs":[{"name":"","type":"uint256"}]}]`)

// permit2NonceUsed reports whether Permit2 has spent owner's unordered
// nonce (bit nonce&0xff of word nonce>>8 of its nonceBitmap).
func (c *Chain) permit2NonceUsed(ctx context.Context, owner common.Address, nonce [32]byte) (bool, error) {
	n := new(big.Int).SetBytes(nonce[:])
	data, err := permit2ABI.Pack("nonceBitmap", owner, new(big.Int).Rsh(n, 8))
	if err != nil {
		return false, err
	}
	out, err := c.backend.CallContract(ctx, ethereum.CallMsg{To: &Permit2Address, Data: data}, nil)
	if err != nil {
		return false, fmt.Errorf("%w: nonceBitmap: %w", ErrChain, err)
	}
	if len(out) != 32 {
		return false, fmt.Errorf("%w: nonceBitmap: bad return %x", ErrChain, out)
	}
	return new(big.Int).SetBytes(out).Bit(int(nonce[31])) == 1, nil
}

func (c *Chain) balanceOf(ctx context.Context, asset, who common.Address) (*big.Int, error) {
	data, _ := eip3009ABI.Pack("balanceOf", who)
	out, err := c.backend.CallContract(ctx, ethereum.CallMsg{To: &asset, Data: data}, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: balanceOf: %w", ErrChain, err)
	}
	vals, err := eip3009ABI.Unpack("balanceOf", out)
	if err != nil || len(vals) != 1 {
		return nil, fmt.Errorf("%w: balanceOf: bad return %x", ErrChain, out)
	}
	b, _ := vals[0].(*big.Int)
	if b == nil {
		return new(big.Int), nil
	}
	return b, nil
}

// feeTemplate returns a builder of transactions priced from the current
// head: EIP-1559 (fee cap 2 × base fee + tip) when the chain has a base
// fee, legacy otherwise.
func (c *Chain) feeTemplate(ctx context.Context) (func(nonce, gas uint64, to common.Address, data []byte) types.TxData, error) {
	head, err := c.backend.HeaderByNumber(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: head: %w", ErrChain, err)
	}
	if head.BaseFee != nil {
		tip, err := c.backend.SuggestGasTipCap(ctx)
		if err != nil {
			return nil, fmt.Errorf("%w: tip: %w", ErrChain, err)
		}
		feeCap := new(big.Int).Add(new(big.Int).Mul(head.BaseFee, big.NewInt(2)), tip)
		return func(nonce, gas uint64, to common.Address, data []byte) types.TxData {
			return &types.DynamicFeeTx{ChainID: c.chainID, Nonce: nonce, GasTipCap: tip, GasFeeCap: feeCap, Gas: gas, To: &to, Data: data}
		}, nil
	}
	price, err := c.backend.SuggestGasPrice(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: gas price: %w", ErrChain, err)
	}
	return func(nonce, gas uint64, to common.Address, data []byte) types.TxData {
		return &types.LegacyTx{Nonce: nonce, GasPrice: price, Gas: gas, To: &to, Data: data}
	}, nil
}

// waitReceipt polls for the receipt of h until ReceiptTimeout, detached
// from the caller's cancellation.
func (c *Chain) waitReceipt(ctx context.Context, h common.Hash) (*types.Receipt, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.ReceiptTimeout)
	defer cancel()
	t := time.NewTicker(c.PollInterval)
	defer t.Stop()
	for {
		r, err := c.backend.TransactionReceipt(ctx, h)
		if err == nil {
			return r, nil
		}
		if !errors.Is(err, ethereum.NotFound) && ctx.Err() != nil {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("receipt %s: %w", h.Hex(), ctx.Err())
		case <-t.C:
		}
	}
}

// isRPCError reports whether err is an answer of the node (a JSON-RPC
// error such as a revert), as opposed to a transport failure.
func isRPCError(err error) bool {
	var re rpc.Error
	return errors.As(err, &re)
}

func isNonceError(err error) bool {
	m := strings.ToLower(err.Error())
	return strings.Contains(m, "nonce too low") || strings.Contains(m, "already known") ||
		strings.Contains(m, "replacement transaction underpriced") || strings.Contains(m, "nonce too high")
}

// revertText returns the node's message plus a decoded Error(string)
// revert reason when one is attached.
func revertText(err error) string {
	msg := err.Error()
	var de rpc.DataError
	if errors.As(err, &de) {
		if s, ok := de.ErrorData().(string); ok {
			if b, herr := hexutil.Decode(s); herr == nil {
				if reason, uerr := abi.UnpackRevert(b); uerr == nil && !strings.Contains(msg, reason) {
					msg += ": " + reason
				}
			}
		}
	}
	return msg
}

// transferReason maps a token revert to an x402 reason (x402-notes.md §3.5).
func transferReason(err error, fallback string) string {
	m := strings.ToLower(revertText(err))
	switch {
	case strings.Contains(m, "authorization is expired"):
		return ReasonValidBefore
	case strings.Contains(m, "authorization is not yet valid"):
		return ReasonValidAfter
	case strings.Contains(m, "authorization is used"), strings.Contains(m, "authorizationalreadyused"):
		return ReasonNonceUsed
	case strings.Contains(m, "transfer amount exceeds balance"), strings.Contains(m, "insufficient balance"):
		return ReasonInsufficientFunds
	case strings.Contains(m, "invalid signature"):
		return ReasonSignature
	}
	return fallback
}

// sendTx signs a transaction built by mk and broadcasts it under the
// relayer nonce manager (one attempt more after a nonce error). It returns
// (tx, nil) when the node accepted it; (nil, err) when it failed before
// sending; (tx, err) with isRPCError(err) when the node refused it (not
// broadcast); and (tx, err) otherwise when sending failed in transport
// (the broadcast may have happened).
func (c *Chain) sendTx(ctx context.Context, mk func(nonce, gas uint64, to common.Address, data []byte) types.TxData,
	gas uint64, to common.Address, data []byte) (*types.Transaction, error) {
	signer := types.LatestSignerForChainID(c.chainID)
	c.mu.Lock()
	defer c.mu.Unlock()
	for attempt := 0; ; attempt++ {
		if !c.nonceOK {
			n, err := c.backend.PendingNonceAt(ctx, c.from)
			if err != nil {
				return nil, fmt.Errorf("%w: relayer nonce: %w", ErrChain, err)
			}
			c.nonce, c.nonceOK = n, true
		}
		tx, err := types.SignTx(types.NewTx(mk(c.nonce, gas, to, data)), signer, c.relayer)
		if err != nil {
			return nil, fmt.Errorf("%w: sign: %w", ErrChain, err)
		}
		err = c.backend.SendTransaction(ctx, tx)
		if err == nil {
			c.nonce++
			return tx, nil
		}
		c.nonceOK = false // resync from the node next time
		if !isRPCError(err) || attempt > 0 || !isNonceError(err) {
			return tx, err
		}
	}
}
