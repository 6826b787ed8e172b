package chain

import (
	"context"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
)

func TestStart(t *testing.T) {
	RequireDeps(t) // skip here, in the test goroutine, not in the goroutines below
	t.Run("OK", func(t *testing.T) {
		t0 := time.Now()
		a := Start(t)
		t.Logf("anvil ready in %s at %s", time.Since(t0), a.RPC())
		if !strings.HasPrefix(a.RPC(), "http://127.0.0.1:") {
			t.Errorf("RPC: got %q, want a loopback URL", a.RPC())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		id, err := a.Client().ChainID(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if id.Int64() != ChainID {
			t.Errorf("chain id: got %d, want %d", id, ChainID)
		}
	})

	t.Run("AccountsAreAnvilDefaults", func(t *testing.T) {
		a := Start(t)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var remote []common.Address
		if err := a.RPCClient().CallContext(ctx, &remote, "eth_accounts"); err != nil {
			t.Fatal(err)
		}
		if len(remote) < len(Accounts) {
			t.Fatalf("eth_accounts: got %d, want >= %d", len(remote), len(Accounts))
		}
		minBal := new(big.Int).Mul(big.NewInt(1000), big.NewInt(1e18))
		for i, acc := range Accounts {
			if remote[i] != acc.Address {
				t.Errorf("account %d: got %s, want %s", i, acc.Address, remote[i])
			}
			bal, err := a.Client().BalanceAt(ctx, acc.Address, nil)
			if err != nil {
				t.Fatal(err)
			}
			if bal.Cmp(minBal) < 0 {
				t.Errorf("account %d balance: got %s wei, want >= 1000 ETH", i, bal)
			}
		}
	})

	t.Run("StoppedAtCleanup", func(t *testing.T) {
		var addr string
		t.Run("inner", func(t *testing.T) {
			a := Start(t)
			addr = strings.TrimPrefix(a.RPC(), "http://")
		})
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			t.Fatalf("dial %s after cleanup: got a connection, want refused", addr)
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		const n = 4
		var wg sync.WaitGroup
		urls := make(chan string, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				urls <- Start(t).RPC()
			}()
		}
		wg.Wait()
		close(urls)
		seen := map[string]bool{}
		for u := range urls {
			if seen[u] {
				t.Errorf("two chains share %s", u)
			}
			seen[u] = true
		}
		if len(seen) != n {
			t.Errorf("chains started: got %d, want %d", len(seen), n)
		}
	})
}
