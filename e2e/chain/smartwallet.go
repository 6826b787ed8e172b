package chain

import (
	"context"
	"testing"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/accounts/abi"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
)

// WalletFactoryAddress is where DeployWalletFactory places
// TestWalletFactory (an arbitrary address with no meaning elsewhere).
var WalletFactoryAddress = common.HexToAddress("0x6492000000000000000000000000000000006492")

// WalletDeployer sends the deployment transactions of DeployWallet through
// anvil's unlocked-account eth_sendTransaction (anvil assigns the nonce, so
// concurrent calls are safe). Reserved for DeployWallet.
var WalletDeployer = Accounts[8]

// erc6492Magic is the ERC-6492 signature suffix: 0x6492 sixteen times.
var erc6492Magic = common.FromHex("0x6492649264926492649264926492649264926492649264926492649264926492")

// DeployWalletFactory places TestWalletFactory's runtime code at
// WalletFactoryAddress with anvil_setCode (it has no constructor state).
// Wallets it creates are TestSmartWallet: EIP-1271 accounts that accept
// 65-byte signatures by their owner over the checked hash.
func DeployWalletFactory(t testing.TB, a *Anvil) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if err := a.SetCode(ctx, WalletFactoryAddress, LoadArtifact(t, "TestWalletFactory").DeployedBytecode); err != nil {
		t.Fatal(err)
	}
}

// WalletDeployCalldata returns the factory call that deploys the wallet of
// (owner, salt): TestWalletFactory.deploy(owner, salt).
func WalletDeployCalldata(t testing.TB, owner common.Address, salt [32]byte) []byte {
	t.Helper()
	data, err := LoadArtifact(t, "TestWalletFactory").ABI.Pack("deploy", owner, salt)
	if err != nil {
		t.Fatalf("pack deploy: %v", err)
	}
	return data
}

// WalletAddress returns the counterfactual address of the wallet of
// (owner, salt), from the factory's walletAddress view.
func WalletAddress(t testing.TB, a *Anvil, owner common.Address, salt [32]byte) common.Address {
	t.Helper()
	fac := LoadArtifact(t, "TestWalletFactory").ABI
	data, err := fac.Pack("walletAddress", owner, salt)
	if err != nil {
		t.Fatalf("pack walletAddress: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	ret, err := a.eth.CallContract(ctx, ethereum.CallMsg{To: &WalletFactoryAddress, Data: data}, nil)
	if err != nil {
		t.Fatalf("call walletAddress: %v", err)
	}
	vals, err := fac.Unpack("walletAddress", ret)
	if err != nil || len(vals) != 1 {
		t.Fatalf("decode walletAddress %x: %v", ret, err)
	}
	return vals[0].(common.Address)
}

// DeployWallet deploys the wallet of (owner, salt) through the factory and
// returns its address; it fails the test unless the address has code
// afterwards.
func DeployWallet(t testing.TB, a *Anvil, owner common.Address, salt [32]byte) common.Address {
	t.Helper()
	w := WalletAddress(t, a, owner, salt)
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	var hash common.Hash
	tx := map[string]any{"from": WalletDeployer.Address, "to": WalletFactoryAddress,
		"data": hexutil.Bytes(WalletDeployCalldata(t, owner, salt))}
	if err := a.rpc.CallContext(ctx, &hash, "eth_sendTransaction", tx); err != nil {
		t.Fatalf("deploy wallet of %s: %v", owner, err)
	}
	r, err := waitReceipt(ctx, a, hash)
	if err != nil {
		t.Fatalf("deploy wallet of %s: %v", owner, err)
	}
	if r.Status != types.ReceiptStatusSuccessful {
		t.Fatalf("deploy wallet of %s: %v (tx %s)", owner, ErrReverted, hash)
	}
	if !HasCode(t, a, w) {
		t.Fatalf("deploy wallet of %s: no code at %s", owner, w)
	}
	return w
}

// HasCode reports whether addr has contract code on the chain.
func HasCode(t testing.TB, a *Anvil, addr common.Address) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	code, err := a.eth.CodeAt(ctx, addr, nil)
	if err != nil {
		t.Fatalf("code at %s: %v", addr, err)
	}
	return len(code) > 0
}

// WrapERC6492 returns the ERC-6492 form of a contract wallet's signature:
// abi.encode(factory, factoryCalldata, sig) followed by the 32-byte magic
// suffix.
func WrapERC6492(factory common.Address, factoryCalldata, sig []byte) []byte {
	addrT, _ := abi.NewType("address", "", nil)
	bytesT, _ := abi.NewType("bytes", "", nil)
	body, err := abi.Arguments{{Type: addrT}, {Type: bytesT}, {Type: bytesT}}.Pack(factory, factoryCalldata, sig)
	if err != nil {
		panic("chain: pack ERC-6492 signature: " + err.Error())
	}
	return append(body, erc6492Magic...)
}
