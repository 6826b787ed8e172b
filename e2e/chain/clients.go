package chain

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/toolgate/toolgate/money"
)

// PayOptions configures PayV2 and PayV1. The zero value makes one unpaid-then-
// paid GET as Payer, against the chain at http://127.0.0.1:8545.
type PayOptions struct {
	// Payer signs the payments; zero means Payer.
	Payer Account
	// RPC is the local chain's URL (Anvil.RPC()); the clients never use a
	// public RPC. Empty means http://127.0.0.1:8545.
	RPC string
	// Method is the HTTP method; empty means GET, or POST with JSON.
	Method string
	// JSON, if not empty, is sent as the request body with
	// Content-Type: application/json.
	JSON string
	// Headers are extra request headers.
	Headers map[string]string
	// Count is the number of sequential paid calls (one process); 0 means 1.
	Count int
	// MaxValue is the v1 client's payment cap; 0 means x402-fetch's default
	// (100 000 = $0.10). Ignored by v2.
	MaxValue money.Micros
	// NoSpendControls turns off @x402/core's default spend controls (v2).
	NoSpendControls bool
	// AlsoV1 makes the v2 client register the v1 scheme too (v2).
	AlsoV1 bool
	// Upto makes the v2 client register the upto scheme too
	// (@x402/evm UptoEvmScheme, Permit2).
	Upto bool
	// PaymentID, if set, is sent in the payment-identifier extension (v2,
	// @x402/extensions).
	PaymentID string
	// Resend sends each call's paid request again, byte for byte, after
	// the call: a second result line per call, with Resent set.
	Resend bool
	// Timeout bounds the whole client run; 0 means 60 s plus 5 s per call.
	Timeout time.Duration
}

// PayResult is one call's outcome as the client script printed it.
type PayResult struct {
	// I is the call's index (0 ... Count-1).
	I int `json:"i"`
	// Resent marks the line of a resent paid request (PayOptions.Resend).
	Resent bool `json:"resent"`
	// Status is the final HTTP status (after the paid retry, if any).
	Status int `json:"status"`
	// Ms is the call's wall time in milliseconds, 402 round trip included.
	Ms float64 `json:"ms"`
	// Phases splits Ms when the client made an unpaid request and then a
	// paid one: the unpaid request to its 402, the client's work between
	// them (reading the 402, signing), and the paid request to the end of
	// its answer. Nil otherwise.
	Phases *PayPhases `json:"phases"`
	// Body is the final response body.
	Body string `json:"body"`
	// JSON is Body when it parsed as JSON, else null.
	JSON json.RawMessage `json:"json"`
	// PaymentResponse is the decoded PAYMENT-RESPONSE (v2) or
	// X-PAYMENT-RESPONSE (v1) header, decoded by the client library; null
	// when absent.
	PaymentResponse json.RawMessage `json:"paymentResponse"`
	// PaymentResponseHeader names the header PaymentResponse came from.
	PaymentResponseHeader string `json:"paymentResponseHeader"`
	// PaymentRequired is the decoded PAYMENT-REQUIRED header of the final
	// response (e.g. a 402 after a failed settlement); null when absent.
	PaymentRequired json.RawMessage `json:"paymentRequired"`
	// Headers are the final response's headers, lower-cased names.
	Headers map[string]string `json:"headers"`
	// Error is set when the client threw instead of returning a response
	// (it refused to pay, the connection failed, ...).
	Error string `json:"error"`
}

// SettleResponse is the decoded payment response header.
type SettleResponse struct {
	Success     bool   `json:"success"`
	ErrorReason string `json:"errorReason"`
	Payer       string `json:"payer"`
	Transaction string `json:"transaction"`
	Network     string `json:"network"`
	// Amount is the amount charged in atomic units (upto payments).
	Amount string `json:"amount"`
}

