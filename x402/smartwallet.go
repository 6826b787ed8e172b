package x402

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/big"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/accounts/abi"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
)

// Smart-wallet reasons (x402-notes.md §3.4, §3.5).
const (
	// ReasonWalletDeployment: the ERC-6492 factory call that deploys the
	// payer's wallet fails (in simulation or on chain).
	ReasonWalletDeployment = "smart_wallet_deployment_failed"
	// ReasonUndeployedSmartWallet: an ERC-6492 payment from a wallet
	// without code, and Chain.DeployWallets is off.
	ReasonUndeployedSmartWallet = "invalid_exact_evm_payload_undeployed_smart_wallet"
)

// ERC6492Magic is the 32-byte suffix that marks an ERC-6492 signature:
// 0x6492 repeated 16 times.
var ERC6492Magic = [32]byte{
	0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92,
	0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92,
}

var (
	// ErrNotERC6492 is returned by DecodeERC6492 for a signature without
	// the ERC-6492 magic suffix.
	ErrNotERC6492 = errors.New("x402: not an ERC-6492 signature")
	// ErrMalformedERC6492 is returned by DecodeERC6492 for a signature with
	// the magic suffix whose body is not abi.encode(address, bytes, bytes).
	ErrMalformedERC6492 = errors.New("x402: malformed ERC-6492 signature")
)

// erc6492Args is the body of an ERC-6492 signature.
var erc6492Args = func() abi.Arguments {
	addr, _ := abi.NewType("address", "", nil)
	byt, _ := abi.NewType("bytes", "", nil)
	return abi.Arguments{{Type: addr}, {Type: byt}, {Type: byt}}
}()

// ERC6492Signature is a decoded ERC-6492 signature: the signature of a
// contract wallet plus the call that deploys the wallet.
type ERC6492Signature struct {
	// Factory is the contract to call with FactoryCalldata to deploy the
	// wallet.
	Factory common.Address
	// FactoryCalldata deploys the wallet when sent to Factory.
	FactoryCalldata []byte
	// Signature is the inner signature, checked by the deployed wallet
	// with EIP-1271.
	Signature []byte
}

// HasDeployment reports whether s carries deployment data (a non-zero
// factory and non-empty calldata).
func (s *ERC6492Signature) HasDeployment() bool {
	return s.Factory != (common.Address{}) && len(s.FactoryCalldata) > 0
}

// IsERC6492 reports whether sig ends with the ERC-6492 magic suffix.
func IsERC6492(sig []byte) bool {
	return len(sig) >= len(ERC6492Magic) && bytes.Equal(sig[len(sig)-len(ERC6492Magic):], ERC6492Magic[:])
}

// DecodeERC6492 splits sig = abi.encode(factory, factoryCalldata,
// innerSig) ‖ magic. It returns ErrNotERC6492 when the suffix is missing
// and an error wrapping ErrMalformedERC6492 when the body does not decode.
// The returned slices do not alias sig. Safe for concurrent use.
func DecodeERC6492(sig []byte) (ERC6492Signature, error) {
	if !IsERC6492(sig) {
		return ERC6492Signature{}, ErrNotERC6492
	}
	body := sig[:len(sig)-len(ERC6492Magic)]
	vals, err := erc6492Args.Unpack(body)
	if err != nil {
		return ERC6492Signature{}, fmt.Errorf("%w: %w", ErrMalformedERC6492, err)
	}
	if len(vals) != 3 {
		return ERC6492Signature{}, fmt.Errorf("%w: %d fields", ErrMalformedERC6492, len(vals))
	}
	factory, ok1 := vals[0].(common.Address)
	calldata, ok2 := vals[1].([]byte)
	inner, ok3 := vals[2].([]byte)
	if !ok1 || !ok2 || !ok3 {
		return ERC6492Signature{}, fmt.Errorf("%w: unexpected field types", ErrMalformedERC6492)
	}
	if len(inner) == 0 {
		return ERC6492Signature{}, fmt.Errorf("%w: empty inner signature", ErrMalformedERC6492)
	}
	return ERC6492Signature{Factory: factory,
		FactoryCalldata: bytes.Clone(calldata), Signature: bytes.Clone(inner)}, nil
}

// CodeReader is implemented by backends that can read contract code
// (*ethclient.Client does). Chain needs it for ERC-6492 signatures, to
// tell a deployed wallet from one still to deploy.
type CodeReader interface {
	CodeAt(ctx context.Context, account common.Address, blockNumber *big.Int) ([]byte, error)
}

// sigPlan is how to settle a signature: the signature to hand the token
// and, for an undeployed ERC-6492 wallet, the deployment to run first.
type sigPlan struct {
	sig    []byte
	deploy *ERC6492Signature
}

