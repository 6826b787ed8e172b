package main

import (
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/toolgate/toolgate/"

// TestLayout_Dependencies keeps DESIGN.md section 9's rules: dependencies
// point one way (cmd → gateway → domain packages); only gateway imports
// fasthttp (besides the bench/ harness programs); only x402 (and the e2e
// test helpers) import go-ethereum; only oauth imports jwx; only cluster imports the Redis client
// and only cmd imports cluster; only ship imports the AWS SDK and only cmd
// imports ship; domain packages import only lower domain packages.
func TestLayout_Dependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}|{{join .Imports " "}}`, mod+"...").Output()
	if err != nil {
		t.Fatal(err)
	}
	// Which toolgate packages each domain package may import.
	domain := map[string][]string{
		"money":    {},
		"jsonscan": {},
		"catalog":  {"money"},
		"identity": {},
		"policy":   {"catalog", "money"},
		"meter":    {"money"},
		"ledger":   {"money"},
		"x402":     {"money", "jsonscan"},
		"oauth":    {"catalog", "identity", "policy"},
	}
	seen := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imps, _ := strings.Cut(line, "|")
		name := strings.TrimPrefix(pkg, mod)
		for _, imp := range strings.Fields(imps) {
			if strings.HasPrefix(imp, "github.com/valyala/fasthttp") && name != "gateway" && !strings.HasPrefix(name, "bench/") {
				t.Errorf("%s imports %s: only gateway may use fasthttp", name, imp)
			}
			if strings.HasPrefix(imp, "github.com/ethereum/go-ethereum") && name != "x402" && !strings.HasPrefix(name, "e2e/") {
				t.Errorf("%s imports %s: only x402 may use go-ethereum", name, imp)
			}
			if strings.HasPrefix(imp, "github.com/lestrrat-go/jwx") && name != "oauth" && name != "oauth/oauthtest" {
				t.Errorf("%s imports %s: only oauth may use jwx", name, imp)
			}
			if strings.HasPrefix(imp, "github.com/oauth2-proxy/mockoidc") && name != "oauth/oauthtest" {
				t.Errorf("%s imports %s: only the test provider oauth/oauthtest may", name, imp)
			}
			if strings.HasPrefix(imp, "github.com/redis/rueidis") && name != "cluster" {
				t.Errorf("%s imports %s: only cluster may use Redis", name, imp)
			}
			if strings.HasPrefix(imp, "github.com/aws/") && name != "ship" {
				t.Errorf("%s imports %s: only ship may use the AWS SDK", name, imp)
			}
			if !strings.HasPrefix(imp, mod) {
				continue
			}
			dep := strings.TrimPrefix(imp, mod)
			if allowed, ok := domain[name]; ok {
				seen++
				okDep := false
				for _, a := range allowed {
					okDep = okDep || a == dep
				}
				if !okDep {
					t.Errorf("domain package %s imports %s: not allowed (allowed: %v)", name, dep, allowed)
				}
			}
			if name == "gateway" && (dep == "cmd/toolgate" || strings.HasPrefix(dep, "e2e")) {
				t.Errorf("gateway imports %s", dep)
			}
			// ship (audit shipping to S3) is an adapter too: only cmd wires it in.
			if dep == "ship" && name != "cmd/toolgate" {
				t.Errorf("%s imports %s: only cmd/toolgate may wire audit shipping", name, dep)
			}
			// cluster is an adapter like cmd: only cmd wires it in.
			if (dep == "cluster" || strings.HasPrefix(dep, "cluster/")) && name != "cmd/toolgate" && !strings.HasPrefix(name, "cluster") {
				t.Errorf("%s imports %s: only cmd/toolgate may wire cluster mode", name, dep)
			}
		}
	}
	if seen == 0 {
		t.Fatal("no domain imports seen: is the module path right?")
	}
}