// Settlement decodes PaymentResponse; ok is false when there was none.
func (r PayResult) Settlement() (s SettleResponse, ok bool) {
	if len(r.PaymentResponse) == 0 || string(r.PaymentResponse) == "null" {
		return s, false
	}
	return s, json.Unmarshal(r.PaymentResponse, &s) == nil
}

// PayPhases are the parts of a paid call, in milliseconds (PayResult.Phases).
type PayPhases struct {
	Unpaid float64 `json:"unpaid"`
	Sign   float64 `json:"sign"`
	Paid   float64 `json:"paid"`
	// At are the wall-clock times (Unix milliseconds) of the unpaid
	// request's start, its answer, the paid request's start and the end
	// of the call, to line them up with the servers' timestamps.
	At []float64 `json:"at"`
}

// PayV2 runs e2e/pay-v2.mjs (@x402/fetch 2.27.0) against url and returns one
// result per call. It fails the test only if the script could not run; a
// client-side refusal is reported in PayResult.Error.
func PayV2(t testing.TB, url string, opts PayOptions) []PayResult {
	t.Helper()
	return runPay(t, "pay-v2.mjs", url, opts)
}

// PayV1 runs e2e/pay-v1.mjs (legacy x402-fetch 1.2.0) against url; see PayV2.
func PayV1(t testing.TB, url string, opts PayOptions) []PayResult {
	t.Helper()
	return runPay(t, "pay-v1.mjs", url, opts)
}

func runPay(t testing.TB, script, url string, opts PayOptions) []PayResult {
	t.Helper()
	d := RequireDeps(t)
	if opts.Payer.Key == nil {
		opts.Payer = Payer
	}
	if opts.RPC == "" {
		opts.RPC = "http://127.0.0.1:8545"
	}
	if opts.Count <= 0 {
		opts.Count = 1
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 60*time.Second + time.Duration(opts.Count)*5*time.Second
	}
	args := []string{filepath.Join(d.Dir, script), "--count", strconv.Itoa(opts.Count)}
	if opts.Method != "" {
		args = append(args, "--method", opts.Method)
	}
	if opts.JSON != "" {
		args = append(args, "--json", opts.JSON)
	}
	names := make([]string, 0, len(opts.Headers))
	for k := range opts.Headers {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		args = append(args, "--header", k+": "+opts.Headers[k])
	}
	if opts.MaxValue > 0 {
		args = append(args, "--max-value", strconv.FormatInt(int64(opts.MaxValue), 10))
	}
	if opts.NoSpendControls {
		args = append(args, "--no-spend-controls")
	}
	if opts.AlsoV1 {
		args = append(args, "--also-v1")
	}
	if opts.Upto {
		args = append(args, "--upto")
	}
	if opts.PaymentID != "" {
		args = append(args, "--payment-id", opts.PaymentID)
	}
	if opts.Resend {
		args = append(args, "--resend")
	}
	args = append(args, url)

	ctx, cancel := context.WithTimeout(context.Background(), opts.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.Node, args...)
	cmd.Dir = d.Dir
	cmd.Env = append(os.Environ(), "PAYER_PRIVATE_KEY="+opts.Payer.KeyHex, "PAYER_RPC_URL="+opts.RPC)
	var stdout bytes.Buffer
	stderr := &tailBuffer{max: 16 << 10}
	cmd.Stdout, cmd.Stderr = &stdout, stderr
	setProcAttr(cmd)
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 1) {
		t.Fatalf("%s %s: %v\nstderr: %s\nstdout: %s", script, url, err, stderr.String(), stdout.String())
	}
	var out []PayResult
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		var r PayResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("%s: decode output line %q: %v", script, sc.Text(), err)
		}
		out = append(out, r)
	}
	want := opts.Count
	if opts.Resend {
		want *= 2
	}
	if len(out) != want {
		t.Fatalf("%s: got %d result lines, want %d\nstderr: %s", script, len(out), want, stderr.String())
	}
	return out
}