// planSignature unwraps an ERC-6492 signature. A wrapped signature of a
// wallet that has code already, or whose inner signature is an EOA
// signature of digest by `from` itself, is replaced by its inner
// signature (the deployment is skipped); for a wallet without code the
// plan carries the deployment, unless DeployWallets is off (then reason is
// ReasonUndeployedSmartWallet). Any other signature is used as is. reason
// is ReasonSignatureFormat when the wrapper is malformed.
func (c *Chain) planSignature(ctx context.Context, from common.Address, digest common.Hash, sig []byte) (plan sigPlan, reason string, err error) {
	if !IsERC6492(sig) {
		return sigPlan{sig: sig}, "", nil
	}
	w, err := DecodeERC6492(sig)
	if err != nil {
		return sigPlan{}, ReasonSignatureFormat, nil
	}
	if !w.HasDeployment() {
		return sigPlan{sig: w.Signature}, "", nil
	}
	if signer, ok := recoverEOA(digest, w.Signature); ok && signer == from {
		return sigPlan{sig: w.Signature}, "", nil
	}
	deployed, err := c.hasCode(ctx, from)
	if err != nil {
		return sigPlan{}, "", err
	}
	if deployed {
		return sigPlan{sig: w.Signature}, "", nil
	}
	if !c.DeployWallets {
		return sigPlan{}, ReasonUndeployedSmartWallet, nil
	}
	return sigPlan{sig: w.Signature, deploy: &w}, "", nil
}

// errNoCodeReader is wrapped when the backend cannot read code.
var errNoCodeReader = errors.New("backend cannot read contract code (no CodeAt)")

func (c *Chain) hasCode(ctx context.Context, addr common.Address) (bool, error) {
	cr, ok := c.backend.(CodeReader)
	if !ok {
		return false, fmt.Errorf("%w: ERC-6492: %w", ErrChain, errNoCodeReader)
	}
	code, err := cr.CodeAt(ctx, addr, nil)
	if err != nil {
		return false, fmt.Errorf("%w: code at %s: %w", ErrChain, addr.Hex(), err)
	}
	return len(code) > 0, nil
}

// simulateDeployAndTransfer checks an undeployed ERC-6492 wallet's payment
// with eth_call and no state override: first the factory call alone, then
// a deployless contract creation (deploylessInitcode) that runs the
// factory call and the transfer in one simulated transaction, so the
// token checks the inner signature against the freshly deployed wallet.
// A refusal by the node returns a reason; err means no decision.
func (c *Chain) simulateDeployAndTransfer(ctx context.Context, w *ERC6492Signature, asset common.Address, transfer []byte) (reason, message string, err error) {
	factory := w.Factory
	if _, err := c.backend.CallContract(ctx, ethereum.CallMsg{From: c.from, To: &factory, Data: w.FactoryCalldata}, nil); err != nil {
		if isRPCError(err) {
			return ReasonWalletDeployment, "factory call: " + revertText(err), nil
		}
		return "", "", fmt.Errorf("%w: simulate factory: %w", ErrChain, err)
	}
	msg := ethereum.CallMsg{From: c.from, Data: deploylessInitcode(factory, w.FactoryCalldata, asset, transfer)}
	if _, err := c.backend.CallContract(ctx, msg, nil); err != nil {
		if isRPCError(err) {
			return transferReason(err, ReasonSimulationFailed), revertText(err), nil
		}
		return "", "", fmt.Errorf("%w: simulate deploy and transfer: %w", ErrChain, err)
	}
	return "", "", nil
}

// deployWallet sends the ERC-6492 factory call from the relayer and waits
// for its receipt. It succeeds when `from` has code afterwards (also when
// someone else deployed it meanwhile). A failure that leaves the wallet
// undeployed returns ReasonWalletDeployment; nothing reached the token, so
// no funds moved and the caller may release the nonce. err means no
// decision (the deployment transaction may or may not have been sent; no
// funds moved either way).
func (c *Chain) deployWallet(ctx context.Context, from common.Address, w *ERC6492Signature) (reason, message string, err error) {
	factory := w.Factory
	undeployed := func(msg string) (string, string, error) {
		if ok, err := c.hasCode(ctx, from); err != nil {
			return "", "", err
		} else if ok {
			return "", "", nil
		}
		return ReasonWalletDeployment, msg, nil
	}
	gas, err := c.backend.EstimateGas(ctx, ethereum.CallMsg{From: c.from, To: &factory, Data: w.FactoryCalldata})
	if err != nil {
		if isRPCError(err) {
			return undeployed("factory call: " + revertText(err))
		}
		return "", "", fmt.Errorf("%w: estimate gas of wallet deployment: %w", ErrChain, err)
	}
	gas += gas / 5
	mk, err := c.feeTemplate(ctx)
	if err != nil {
		return "", "", err
	}
	tx, err := c.sendTx(ctx, mk, gas, factory, w.FactoryCalldata)
	switch {
	case tx == nil:
		return "", "", err
	case err != nil && !isRPCError(err):
		return "", "", fmt.Errorf("%w: send wallet deployment %s: %w", ErrChain, tx.Hash().Hex(), err)
	case err != nil:
		return undeployed("send wallet deployment: " + err.Error())
	}
	rcpt, err := c.waitReceipt(ctx, tx.Hash())
	if err != nil {
		return undeployed(fmt.Sprintf("wallet deployment %s: %v", tx.Hash().Hex(), err))
	}
	if rcpt.Status != types.ReceiptStatusSuccessful {
		return undeployed(fmt.Sprintf("wallet deployment %s reverted", tx.Hash().Hex()))
	}
	return undeployed(fmt.Sprintf("wallet deployment %s left no code at %s", tx.Hash().Hex(), from.Hex()))
}

