package ship

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// versitygw finds the versitygw binary (scripts/versitygw-deps.sh builds
// it): on PATH or in $(go env GOPATH)/bin. Without it the test skips, or
// fails when CI is set.
func versitygw(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "versitygw")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("versitygw not found: scripts/test.sh builds it (scripts/versitygw-deps.sh)")
	}
	t.Skip("versitygw not found (scripts/versitygw-deps.sh builds it)")
	return ""
}

// startVersity runs versitygw's posix backend (with versioning, which
// Object Lock needs) in a temp dir on a free loopback port, and returns
// its endpoint; it is killed by PID when t ends.
func startVersity(t *testing.T) string {
	t.Helper()
	bin := versitygw(t)
	s3env(t)
	root := t.TempDir()
	for _, d := range []string{"data", "versions"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	addr := freeAddr(t)
	var log bytes.Buffer
	cmd := exec.Command(bin, "--access", os.Getenv("AWS_ACCESS_KEY_ID"), "--secret", os.Getenv("AWS_SECRET_ACCESS_KEY"),
		"--port", addr, "--quiet", "posix", "--versioning-dir", filepath.Join(root, "versions"), filepath.Join(root, "data"))
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.Env = []string{"HOME=" + root, "PATH=" + os.Getenv("PATH")}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("versitygw output:\n%s", log.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			t.Fatalf("versitygw exited: %s", log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("versitygw did not listen on %s within 20 s: %s", addr, log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "http://" + addr
}

// TestShipper_ObjectLockOnVersityGW ships to a real Object Lock bucket:
// every object carries COMPLIANCE retention until now + Retain, a
// locked version cannot be deleted, and an overwrite leaves the shipped
// version in place.
func TestShipper_ObjectLockOnVersityGW(t *testing.T) {
	endpoint := startVersity(t)
	tl := fixture(t)
	b := openBucket(t, endpoint, "s3://evidence/soc2")
	_, err := b.c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("evidence"), ObjectLockEnabledForBucket: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	// The shipper's clock is the ledger's (2026-12-01); retention runs
	// from it.
	s := newShipper(t, tl, b, t.TempDir(), func(c *Config) { c.Retain = 400 * 24 * time.Hour })
	res, err := s.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 3 {
		t.Fatalf("shipped %+v", res)
	}
	want := tl.clk.now().Add(400 * 24 * time.Hour).UTC()
	key := "soc2/node-a/2026-11-28/records-0001.jsonl.gz"
	for _, k := range []string{key, "soc2/node-a/2026-11-28/" + sigName, "soc2/node-a/2026-11-28/" + manifestName} {
		out, err := b.c.GetObjectRetention(ctx, &s3.GetObjectRetentionInput{Bucket: aws.String("evidence"), Key: aws.String(k)})
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		if out.Retention == nil || out.Retention.Mode != types.ObjectLockRetentionModeCompliance || out.Retention.RetainUntilDate == nil ||
			out.Retention.RetainUntilDate.Sub(want).Abs() > time.Second {
			t.Errorf("%s: retention %+v, want COMPLIANCE until %v", k, out.Retention, want)
		}
	}
	head, err := b.c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("evidence"), Key: aws.String(key)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("evidence"), Key: aws.String(key), VersionId: head.VersionId})
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("deleting a locked version: %v, want a refusal", err)
	}
	// Overwriting the key makes a new version; the shipped one stays,
	// byte for byte, under its version id.
	orig, err := b.get(ctx, "node-a/2026-11-28/records-0001.jsonl.gz", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.putBytes(ctx, "node-a/2026-11-28/records-0001.jsonl.gz", []byte("overwritten"), putOptions{}); err != nil {
		t.Fatal(err)
	}
	old, err := b.c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("evidence"), Key: aws.String(key), VersionId: head.VersionId})
	if err != nil {
		t.Fatal(err)
	}
	kept, _ := io.ReadAll(old.Body)
	old.Body.Close()
	if !bytes.Equal(kept, orig) {
		t.Fatal("the locked version changed after an overwrite")
	}
	if rep, err := Verify(ctx, b, "node-a", day(t, "2026-11-28"), pubOf(t, tl)); err != nil || rep.OK || rep.File != "records-0001.jsonl.gz" {
		t.Fatalf("verify after the overwrite: %+v, %v; want records-0001 reported", rep, err)
	}
	rep, err := Verify(ctx, b, "node-a", day(t, "2026-11-30"), pubOf(t, tl))
	if err != nil || !rep.OK {
		t.Fatalf("verify: %+v, %v", rep, err)
	}
	// A re-run ships nothing against the real store too.
	res, err = newShipper(t, tl, b, t.TempDir(), func(c *Config) { c.Retain = 400 * 24 * time.Hour }).Run(ctx)
	if err != nil || len(res) != 0 {
		t.Fatalf("re-run: %+v, %v", res, err)
	}
}
