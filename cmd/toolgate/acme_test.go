package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// pebble runs Let's Encrypt's test CA on loopback: pebble-challtestsrv
// answers its DNS lookups of every name with 127.0.0.1, so its VA
// validates TLS-ALPN-01 challenges by connecting to the gateway's TLS
// port for real (no PEBBLE_VA_ALWAYS_VALID). Certificates are valid for
// validity; authorizations are never reused, so a renewal is validated
// again.
type pebble struct {
	dir, mgmt string
	roots     *x509.CertPool // pebble's issuing root (fetched from its management API)
	caFile    string         // PEM trusted for pebble's own HTTPS (the test CA)
}

func startPebble(t *testing.T, dir string, ca *testCA, tlsPort string, validity time.Duration) *pebble {
	t.Helper()
	for _, bin := range []string{"pebble", "pebble-challtestsrv"} {
		if _, err := exec.LookPath(bin); err != nil {
			if out, err := exec.Command("../../scripts/pebble-deps.sh").CombinedOutput(); err != nil {
				t.Logf("pebble-deps.sh: %v %s", err, out)
			}
			if _, err := exec.LookPath(bin); err != nil {
				t.Skipf("%s not installed and scripts/pebble-deps.sh could not install it (apt-get install -y pebble)", bin)
			}
		}
	}
	// pebble serves its directory over HTTPS with a certificate of ours.
	c, k, _ := ca.pair(t, 2)
	os.WriteFile(filepath.Join(dir, "pebble-cert.pem"), c, 0o600)
	os.WriteFile(filepath.Join(dir, "pebble-key.pem"), k, 0o600)
	caFile := filepath.Join(dir, "test-ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}), 0o600)

	dns, chMgmt, wfe, mgmt := freePort(t), freePort(t), freePort(t), freePort(t)
	chall := exec.Command("pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
		"-dns01", dns, "-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "", "-management", chMgmt)
	if !strings.Contains(helpText(t, "pebble-challtestsrv"), "-doh") {
		chall = exec.Command("pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
			"-dns01", dns, "-http01", "", "-https01", "", "-tlsalpn01", "", "-management", chMgmt)
	}
	startLogged(t, chall, filepath.Join(dir, "challtestsrv.log"))

	_, httpPort, _ := net.SplitHostPort(freePort(t))
	cfg := fmt.Sprintf(`{"pebble":{"listenAddress":%q,"managementListenAddress":%q,"certificate":%q,"privateKey":%q,
 "httpPort":%s,"tlsPort":%s,"ocspResponderURL":"","externalAccountBindingRequired":false,"certificateValidityPeriod":%d}}`,
		wfe, mgmt, filepath.Join(dir, "pebble-cert.pem"), filepath.Join(dir, "pebble-key.pem"), httpPort, tlsPort, int(validity.Seconds()))
	os.WriteFile(filepath.Join(dir, "pebble-config.json"), []byte(cfg), 0o600)
	peb := exec.Command("pebble", "-config", filepath.Join(dir, "pebble-config.json"), "-dnsserver", dns)
	peb.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0")
	startLogged(t, peb, filepath.Join(dir, "pebble.log"))

	p := &pebble{dir: "https://" + wfe + "/dir", mgmt: "https://" + mgmt, caFile: caFile}
	cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool}}}
	var root []byte
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "pebble.log"))
			t.Fatalf("pebble did not answer; log:\n%s", b)
		}
		resp, err := cl.Get(p.mgmt + "/roots/0")
		if err != nil {
			continue
		}
		root, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 {
			break
		}
	}
	p.roots = x509.NewCertPool()
	if !p.roots.AppendCertsFromPEM(root) {
		t.Fatalf("pebble root: %q", root)
	}
	return p
}

func helpText(t *testing.T, bin string) string {
	out, _ := exec.Command(bin, "-h").CombinedOutput()
	return string(out)
}

func startLogged(t *testing.T, cmd *exec.Cmd, logPath string) {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
	})
}

