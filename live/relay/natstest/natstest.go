package natstest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// ReadyTimeout bounds how long Start and Restart wait for the listener.
const ReadyTimeout = 30 * time.Second

// Server is a running (or stopped) NATS server.
type Server struct {
	dir  string
	port int
	bin  string // "" for the in-process server

	mu   sync.Mutex
	ns   *server.Server // in-process, while running
	proc *exec.Cmd      // binary, while running
	done chan struct{}  // closed when proc exited
}

// Start runs an in-process server with JetStream on a free loopback port;
// it is shut down when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{dir: t.TempDir(), port: server.RANDOM_PORT}
	t.Cleanup(s.Stop)
	s.start(t)
	return s
}

// StartBinary runs the nats-server binary with JetStream on a free loopback
// port; it is killed when the test ends.
func StartBinary(t testing.TB) *Server {
	t.Helper()
	s := &Server{dir: t.TempDir(), bin: findBinary(t), port: -1}
	t.Cleanup(s.Stop)
	s.start(t)
	return s
}

// URL is nats://127.0.0.1:port.
func (s *Server) URL() string { return "nats://" + s.Addr() }

// Addr is 127.0.0.1:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// Version is the server's version, e.g. "2.9.10".
func (s *Server) Version(t testing.TB) string {
	t.Helper()
	if s.bin == "" {
		return server.VERSION
	}
	out, err := exec.Command(s.bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("natstest: %s --version: %v", s.bin, err)
	}
	if m := regexp.MustCompile(`v?(\d+\.\d+\.\d+)`).FindSubmatch(out); m != nil {
		return string(m[1])
	}
	return string(out)
}

// Stop shuts the server down (its store stays for Restart). Stopping a
// stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ns != nil {
		s.ns.Shutdown()
		s.ns.WaitForShutdown()
		s.ns = nil
	}
	if s.proc != nil {
		_ = s.proc.Process.Kill()
		<-s.done
		s.proc = nil
	}
}

// Restart starts the stopped server again on the same port with the same
// JetStream store.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	s.start(t)
}

func (s *Server) start(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bin == "" {
		s.startInProcess(t)
	} else {
		s.startBinary(t)
	}
}

func (s *Server) startInProcess(t testing.TB) {
	opts := &server.Options{
		Host: "127.0.0.1", Port: s.port, JetStream: true, StoreDir: s.dir,
		NoLog: true, NoSigs: true, ServerName: "natstest",
	}
	// The port was free a moment ago (Restart): retry while the old
	// listener's socket lingers.
	deadline := time.Now().Add(ReadyTimeout)
	for {
		ns, err := server.NewServer(opts)
		if err != nil {
			t.Fatalf("natstest: %v", err)
		}
		ns.Start()
		if ns.ReadyForConnections(ReadyTimeout) {
			s.ns = ns
			s.port = ns.Addr().(*net.TCPAddr).Port
			return
		}
		ns.Shutdown()
		if time.Now().After(deadline) {
			t.Fatalf("natstest: in-process server not ready on port %d", s.port)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var listening = regexp.MustCompile(`Listening for client connections on [^\s]*:(\d+)`)

func (s *Server) startBinary(t testing.TB) {
	deadline := time.Now().Add(ReadyTimeout)
	for {
		cmd := exec.Command(s.bin, "-a", "127.0.0.1", "-p", strconv.Itoa(s.port), "-js", "-sd", s.dir, "-n", "natstest")
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatalf("natstest: %v", err)
		}
		cmd.Stdout = nil
		if err := cmd.Start(); err != nil {
			t.Fatalf("natstest: start %s: %v", s.bin, err)
		}
		done := make(chan struct{})
		portc := make(chan int, 1)
		var logMu sync.Mutex
		var log []string
		go func() {
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				logMu.Lock()
				log = append(log, sc.Text())
				logMu.Unlock()
				if m := listening.FindStringSubmatch(sc.Text()); m != nil {
					p, _ := strconv.Atoi(m[1])
					select {
					case portc <- p:
					default:
					}
				}
			}
			_ = cmd.Wait()
			close(done)
		}()
		select {
		case p := <-portc:
			s.port, s.proc, s.done = p, cmd, done
			return
		case <-done:
			logMu.Lock()
			out := fmt.Sprint(log)
			logMu.Unlock()
			if time.Now().After(deadline) {
				t.Fatalf("natstest: %s exited: %s", s.bin, out)
			}
			time.Sleep(100 * time.Millisecond) // the old listener may linger
		case <-time.After(time.Until(deadline)):
			_ = cmd.Process.Kill()
			<-done
			t.Fatalf("natstest: %s not listening after %v", s.bin, ReadyTimeout)
		}
	}
}

func findBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("TELEMETRY_NATS_SERVER"); p != "" {
		return p
	}
	if p, err := exec.LookPath("nats-server"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/nats-server", "/usr/bin/nats-server"} {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	const msg = "natstest: nats-server not found: install it (Debian: apt-get install nats-server) or set TELEMETRY_NATS_SERVER"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}
