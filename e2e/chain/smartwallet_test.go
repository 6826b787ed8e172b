package chain

import (
	"bytes"
	"context"
	"encoding/hex"
	"math/big"
	"testing"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/accounts/abi"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
)

// TestWalletFactory_Anvil checks the factory and the wallet on anvil: the
// CREATE2 address (computed here independently), idempotent deployment,
// and the wallet's EIP-1271 answers.
func TestWalletFactory_Anvil(t *testing.T) {
	a := Start(t)
	DeployWalletFactory(t, a)
	owner := NewAccount(t)
	salt := [32]byte{7}

	t.Run("Create2Address", func(t *testing.T) {
		wallet := LoadArtifact(t, "TestSmartWallet")
		addrT, _ := abi.NewType("address", "", nil)
		args, _ := abi.Arguments{{Type: addrT}}.Pack(owner.Address)
		initHash := crypto.Keccak256(wallet.Bytecode, args)
		want := crypto.CreateAddress2(WalletFactoryAddress, salt, initHash)
		if got := WalletAddress(t, a, owner.Address, salt); got != want {
			t.Errorf("got %s, want %s", got, want)
		}
		if other := WalletAddress(t, a, NewAccount(t).Address, salt); other == want {
			t.Errorf("another owner's wallet: got the same address %s", other)
		}
	})

	w := DeployWallet(t, a, owner.Address, salt)
	t.Run("Idempotent", func(t *testing.T) {
		if again := DeployWallet(t, a, owner.Address, salt); again != w {
			t.Errorf("second deployment: got %s, want %s", again, w)
		}
	})

	t.Run("IsValidSignature", func(t *testing.T) {
		hash := crypto.Keccak256Hash([]byte("a digest"))
		sign := func(acct Account) []byte {
			sig, err := crypto.Sign(hash[:], acct.Key)
			if err != nil {
				t.Fatal(err)
			}
			sig[64] += 27
			return sig
		}
		good := sign(owner)
		highS := bytes.Clone(good)
		// s' = N - s, v flipped: the same signer, but non-canonical.
		n := crypto.S256().Params().N
		s := new(big.Int).SetBytes(good[32:64])
		new(big.Int).Sub(n, s).FillBytes(highS[32:64])
		highS[64] ^= 1 // 27 <-> 28
		tests := []struct {
			name string
			sig  []byte
			want string
		}{
			{name: "Owner", sig: good, want: "1626ba7e"},
			{name: "Stranger", sig: sign(NewAccount(t)), want: "ffffffff"},
			{name: "HighS", sig: highS, want: "ffffffff"},
			{name: "Short", sig: good[:64], want: "ffffffff"},
			{name: "VZeroOne", sig: append(bytes.Clone(good[:64]), good[64]-27), want: "ffffffff"},
		}
		wabi := LoadArtifact(t, "TestSmartWallet").ABI
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				data, err := wabi.Pack("isValidSignature", hash, tt.sig)
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
				defer cancel()
				ret, err := a.eth.CallContract(ctx, ethereum.CallMsg{To: &w, Data: data}, nil)
				if err != nil || len(ret) != 32 {
					t.Fatalf("call: got %x %v, want a bytes4 word", ret, err)
				}
				if got := hex.EncodeToString(ret[:4]); got != tt.want {
					t.Errorf("got 0x%s, want 0x%s", got, tt.want)
				}
			})
		}
	})

	t.Run("WrapERC6492", func(t *testing.T) {
		sig := WrapERC6492(WalletFactoryAddress, []byte{1, 2, 3}, []byte{4, 5})
		if !bytes.HasSuffix(sig, erc6492Magic) || len(sig) != 3*32+2*64+32 {
			t.Errorf("got %d bytes ending %x, want 256 ending in the magic", len(sig), sig[len(sig)-32:])
		}
		if got := common.BytesToAddress(sig[:32]); got != WalletFactoryAddress {
			t.Errorf("factory word: got %s, want %s", got, WalletFactoryAddress)
		}
	})
}
