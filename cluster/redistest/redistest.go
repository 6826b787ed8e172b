// Package redistest starts a real redis-server for tests: a child process
// on a free loopback port, without persistence, stopped by its PID when
// the test ends.
package redistest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Server is a redis-server started by Start.
type Server struct {
	Addr     string // host:port on 127.0.0.1
	Password string // set by "--requirepass" in Start's args
	cmd      *exec.Cmd
	t        testing.TB
	dir      string
}

// URL returns redis://Addr/0.
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }

// Start runs redis-server on a free loopback port and waits until it
// answers PING; it is killed (by PID) when t ends. Without redis-server on
// PATH the test is skipped, or fails when CI is set (scripts/test.sh
// installs it). args are passed to redis-server after the defaults
// ("--requirepass", "pw").
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("redis-server not on PATH: scripts/test.sh installs it (apt-get install redis-server)")
		}
		t.Skip("redis-server not on PATH (scripts/test.sh installs it)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	dir := t.TempDir()
	cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--logfile", filepath.Join(dir, "redis.log"))
	cmd.Args = append(cmd.Args, args...)
	s := &Server{Addr: addr, cmd: cmd, t: t, dir: dir}
	for i := range args {
		if args[i] == "--requirepass" && i+1 < len(args) {
			s.Password = args[i+1]
		}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	s.waitUp()
	return s
}

func (s *Server) waitUp() {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ping(s.Addr) == nil {
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			s.t.Fatalf("redis-server on %s did not answer PING; log:\n%s", s.Addr, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Pause stops the server's process (SIGSTOP): connections stay open and
// nothing answers, as when Redis hangs or the network drops packets.
func (s *Server) Pause() {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		s.t.Fatal(err)
	}
}

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		s.t.Fatal(err)
	}
}

// Kill kills the server (SIGKILL) and waits for it: the port refuses
// connections until Restart.
func (s *Server) Kill() { s.Stop() }

// Restart kills the server and starts it again on the same port. With
// keepData it first saves its data (SAVE) and the new process loads it;
// without, it comes back empty.
func (s *Server) Restart(keepData bool) {
	s.t.Helper()
	if keepData && s.cmd.ProcessState == nil {
		if _, err := s.Do("SAVE"); err != nil {
			s.t.Fatalf("SAVE: %v", err)
		}
	}
	s.Stop()
	if !keepData {
		os.Remove(filepath.Join(s.dir, "dump.rdb"))
	}
	cmd := exec.Command(s.cmd.Path, s.cmd.Args[1:]...)
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.cmd = cmd
	s.waitUp()
}

// Do sends one command (authenticating first when the server has a
// password) and returns its reply's first line without the type byte; an
// error reply is an error.
func (s *Server) Do(args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	send := func(args ...string) (string, error) {
		var b strings.Builder
		fmt.Fprintf(&b, "*%d\r\n", len(args))
		for _, a := range args {
			fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
		}
		if _, err := c.Write([]byte(b.String())); err != nil {
			return "", err
		}
		line, err := r.ReadString('\n')
		if err != nil {
			return "", err
		}
		line = strings.TrimRight(line, "\r\n")
		if strings.HasPrefix(line, "-") {
			return "", fmt.Errorf("redis: %s", line[1:])
		}
		if strings.HasPrefix(line, "$") && line != "$-1" {
			v, err := r.ReadString('\n')
			return strings.TrimRight(v, "\r\n"), err
		}
		return line[1:], nil
	}
	if s.Password != "" {
		if _, err := send("AUTH", s.Password); err != nil {
			return "", err
		}
	}
	return send(args...)
}

// Stop kills the server by its PID and waits for it; idempotent.
func (s *Server) Stop() {
	if s.cmd.ProcessState != nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGCONT) // a paused server dies too
	s.cmd.Process.Kill()
	s.cmd.Wait()
}

func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") && !strings.HasPrefix(line, "-NOAUTH") {
		return fmt.Errorf("PING: got %q", line)
	}
	return nil
}

// Cluster is a Redis Cluster of masters started by StartCluster.
type Cluster struct {
	Nodes []*Server
}

// URL returns redis://<first node>/0: a client discovers the others.
func (c *Cluster) URL() string { return c.Nodes[0].URL() }

// StartCluster runs n redis-server masters with --cluster-enabled yes on
// free loopback ports, joins them with redis-cli --cluster create (no
// replicas) and waits until the cluster serves every slot. Every server
// is killed by PID when t ends.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	if _, err := exec.LookPath("redis-cli"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("redis-cli not on PATH: scripts/test.sh installs it (apt-get install redis-server)")
		}
		t.Skip("redis-cli not on PATH")
	}
	c := &Cluster{}
	var addrs []string
	for range n {
		s := Start(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000")
		c.Nodes = append(c.Nodes, s)
		addrs = append(addrs, s.Addr)
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok := true
		for _, s := range c.Nodes {
			info, err := s.DoBulk("CLUSTER", "INFO")
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				ok = false
			}
		}
		if ok {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatal("redis cluster did not reach cluster_state:ok within 20 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// DoBulk sends one command and returns its bulk string reply whole.
func (s *Server) DoBulk(args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(line, "$") && !strings.HasPrefix(line, "=") {
		return strings.TrimRight(line, "\r\n"), nil
	}
	var size int
	fmt.Sscanf(line[1:], "%d", &size)
	buf := make([]byte, size+2)
	if _, err := io.ReadFull(r, buf); err != nil {
		return "", err
	}
	return string(buf[:size]), nil
}