// deploylessPrelude is EVM init code that, run as a contract creation
// (eth_call without `to`), calls a factory and then a token, and reverts
// with the token's revert data if the token call fails. The creation
// returns empty code, so nothing is deployed even if it were mined. The
// code is followed by its arguments, which it reads back with CODECOPY:
//
//	word factory | word token | word len(factoryCalldata) | factoryCalldata | tokenCalldata
//
// Written by hand; offsets are checked by TestDeploylessPrelude_Layout.
var deploylessPrelude = []byte{
	0x38,       // 00 CODESIZE
	0x60, 0x00, // 01 PUSH1 0
	0x60, 0x00, // 03 PUSH1 0
	0x39,       // 05 CODECOPY           mem[0:] = code ‖ args
	0x60, 0x00, // 06 PUSH1 0            retLength
	0x60, 0x00, // 08 PUSH1 0            retOffset
	0x60, deploylessArgs + 64, // 0a PUSH1 len1 slot
	0x51,                      // 0c MLOAD              argsLength = len1
	0x60, deploylessArgs + 96, // 0d PUSH1              argsOffset = factoryCalldata
	0x60, 0x00, // 0f PUSH1 0            value
	0x60, deploylessArgs, // 11 PUSH1 factory slot
	0x51,       // 13 MLOAD              factory
	0x5a,       // 14 GAS
	0xf1,       // 15 CALL
	0x60, 0x1d, // 16 PUSH1 ok1
	0x57,       // 18 JUMPI
	0x60, 0x00, // 19 PUSH1 0
	0x80,       // 1b DUP1
	0xfd,       // 1c REVERT             factory failed: empty revert
	0x5b,       // 1d JUMPDEST ok1
	0x60, 0x00, // 1e PUSH1 0            retLength
	0x60, 0x00, // 20 PUSH1 0            retOffset
	0x60, deploylessArgs + 64, // 22 PUSH1 len1 slot
	0x51,                      // 24 MLOAD
	0x60, deploylessArgs + 96, // 25 PUSH1
	0x01,       // 27 ADD                off2 = args+96+len1
	0x80,       // 28 DUP1
	0x38,       // 29 CODESIZE
	0x03,       // 2a SUB                len2 = codesize - off2
	0x90,       // 2b SWAP1              off2 len2
	0x60, 0x00, // 2c PUSH1 0            value
	0x60, deploylessArgs + 32, // 2e PUSH1 token slot
	0x51,       // 30 MLOAD              token
	0x5a,       // 31 GAS
	0xf1,       // 32 CALL
	0x3d,       // 33 RETURNDATASIZE
	0x60, 0x00, // 34 PUSH1 0
	0x60, 0x00, // 36 PUSH1 0
	0x3e,       // 38 RETURNDATACOPY     mem[0:] = returndata
	0x60, 0x40, // 39 PUSH1 ok2
	0x57,       // 3b JUMPI
	0x3d,       // 3c RETURNDATASIZE
	0x60, 0x00, // 3d PUSH1 0
	0xfd,       // 3f REVERT             token failed: its revert data
	0x5b,       // 40 JUMPDEST ok2
	0x60, 0x00, // 41 PUSH1 0
	0x80, // 43 DUP1
	0xf3, // 44 RETURN             empty runtime code
}

// deploylessArgs is len(deploylessPrelude): where the arguments start.
const deploylessArgs = 0x45

// deploylessInitcode returns the init code that simulates "call factory
// with factoryCalldata, then call token with tokenCalldata" in one eth_call.
func deploylessInitcode(factory common.Address, factoryCalldata []byte, token common.Address, tokenCalldata []byte) []byte {
	out := make([]byte, 0, len(deploylessPrelude)+96+len(factoryCalldata)+len(tokenCalldata))
	out = append(out, deploylessPrelude...)
	out = append(out, common.LeftPadBytes(factory[:], 32)...)
	out = append(out, common.LeftPadBytes(token[:], 32)...)
	out = append(out, common.LeftPadBytes(new(big.Int).SetInt64(int64(len(factoryCalldata))).Bytes(), 32)...)
	out = append(out, factoryCalldata...)
	return append(out, tokenCalldata...)
}
