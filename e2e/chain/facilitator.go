package chain

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/toolgate/toolgate/money"
)

// FacilitatorConfig configures StartFacilitator. The zero value runs the
// reference behaviour with Relayer as the settlement signer.
type FacilitatorConfig struct {
	// Relayer signs and pays for settlement transactions; zero means Relayer.
	Relayer Account
	// InvalidStatus is the HTTP status of an isValid:false /verify answer;
	// 0 means 200 (the reference facilitator). Some facilitators use 400.
	InvalidStatus int
	// SettleDelay is slept before each /settle, to test gateway timeouts.
	SettleDelay time.Duration
}

// Facilitator is a running e2e/facilitator.mjs: the x402 reference
// facilitator (@x402/core + @x402/evm) settling on the local chain. Its
// methods are safe for concurrent use.
type Facilitator struct {
	url     string
	relayer common.Address
	proc    *process
}

// serviceStartTimeout bounds a node service's start (module loading takes
// about 1-2 s).
const serviceStartTimeout = 30 * time.Second

// StartFacilitator starts the reference facilitator against chain a on a
// free loopback port and waits for its ready line. It places Multicall3 on
// the chain if missing. The process is killed, by its own PID, at cleanup;
// its stderr is logged if the test failed.
func StartFacilitator(t testing.TB, a *Anvil, cfg FacilitatorConfig) *Facilitator {
	t.Helper()
	d := RequireDeps(t)
	if cfg.Relayer.Key == nil {
		cfg.Relayer = Relayer
	}
	args := []string{filepath.Join(d.Dir, "facilitator.mjs"), "--rpc", a.RPC(), "--port", "0"}
	if cfg.InvalidStatus != 0 {
		args = append(args, "--invalid-status", strconv.Itoa(cfg.InvalidStatus))
	}
	if cfg.SettleDelay > 0 {
		args = append(args, "--settle-delay-ms", strconv.FormatInt(cfg.SettleDelay.Milliseconds(), 10))
	}
	line, p := startNodeService(t, d, "facilitator", args, "FACILITATOR_PRIVATE_KEY="+cfg.Relayer.KeyHex)
	var r struct {
		URL     string `json:"url"`
		Relayer string `json:"relayer"`
	}
	if err := json.Unmarshal(line, &r); err != nil {
		t.Fatalf("facilitator ready line %q: %v", line, err)
	}
	return &Facilitator{url: r.URL, relayer: common.HexToAddress(r.Relayer), proc: p}
}

// startNodeService runs a node script that prints a JSON line with
// "event":"ready" when it serves, waits for that line and returns it. The
// process is killed at cleanup and its stderr logged if the test failed.
func startNodeService(t testing.TB, d Deps, name string, args []string, env ...string) ([]byte, *process) {
	t.Helper()
	cmd := exec.Command(d.Node, args...)
	cmd.Dir = d.Dir
	cmd.Env = append(os.Environ(), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("%s stdout: %v", name, err)
	}
	p, err := startProcess(cmd)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p.logOnFailure(t, name)
	t.Cleanup(p.stop)

	got := make(chan []byte, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sent := false
		for sc.Scan() {
			var r struct {
				Event string `json:"event"`
			}
			if !sent && json.Unmarshal(sc.Bytes(), &r) == nil && r.Event == "ready" {
				got <- append([]byte(nil), sc.Bytes()...)
				sent = true
			}
		}
		_, _ = io.Copy(io.Discard, stdout) // keep draining until exit
	}()
	select {
	case line := <-got:
		return line, p
	case <-p.done:
		t.Fatalf("%s exited before ready (%v): %s", name, p.err, p.stderr.String())
	case <-time.After(serviceStartTimeout):
		t.Fatalf("%v: %s after %s: %s", ErrNotReady, name, serviceStartTimeout, p.stderr.String())
	}
	return nil, nil
}

// URL returns the facilitator's base URL, http://127.0.0.1:PORT, to which
// /verify, /settle and /supported are appended.
func (f *Facilitator) URL() string { return f.url }

// RelayerAddress returns the address that signs settlement transactions.
func (f *Facilitator) RelayerAddress() common.Address { return f.relayer }

// FacilitatorStats counts the requests the facilitator has answered.
type FacilitatorStats struct {
	Verify int `json:"verify"`
	Settle int `json:"settle"`
	// Connections counts the TCP connections it accepted.
	Connections int `json:"connections"`
}

// Stats returns how many /verify and /settle requests the facilitator has
// handled, to assert that a denied call never reached it.
func (f *Facilitator) Stats(t testing.TB) FacilitatorStats {
	t.Helper()
	var s FacilitatorStats
	if err := getJSON(f.url+"/stats", &s); err != nil {
		t.Fatalf("facilitator stats: %v", err)
	}
	return s
}

// FacilitatorOp is one /verify or /settle the facilitator answered: its
// time from request to answer and each node call it made ([method, ms]).
type FacilitatorOp struct {
	Op  string   `json:"op"`
	Ms  float64  `json:"ms"`
	RPC [][2]any `json:"rpc"`
	// At are the wall-clock times (Unix milliseconds) the request reached
	// the handler and its answer was sent.
	At []float64 `json:"at"`
}

// Timings returns the /verify and /settle answered since the last call to
// Timings (GET /timings), for latency breakdowns.
func (f *Facilitator) Timings(t testing.TB) []FacilitatorOp {
	t.Helper()
	var ops []FacilitatorOp
	if err := getJSON(f.url+"/timings", &ops); err != nil {
		t.Fatalf("facilitator timings: %v", err)
	}
	return ops
}

func getJSON(url string, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: status %d", url, res.StatusCode)
	}
	err = json.NewDecoder(res.Body).Decode(out)
	io.Copy(io.Discard, res.Body) // to the end, so that the connection is reused
	return err
}

// RefServer is a running e2e/ref-server.mjs: the x402 reference resource
// server (@x402/express payment middleware) with one priced echo route, a
// baseline for latency comparisons with the gateway.
type RefServer struct {
	url string
}

// StartRefServer starts the reference resource server, charging price to
// payTo through facilitator f, and waits until it serves. It is killed at
// cleanup.
func StartRefServer(t testing.TB, f *Facilitator, payTo common.Address, price money.Micros) *RefServer {
	t.Helper()
	d := RequireDeps(t)
	args := []string{filepath.Join(d.Dir, "ref-server.mjs"),
		"--facilitator", f.URL(), "--pay-to", payTo.Hex(), "--price", "$" + price.String(), "--port", "0"}
	line, _ := startNodeService(t, d, "ref-server", args)
	var r struct {
		URL string `json:"url"`
	}
	if err := json.Unmarshal(line, &r); err != nil {
		t.Fatalf("ref-server ready line %q: %v", line, err)
	}
	return &RefServer{url: r.URL}
}

// URL returns the priced route's URL, http://127.0.0.1:PORT/v1/tools/echo.
func (s *RefServer) URL() string { return s.url }
