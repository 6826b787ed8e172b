package chain

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/ethereum/go-ethereum/rpc"
)

// ChainID is the chain id of the local chain: Base Sepolia's.
const ChainID = 84532

// Network is the CAIP-2 name of the local chain in x402 v2.
const Network = "eip155:84532"

// NetworkV1 is the x402 v1 name of the local chain.
const NetworkV1 = "base-sepolia"

// startTimeout bounds how long Start waits for anvil's RPC to answer.
const startTimeout = 15 * time.Second

// ErrNotReady is returned when a started process never became ready.
var ErrNotReady = errors.New("chain: process did not become ready")

// Anvil is a running local chain. Its methods are safe for concurrent use.
// The zero value is not usable; get one from Start.
type Anvil struct {
	rpcURL string
	rpc    *rpc.Client
	eth    *ethclient.Client
	proc   *process
}

// Start runs anvil from e2e/node_modules on a free loopback port with chain
// id 84532, automining and the default mnemonic's ten funded accounts, and
// waits until its RPC answers (about 0.1 s). The process is killed, by its
// own PID, at t.Cleanup. It skips or fails the test as RequireDeps does when
// the tools are not installed, and fails it if anvil does not start.
func Start(t testing.TB) *Anvil {
	t.Helper()
	d := RequireDeps(t)
	var lastErr error
	// A port picked free can be taken before anvil binds it; retry then.
	for attempt := 0; attempt < 3; attempt++ {
		a, err := startAnvil(d)
		if err == nil {
			a.proc.logOnFailure(t, "anvil")
			t.Cleanup(a.close)
			return a
		}
		lastErr = err
	}
	t.Fatalf("start anvil: %v", lastErr)
	return nil
}

func startAnvil(d Deps) (*Anvil, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(d.Anvil,
		"--host", "127.0.0.1",
		"--port", strconv.Itoa(port),
		"--chain-id", strconv.Itoa(ChainID),
		"--silent",
	)
	p, err := startProcess(cmd)
	if err != nil {
		return nil, fmt.Errorf("exec %s: %w", d.Anvil, err)
	}
	url := "http://127.0.0.1:" + strconv.Itoa(port)
	client, err := rpc.Dial(url)
	if err != nil {
		p.stop()
		return nil, fmt.Errorf("dial %s: %w", url, err)
	}
	a := &Anvil{rpcURL: url, rpc: client, eth: ethclient.NewClient(client), proc: p}
	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		var id hexutil.Big
		err = client.CallContext(ctx, &id, "eth_chainId")
		cancel()
		if err == nil {
			if got := (*big.Int)(&id); got.Cmp(big.NewInt(ChainID)) != 0 {
				a.close()
				return nil, fmt.Errorf("anvil chain id: got %s, want %d", got, ChainID)
			}
			return a, nil
		}
		if p.exited() {
			client.Close()
			return nil, fmt.Errorf("anvil exited (%v): %s", p.err, p.stderr.String())
		}
		if time.Now().After(deadline) {
			a.close()
			return nil, fmt.Errorf("%w: anvil at %s after %s: %v", ErrNotReady, url, startTimeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (a *Anvil) close() {
	a.rpc.Close()
	a.proc.stop()
}

// RPC returns the chain's JSON-RPC URL, http://127.0.0.1:PORT.
func (a *Anvil) RPC() string { return a.rpcURL }

// Client returns a go-ethereum client connected to the chain; it is closed
// at cleanup and must not be closed by the caller.
func (a *Anvil) Client() *ethclient.Client { return a.eth }

// RPCClient returns the raw JSON-RPC client, for anvil_* and evm_* calls; it
// is closed at cleanup and must not be closed by the caller.
func (a *Anvil) RPCClient() *rpc.Client { return a.rpc }

// SetCode places runtime code at addr (anvil_setCode).
func (a *Anvil) SetCode(ctx context.Context, addr common.Address, code []byte) error {
	if err := a.rpc.CallContext(ctx, nil, "anvil_setCode", addr, hexutil.Bytes(code)); err != nil {
		return fmt.Errorf("anvil_setCode %s: %w", addr, err)
	}
	return nil
}

// SetBalance sets the ETH balance of addr in wei (anvil_setBalance).
func (a *Anvil) SetBalance(ctx context.Context, addr common.Address, wei *big.Int) error {
	if err := a.rpc.CallContext(ctx, nil, "anvil_setBalance", addr, (*hexutil.Big)(wei)); err != nil {
		return fmt.Errorf("anvil_setBalance %s: %w", addr, err)
	}
	return nil
}

// IncreaseTime moves the chain's clock forward by d and mines a block, so
// that the next block's timestamp reflects it (evm_increaseTime + evm_mine).
func (a *Anvil) IncreaseTime(ctx context.Context, d time.Duration) error {
	if err := a.rpc.CallContext(ctx, nil, "evm_increaseTime", int64(d/time.Second)); err != nil {
		return fmt.Errorf("evm_increaseTime: %w", err)
	}
	if err := a.rpc.CallContext(ctx, nil, "evm_mine"); err != nil {
		return fmt.Errorf("evm_mine: %w", err)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	addr := l.Addr().String()
	return strconv.Atoi(addr[strings.LastIndexByte(addr, ':')+1:])
}
