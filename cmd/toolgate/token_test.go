package main

import (
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestReadTokenFile(t *testing.T) {
	tests := []struct {
		name    string
		content string
		mode    os.FileMode
		want    string
		err     string // substring of the error; "" for success
	}{
		{"OK", "tga_secret\n", 0o600, "tga_secret", ""},
		{"OwnerReadOnly", "  tga_secret \r\n\n", 0o400, "tga_secret", ""},
		{"GroupReadable", "tga_secret\n", 0o640, "", "readable by group or others"},
		{"WorldReadable", "tga_secret\n", 0o604, "", "readable by group or others"},
		{"GroupWritable", "tga_secret\n", 0o620, "", "readable by group or others"},
		{"Empty", "", 0o600, "", "is empty"},
		{"OnlyWhiteSpace", " \n\t\n", 0o600, "", "is empty"},
		{"TwoLines", "tga_one\ntga_two\n", 0o600, "", "one token on one line"},
		{"Control", "tga_\x00x", 0o600, "", "one token on one line"},
		{"TooLarge", strings.Repeat("x", maxTokenFile+1), 0o600, "", "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "admin-token")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tt.mode); err != nil {
				t.Fatal(err)
			}
			got, err := readTokenFile(path)
			if tt.err == "" {
				if err != nil || got != tt.want {
					t.Fatalf("got %q, %v; want %q, nil", got, err, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("got %q, %v; want an error containing %q", got, err, tt.err)
			}
			if strings.Contains(err.Error(), "tga_") {
				t.Fatalf("error shows the token: %v", err)
			}
		})
	}
	t.Run("Missing", func(t *testing.T) {
		if _, err := readTokenFile(filepath.Join(t.TempDir(), "nope")); err == nil {
			t.Fatal("got nil error for a missing file")
		}
	})
	t.Run("Directory", func(t *testing.T) {
		dir := t.TempDir()
		os.Chmod(dir, 0o700)
		if _, err := readTokenFile(dir); err == nil || !strings.Contains(err.Error(), "directory") {
			t.Fatalf("got %v, want a directory error", err)
		}
	})
}

func TestExplicitAdminToken(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tok")
	os.WriteFile(path, []byte("from-file\n"), 0o600)
	tests := []struct {
		name, value, file, want string
		wantErr                 bool
	}{
		{"Neither", "", "", "", false},
		{"Value", "from-flag", "", "from-flag", false},
		{"File", "", path, "from-file", false},
		{"Both", "from-flag", path, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := explicitAdminToken(tt.value, tt.file)
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Fatalf("got %q, %v; want %q, error %t", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// startServe runs `toolgate serve` with exactly args (plus env) and waits
// until it is healthy.
func startServe(t *testing.T, dir string, env []string, args ...string) *proc {
	t.Helper()
	p := spawn(t, dir, env, append(serveArgs(dir, freePort(t)), args...))
	p.waitHealthy(http.Get, p.url+"/healthz")
	return p
}

// TestServe_AdminTokenFile: the real binary takes its admin token from
// --admin-token-file or TOOLGATE_ADMIN_TOKEN_FILE, and refuses to start
// on a group/world-readable, empty or doubly given token.
func TestServe_AdminTokenFile(t *testing.T) {
	const token = "tga_from_a_file_0123456789"
	check := func(t *testing.T, p *proc) {
		t.Helper()
		if code, b := p.req("GET", "/credits/keys", "", "Authorization", "Bearer "+token); code != 200 {
			t.Fatalf("admin call with the file's token: got %d %s, want 200", code, b)
		}
		if code, _ := p.req("GET", "/credits/keys", "", "Authorization", "Bearer "+token+"x"); code == 200 {
			t.Fatal("admin call with another token: got 200")
		}
		if _, err := os.Stat(filepath.Join(p.args[4], "admin-token")); err == nil { // args[4] is --data
			t.Fatal("a token was generated although one was given")
		}
		p.stop(syscall.SIGTERM)
	}
	setup := func(t *testing.T, mode os.FileMode, content string) (dir, file string) {
		dir = t.TempDir()
		writeConfig(t, dir)
		file = filepath.Join(dir, "admin-token.secret")
		os.WriteFile(file, []byte(content), 0o600)
		os.Chmod(file, mode)
		return dir, file
	}
	t.Run("Flag", func(t *testing.T) {
		dir, file := setup(t, 0o600, token+"\n")
		check(t, startServe(t, dir, nil, "--admin-token-file", file))
	})
	t.Run("Env", func(t *testing.T) {
		dir, file := setup(t, 0o400, token+"\n")
		check(t, startServe(t, dir, []string{"TOOLGATE_ADMIN_TOKEN_FILE=" + file}))
	})
	refused := []struct {
		name    string
		mode    os.FileMode
		content string
		extra   []string
		want    string
	}{
		{"GroupReadable", 0o640, token + "\n", nil, "readable by group or others"},
		{"WorldReadable", 0o644, token + "\n", nil, "readable by group or others"},
		{"Empty", 0o600, "\n", nil, "is empty"},
		{"BothGiven", 0o600, token + "\n", []string{"--admin-token", "other"}, "exclusive"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			dir, file := setup(t, tt.mode, tt.content)
			args := append([]string{"serve", "--listen", freePort(t), "--data", filepath.Join(dir, "data"),
				"--tools", filepath.Join(dir, "tools.json"), "--policies", filepath.Join(dir, "policies.json"),
				"--admin-token-file", file}, tt.extra...)
			cmd := exec.Command(binPath, args...)
			done := make(chan struct{})
			var out []byte
			var err error
			go func() { out, err = cmd.CombinedOutput(); close(done) }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				<-done
				t.Fatal("serve did not exit")
			}
			var ee *exec.ExitError
			ok := errors.As(err, &ee)
			if !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), tt.want) {
				t.Fatalf("got %v, output:\n%s\nwant exit status 2 naming %q", err, out, tt.want)
			}
			if strings.Contains(string(out), token) {
				t.Fatalf("output shows the token:\n%s", out)
			}
		})
	}
}

// TestValidate_UpstreamIsListen: `validate` (default --listen, or the one
// given) and `serve` refuse an upstream that is the gateway's own listen
// address, naming tools[i].upstream.
func TestValidate_UpstreamIsListen(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir)
	addr := freePort(t)
	port := addr[strings.LastIndexByte(addr, ':')+1:]
	tools := `{"tools":[
 {"id":"ok","rate_class":"light","upstream":"http://10.0.0.1:` + port + `/x"},
 {"id":"loop","rate_class":"light","upstream":"http://localhost:` + port + `/x"},
 {"id":"default","rate_class":"light","upstream":"http://0.0.0.0:8402/y"}]}`
	tp, pp := filepath.Join(dir, "tools.json"), filepath.Join(dir, "policies.json")
	os.WriteFile(tp, []byte(tools), 0o600)

	out, err := exec.Command(binPath, "validate", "--tools", tp, "--policies", pp).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "tools[2].upstream") || strings.Contains(string(out), "tools[1].upstream") {
		t.Fatalf("validate with the default listen: got %v, output:\n%s\nwant only tools[2].upstream refused", err, out)
	}
	out, err = exec.Command(binPath, "validate", "--tools", tp, "--policies", pp, "--listen", addr).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "tools[1].upstream") || strings.Contains(string(out), "tools[2].upstream") {
		t.Fatalf("validate --listen %s: got %v, output:\n%s\nwant only tools[1].upstream refused", addr, err, out)
	}
	cmd := exec.Command(binPath, "validate", "--tools", tp, "--policies", pp)
	cmd.Env = append(os.Environ(), "TOOLGATE_LISTEN=127.0.0.1:1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("validate with TOOLGATE_LISTEN elsewhere: got %v, output:\n%s", err, out)
	}
	out, err = exec.Command(binPath, "serve", "--listen", addr, "--data", filepath.Join(dir, "data"),
		"--tools", tp, "--policies", pp, "--admin-token", "x").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "tools[1].upstream") || !strings.Contains(string(out), "own listen address") {
		t.Fatalf("serve: got %v, output:\n%s\nwant a refusal naming tools[1].upstream", err, out)
	}
}