// TestServe_ACME: the gateway obtains a certificate for its name from a
// local pebble (validated over TLS-ALPN-01 on its own TLS port), serves
// it, caches it in the data dir (0600), renews it ahead of expiry
// without a restart, and /readyz says ok although under 7 days are left
// (renewal is configured).
func TestServe_ACME(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir)
	ca := newTestCA(t, dir)
	tlsAddr := freePort(t)
	_, tlsPort, _ := net.SplitHostPort(tlsAddr)
	const validity = 20 * time.Second
	peb := startPebble(t, dir, ca, tlsPort, validity)

	const name = "api.toolgate.test"
	p := startServe(t, dir, []string{"SSL_CERT_FILE=" + peb.caFile}, "--admin-token", testAdmin,
		"--tls-listen", tlsAddr, "--acme-domain", name, "--acme-directory", peb.dir, "--acme-renew-before", "14s")
	p.waitLogFor("ACME certificate ready", 1, 60*time.Second)

	served := func() *x509.Certificate {
		t.Helper()
		c, err := tls.Dial("tcp", tlsAddr, &tls.Config{ServerName: name, RootCAs: peb.roots})
		if err != nil {
			t.Fatalf("TLS with the ACME certificate: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0]
	}
	first := served()
	if first.Subject.CommonName != name && (len(first.DNSNames) == 0 || first.DNSNames[0] != name) {
		t.Fatalf("certificate for %v, want %s", first.DNSNames, name)
	}

	t.Run("Cache", func(t *testing.T) {
		ents, err := os.ReadDir(filepath.Join(dir, "data", "acme"))
		if err != nil || len(ents) < 2 { // the account key and the certificate
			t.Fatalf("acme cache: %v %v", ents, err)
		}
		for _, e := range ents {
			fi, _ := e.Info()
			if fi.Mode().Perm() != 0o600 {
				t.Fatalf("%s: mode %v, want 0600", e.Name(), fi.Mode().Perm())
			}
		}
	})
	t.Run("Readyz", func(t *testing.T) {
		cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{ServerName: name, RootCAs: peb.roots}}}
		resp, err := cl.Get("https://" + tlsAddr + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var body struct {
			Checks map[string]string `json:"checks"`
		}
		json.Unmarshal(b, &body)
		if resp.StatusCode != 200 || !strings.HasPrefix(body.Checks["tls"], "ok: expires at") {
			t.Fatalf("/readyz: got %d %s, want 200 with tls ok (0 days left, but renewed)", resp.StatusCode, b)
		}
	})
	t.Run("Renewal", func(t *testing.T) {
		// Renewal is due 14 s before expiry: about 6 s after issuance.
		deadline := time.Now().Add(40 * time.Second)
		for {
			c := served()
			if c.SerialNumber.Cmp(first.SerialNumber) != 0 {
				if !c.NotAfter.After(first.NotAfter) {
					t.Fatalf("renewed certificate expires %s, not after the first's %s", c.NotAfter, first.NotAfter)
				}
				break
			}
			if time.Now().After(deadline) {
				b, _ := os.ReadFile(p.log.Name())
				t.Fatalf("certificate not renewed within 40 s; gateway log:\n%s", b)
			}
			time.Sleep(250 * time.Millisecond)
		}
	})
	p.stop(syscall.SIGTERM)
	// pebble validated a challenge (it reached the gateway) for the
	// issuance and again for the renewal.
	b, _ := os.ReadFile(filepath.Join(dir, "pebble.log"))
	if n := strings.Count(string(b), "set VALID by completed challenge"); n < 2 {
		t.Fatalf("pebble validated %d challenges, want 2 (issuance and renewal):\n%s", n, b)
	}
}

// waitLogFor is waitLog with a limit.
func (p *proc) waitLogFor(s string, n int, limit time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(limit)
	for p.logCount(s) < n {
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(p.log.Name())
			p.t.Fatalf("log has no %q within %s:\n%s", s, limit, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
