package x402

import (
	"context"
	"fmt"
	"math/big"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/rpc"
)

// rpcBackend is implemented by backends that expose their JSON-RPC client
// (*ethclient.Client does): Verify then sends its three reads as one
// batch, one round trip to the node instead of three.
type rpcBackend interface {
	Client() *rpc.Client
}

// verifyBatch is Verify's reads of a payment whose signature needs no
// deployment (an EOA's, a deployed wallet's): authorizationState, balanceOf
// and the simulated transfer in one JSON-RPC batch, judged in that order
// so that the reasons are those of the sequential checks. ok is false when
// the backend cannot batch (the caller then reads one by one).
func (c *Chain) verifyBatch(ctx context.Context, asset common.Address, a *Authorization, transfer []byte, res VerifyResult) (_ VerifyResult, ok bool, err error) {
	rb, isRPC := c.backend.(rpcBackend)
	if !isRPC || rb.Client() == nil {
		return res, false, nil
	}
	stateData, err := eip3009ABI.Pack("authorizationState", a.From, a.Nonce)
	if err != nil {
		return res, true, fmt.Errorf("%w: pack: %w", ErrChain, err)
	}
	balData, err := eip3009ABI.Pack("balanceOf", a.From)
	if err != nil {
		return res, true, fmt.Errorf("%w: pack: %w", ErrChain, err)
	}
	call := func(from *common.Address, data []byte) map[string]any {
		m := map[string]any{"to": asset, "data": hexutil.Bytes(data)}
		if from != nil {
			m["from"] = *from
		}
		return m
	}
	var state, bal, sim hexutil.Bytes
	batch := []rpc.BatchElem{
		{Method: "eth_call", Args: []any{call(nil, stateData), "latest"}, Result: &state},
		{Method: "eth_call", Args: []any{call(nil, balData), "latest"}, Result: &bal},
		{Method: "eth_call", Args: []any{call(&c.from, transfer), "latest"}, Result: &sim},
	}
	if err := rb.Client().BatchCallContext(ctx, batch); err != nil {
		return res, true, fmt.Errorf("%w: verify batch: %w", ErrChain, err)
	}
	if err := batch[0].Error; err != nil {
		if isRPCError(err) {
			res.Reason, res.Message = ReasonNotEIP3009, err.Error()
			return res, true, nil
		}
		return res, true, fmt.Errorf("%w: authorizationState: %w", ErrChain, err)
	}
	vals, uerr := eip3009ABI.Unpack("authorizationState", state)
	if uerr != nil || len(vals) != 1 {
		return res, true, fmt.Errorf("%w: authorizationState: bad return %x", ErrChain, []byte(state))
	}
	if used, _ := vals[0].(bool); used {
		res.Reason = ReasonNonceUsed
		return res, true, nil
	}
	if err := batch[1].Error; err != nil {
		return res, true, fmt.Errorf("%w: balanceOf: %w", ErrChain, err)
	}
	vals, uerr = eip3009ABI.Unpack("balanceOf", bal)
	if uerr != nil || len(vals) != 1 {
		return res, true, fmt.Errorf("%w: balanceOf: bad return %x", ErrChain, []byte(bal))
	}
	if b, _ := vals[0].(*big.Int); b == nil || b.Cmp(a.Value.ToBig()) < 0 {
		res.Reason = ReasonInsufficientFunds
		return res, true, nil
	}
	if err := batch[2].Error; err != nil {
		if isRPCError(err) {
			res.Reason, res.Message = transferReason(err, ReasonSimulationFailed), revertText(err)
			return res, true, nil
		}
		return res, true, fmt.Errorf("%w: simulate: %w", ErrChain, err)
	}
	res.Valid = true
	return res, true, nil
}
