package chain

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestArtifact_Fresh proves the committed contract artifacts are what the
// committed sources compile to with the pinned solc-js.
func TestArtifact_Fresh(t *testing.T) {
	d := RequireDeps(t)
	for _, name := range []string{"TestUSDC", "TestMulticall3", "TestSmartWallet", "TestWalletFactory", "TestPermit2", "TestUptoPermit2Proxy"} {
		t.Run(name+"/SourceHash", func(t *testing.T) {
			src, err := os.ReadFile(filepath.Join(d.Dir, "contracts", name+".sol"))
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(src)
			if got, want := LoadArtifact(t, name).SourceSHA256, hex.EncodeToString(sum[:]); got != want {
				t.Errorf("artifact sourceSha256: got %s, want %s (run node e2e/build-token.mjs)", got, want)
			}
		})
	}
	t.Run("Recompile", func(t *testing.T) {
		if testing.Short() {
			t.Skip("recompiling takes ~2 s; skipped with -short")
		}
		cmd := exec.Command(d.Node, filepath.Join(d.Dir, "build-token.mjs"), "--check")
		cmd.Dir = d.Dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("build-token.mjs --check: %v\n%s", err, out)
		}
	})
}
