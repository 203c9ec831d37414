package pgtest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"testing"
)

// Server is one running (or stopped) PostgreSQL cluster.
type Server struct {
	bindir  string
	dir     string // owned by the server's user
	port    int
	runAs   string // "" runs as the current user
	mu      sync.Mutex
	running bool
}

// Start initializes and starts a server; t.Cleanup stops it and removes
// its files.
func Start(t testing.TB) *Server {
	t.Helper()
	bindir := findBinDir(t)
	s := &Server{bindir: bindir}
	if os.Geteuid() == 0 {
		s.runAs = "postgres"
		if _, err := user.Lookup(s.runAs); err != nil {
			fail(t, "pgtest: running as root needs a postgres user: "+err.Error())
		}
		if _, err := exec.LookPath("runuser"); err != nil {
			fail(t, "pgtest: running as root needs runuser: "+err.Error())
		}
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	s.dir = dir
	t.Cleanup(func() {
		s.stop(t, "immediate")
		os.RemoveAll(dir)
	})
	if s.runAs != "" {
		u, _ := user.Lookup(s.runAs)
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatalf("pgtest: give %s to %s: %v", dir, s.runAs, err)
		}
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	if out, err := s.cmd("initdb", "-D", s.dataDir(), "--auth=trust", "--username=postgres",
		"--encoding=UTF8", "--locale=C", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("pgtest: initdb: %v\n%s", err, out)
	}
	if out, err := s.cmd("mkdir", "-p", s.sockDir()).CombinedOutput(); err != nil {
		t.Fatalf("pgtest: socket dir: %v\n%s", err, out)
	}
	s.port = freePort(t)
	s.Start(t)
	return s
}

func (s *Server) dataDir() string { return filepath.Join(s.dir, "data") }
func (s *Server) sockDir() string { return filepath.Join(s.dir, "sock") }

// URL is the server's connection URL (database postgres, user postgres, no
// password, no TLS).
func (s *Server) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.port)
}

// Port is the server's TCP port (unchanged across Stop and Start).
func (s *Server) Port() int { return s.port }

// Start starts a stopped server again (same port and data) and waits until
// it accepts connections.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running {
		return
	}
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off", s.port, s.sockDir())
	if out, err := s.cmd("pg_ctl", "-D", s.dataDir(), "-l", filepath.Join(s.dir, "server.log"), "-o", opts, "-w", "-t", "60", "start").CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "server.log"))
		t.Fatalf("pgtest: pg_ctl start: %v\n%s\n%s", err, out, log)
	}
	s.running = true
}

// Stop stops the server (fast shutdown: open sessions are terminated) and
// waits until it is down; Start brings it back.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	if err := s.stop(t, "fast"); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
}

func (s *Server) stop(t testing.TB, mode string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.running {
		return nil
	}
	if out, err := s.cmd("pg_ctl", "-D", s.dataDir(), "-m", mode, "-w", "-t", "60", "stop").CombinedOutput(); err != nil {
		return fmt.Errorf("pg_ctl stop: %w\n%s", err, out)
	}
	s.running = false
	return nil
}

// cmd runs a PostgreSQL binary (or, for "mkdir", the system's) as the
// server's user.
func (s *Server) cmd(name string, args ...string) *exec.Cmd {
	path := name
	if name != "mkdir" {
		path = filepath.Join(s.bindir, name)
	}
	var c *exec.Cmd
	if s.runAs != "" {
		c = exec.Command("runuser", append([]string{"-u", s.runAs, "--", path}, args...)...)
	} else {
		c = exec.Command(path, args...)
	}
	c.Dir = s.dir
	c.Env = append(os.Environ(), "LC_ALL=C", "LANG=C")
	c.Stdin = bytes.NewReader(nil)
	return c
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("pgtest: free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func findBinDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("TELEMETRY_PG_BINDIR"); d != "" {
		if !hasServer(d) {
			t.Fatalf("pgtest: TELEMETRY_PG_BINDIR=%s has no initdb, pg_ctl and postgres", d)
		}
		return d
	}
	cands, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	// 15 first (what the project installs), then the newest.
	sort.Slice(cands, func(i, j int) bool {
		if a, b := filepath.Base(filepath.Dir(cands[i])) == "15", filepath.Base(filepath.Dir(cands[j])) == "15"; a != b {
			return a
		}
		return cands[i] > cands[j]
	})
	for _, d := range cands {
		if hasServer(d) {
			return d
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil && hasServer(filepath.Dir(p)) {
		return filepath.Dir(p)
	}
	fail(t, "pgtest: PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: install postgresql-15 or set TELEMETRY_PG_BINDIR")
	return ""
}

func hasServer(dir string) bool {
	for _, n := range []string{"initdb", "pg_ctl", "postgres"} {
		fi, err := os.Stat(filepath.Join(dir, n))
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// fail skips, or fails under CI=true (a missing server must not pass CI).
func fail(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}
