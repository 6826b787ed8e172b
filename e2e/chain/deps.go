package chain

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// Deps locates the installed end-to-end tools.
type Deps struct {
	// Dir is the e2e directory (holding package.json and the .mjs scripts).
	Dir string
	// Node is the path of the node executable.
	Node string
	// Anvil is the path of the anvil executable from e2e/node_modules.
	Anvil string
}

var (
	depsOnce sync.Once
	deps     Deps
	depsErr  error
)

// stampFile is written by scripts/e2e-deps.sh after a successful npm ci; it
// holds the SHA-256 of the package-lock.json it installed.
const stampFile = "node_modules/.toolgate-e2e-deps"

// RequireDeps returns the installed tools, or ends the test when they are
// missing or stale: with t.Skip normally, with t.Fatal when the CI
// environment variable is set, so that CI cannot pass by skipping. The
// message says to run scripts/e2e-deps.sh. The e2e directory is found from
// this source file, or from TOOLGATE_E2E_DIR if set. Safe for concurrent use.
func RequireDeps(t testing.TB) Deps {
	t.Helper()
	depsOnce.Do(func() { deps, depsErr = findDeps() })
	if depsErr != nil {
		msg := fmt.Sprintf("e2e dependencies not installed: %v; run scripts/e2e-deps.sh", depsErr)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return deps
}

func findDeps() (Deps, error) {
	dir := os.Getenv("TOOLGATE_E2E_DIR")
	if dir == "" {
		_, file, _, ok := runtime.Caller(0)
		if !ok {
			return Deps{}, fmt.Errorf("cannot locate the e2e directory (set TOOLGATE_E2E_DIR)")
		}
		dir = filepath.Dir(filepath.Dir(file))
	}
	d := Deps{Dir: dir}
	lock, err := os.ReadFile(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		return d, fmt.Errorf("read lock file: %w", err)
	}
	sum := sha256.Sum256(lock)
	stamp, err := os.ReadFile(filepath.Join(dir, stampFile))
	if err != nil {
		return d, fmt.Errorf("%s missing", filepath.Join("e2e", stampFile))
	}
	if strings.TrimSpace(string(stamp)) != hex.EncodeToString(sum[:]) {
		return d, fmt.Errorf("e2e/node_modules is stale (installed from another package-lock.json)")
	}
	d.Anvil = filepath.Join(dir, "node_modules", "@foundry-rs", "anvil-linux-amd64", "bin", "anvil")
	if st, err := os.Stat(d.Anvil); err != nil || st.Mode()&0o111 == 0 {
		return d, fmt.Errorf("anvil binary missing at %s", d.Anvil)
	}
	if d.Node, err = exec.LookPath("node"); err != nil {
		return d, fmt.Errorf("node not on PATH: %w", err)
	}
	return d, nil
}
