package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// These tests run the real binary: build it once, start it as a process,
// stop it with signals (and kill -9), start it again on the same data dir.

var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "toolgate-bin")
	if err != nil {
		panic(err)
	}
	binPath = filepath.Join(dir, "toolgate")
	build := exec.Command("go", "build", "-race", "-o", binPath, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build toolgate:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const testAdmin = "process-test-admin-token"

type proc struct {
	t    *testing.T
	cmd  *exec.Cmd
	url  string
	args []string
	env  []string
	log  *os.File
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startGateway runs `toolgate serve` with the given data dir and config.
func startGateway(t *testing.T, dir string, extra ...string) *proc {
	t.Helper()
	addr := freePort(t)
	p := spawn(t, dir, nil, append(serveArgs(dir, addr), append([]string{"--admin-token", testAdmin}, extra...)...))
	p.waitHealthy(http.Get, p.url+"/healthz")
	return p
}

// serveArgs are the arguments of `toolgate serve` on addr with dir's data
// dir, tools.json and policies.json.
func serveArgs(dir, addr string) []string {
	return []string{"serve", "--listen", addr, "--data", filepath.Join(dir, "data"),
		"--tools", filepath.Join(dir, "tools.json"), "--policies", filepath.Join(dir, "policies.json")}
}

// spawn starts the binary with args (its --listen is the proc's URL) and
// env added to this one's, its output appended to dir/gateway.log; the
// process is killed at the test's end if it still runs.
func spawn(t *testing.T, dir string, env, args []string) *proc {
	t.Helper()
	logf, err := os.OpenFile(filepath.Join(dir, "gateway.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logf.Close() })
	addr := ""
	for i := range args[:len(args)-1] {
		if args[i] == "--listen" {
			addr = args[i+1]
		}
	}
	return relaunch(t, &proc{url: "http://" + addr, args: args, env: env, log: logf})
}

// relaunch starts p's command again (same arguments, environment and
// log) as a new proc of t.
func relaunch(t *testing.T, p *proc) *proc {
	t.Helper()
	cmd := exec.Command(binPath, p.args...)
	if p.env != nil {
		cmd.Env = append(os.Environ(), p.env...)
	}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	np := &proc{t: t, cmd: cmd, url: p.url, args: p.args, env: p.env, log: p.log}
	t.Cleanup(func() {
		if np.cmd.ProcessState == nil {
			np.cmd.Process.Kill()
			np.cmd.Wait()
		}
	})
	return np
}

// waitHealthy polls get(url) until it answers 200; after 30 s the test
// fails with the gateway's log.
func (p *proc) waitHealthy(get func(string) (*http.Response, error), url string) {
	p.t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if resp, err := get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
	}
	b, _ := os.ReadFile(p.log.Name())
	p.t.Fatalf("gateway did not answer 200 on %s; log:\n%s", url, b)
}

func (p *proc) stop(sig syscall.Signal) {
	p.t.Helper()
	p.cmd.Process.Signal(sig)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		p.t.Fatal("gateway did not stop")
	}
}

func (p *proc) req(method, path, body string, hdr ...string) (int, []byte) {
	p.t.Helper()
	req, _ := http.NewRequest(method, p.url+path, strings.NewReader(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (p *proc) admin(method, path, body string) (int, []byte) {
	return p.req(method, path, body, "Authorization", "Bearer "+testAdmin)
}

// writeConfig writes tools.json (pointed at a loopback upstream) and the
// repo's policies.json into dir, and returns the upstream's base URL.
func writeConfig(t *testing.T, dir string) string {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"ok":true}`))
	}))
	t.Cleanup(up.Close)
	tools := `{"tools":[
 {"id":"extract/structured","rate_class":"light","price_usd":"0.01","upstream":"` + up.URL + `/x"},
 {"id":"code_execute","rate_class":"heavy","price_usd":"0.02","upstream":"` + up.URL + `/c"}]}`
	os.WriteFile(filepath.Join(dir, "tools.json"), []byte(tools), 0o600)
	pol, err := os.ReadFile("../../policies.json")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "policies.json"), pol, 0o600)
	return up.URL
}

func jsonField(t *testing.T, b []byte, path ...string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("%s: no %v", b, path)
		}
		v = m[p]
	}
	return v
}

// TestServe_Restart: keys, overrides, revocations and today's spend survive
// a stop/start of the real process, both after SIGTERM and after kill -9.
func TestServe_Restart(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			writeConfig(t, dir)
			p := startGateway(t, dir)

			secret, keyID := p.createKey(`{"name":"survivor"}`)
			revoked, prepaid := p.createKey(`{"credits_usd":"1.00"}`)
			override := `{"deny_tools":["code_execute"],"daily_spend_cap_usd":"0.05"}`
			if code, b := p.admin("PUT", "/credits/keys/"+keyID+"/policy", override); code != 200 {
				t.Fatalf("put policy: %d %s", code, b)
			}
			for i := 0; i < 3; i++ {
				if code, b := p.req("POST", "/tools/extract/structured", `{}`, "X-API-Key", secret); code != 200 {
					t.Fatalf("call: %d %s", code, b)
				}
			}
			for i := 0; i < 2; i++ {
				p.req("POST", "/tools/extract/structured", `{}`, "X-API-Key", revoked)
			}
			p.admin("DELETE", "/credits/keys/"+prepaid, "")
			p.stop(sig)

			p = startGateway(t, dir)
			if code, b := p.req("POST", "/tools/extract/structured", `{}`, "X-API-Key", secret); code != 200 {
				t.Fatalf("key after restart: %d %s", code, b)
			}
			if code, _ := p.req("POST", "/tools/extract/structured", `{}`, "X-API-Key", revoked); code != 401 {
				t.Fatalf("revoked key after restart: got %d, want 401", code)
			}
			if code, b := p.req("POST", "/tools/code_execute", `{}`, "X-API-Key", secret); code != 403 {
				t.Fatalf("override after restart: got %d %s, want 403", code, b)
			}
			code, b := p.req("GET", "/authorization/status?api_key="+secret, "")
			if got := jsonField(t, b, "spend_today_usd"); code != 200 || got != 0.04 {
				t.Fatalf("spend after restart: got %d %v, want 0.04 (3 before, 1 after)", code, got)
			}
			if got := jsonField(t, b, "spend_limit_usd"); got != 0.05 {
				t.Fatalf("cap after restart: got %v", got)
			}
			code, b = p.admin("GET", "/credits/keys/"+prepaid, "")
			if got := jsonField(t, b, "balance_usd"); got != 0.98 {
				t.Fatalf("prepaid balance after restart: got %v, want 0.98", got)
			}
			code, b = p.admin("GET", "/audit/verify", "")
			if code != 200 || jsonField(t, b, "ok") != true {
				t.Fatalf("verify after restart: %d %s", code, b)
			}
			p.stop(syscall.SIGTERM)
		})
	}
}

// TestValidate_ListsEveryProblem: bad files exit non-zero with all problems.
func TestValidate_ListsEveryProblem(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "tools.json"), []byte(`{"tools":[{"id":"a","rate_class":"huge","upstream":"x"}]}`), 0o600)
	os.WriteFile(filepath.Join(dir, "policies.json"), []byte(`{"version":2,"fail_mode":"open","extra":1}`), 0o600)
	out, err := exec.Command(binPath, "validate", "--tools", filepath.Join(dir, "tools.json"), "--policies", filepath.Join(dir, "policies.json")).CombinedOutput()
	if err == nil {
		t.Fatalf("validate succeeded on bad files:\n%s", out)
	}
	for _, want := range []string{"tools[0].rate_class", "tools[0].upstream", "version", "extra"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output does not name %q:\n%s", want, out)
		}
	}
	ok, err := exec.Command(binPath, "validate", "--tools", "../../tools.json", "--policies", "../../policies.json").CombinedOutput()
	if err != nil {
		t.Fatalf("repo config does not validate: %v\n%s", err, ok)
	}
}

// TestServe_BadConfigExits: the gateway refuses to start on a bad file.
func TestServe_BadConfigExits(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "tools.json"), []byte(`{"tools":[`), 0o600)
	os.WriteFile(filepath.Join(dir, "policies.json"), []byte(`{}`), 0o600)
	cmd := exec.Command(binPath, "serve", "--listen", freePort(t), "--data", filepath.Join(dir, "d"),
		"--tools", filepath.Join(dir, "tools.json"), "--policies", filepath.Join(dir, "policies.json"), "--admin-token", "x")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "tools.json") {
		t.Fatalf("got err %v, output:\n%s", err, out)
	}
}

// tryReq GETs url without failing the test.
func tryReq(url string) (int, []byte, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, nil
}

// createKey makes a key through the management API and returns its
// secret and key_id.
func (p *proc) createKey(body string) (secret, keyID string) {
	p.t.Helper()
	code, b := p.admin("POST", "/credits/keys", body)
	if code != 201 {
		p.t.Fatalf("create key: got %d %s, want 201", code, b)
	}
	return jsonField(p.t, b, "secret").(string), jsonField(p.t, b, "key_id").(string)
}

// waitLoad returns once n() reaches want: the load a test puts on the
// gateway before it acts (a signal, a reload) is there, however slow the
// machine. It fails the test after 30 s.
func waitLoad(t *testing.T, want int, n func() int) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); n() < want; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("load: %d calls within 30 s, want %d", n(), want)
		}
	}
}

// gatewayLog is what the gateways started on dir have logged so far.
func gatewayLog(dir string) string {
	b, _ := os.ReadFile(filepath.Join(dir, "gateway.log"))
	return string(b)
}
