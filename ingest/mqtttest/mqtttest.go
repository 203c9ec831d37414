package mqtttest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/internal/testsupport"
)

// ReadyTimeout bounds how long Start and Restart wait for the listener.
const ReadyTimeout = 30 * time.Second

// exitTimeout bounds how long Stop and Kill wait for the process to exit.
const exitTimeout = 30 * time.Second

// Options configures a broker.
type Options struct {
	// PasswordFile and ACLFile are passed as password_file and acl_file.
	// When either is set, anonymous clients are refused.
	PasswordFile, ACLFile string
	// ExtraConfig is appended to mosquitto.conf verbatim.
	ExtraConfig string
}

// Broker is a running mosquitto.
type Broker struct {
	bin     string
	dir     string
	conf    string
	logPath string // mosquitto's own log (log_dest file)
	outPath string // its stdout and stderr
	port    int

	mu   sync.Mutex
	proc *process // nil when not running
}

type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once Wait returned
	err  error         // Wait's result, valid after done
	out  *os.File
}

// Start writes mosquitto.conf into t.TempDir(), starts mosquitto and waits
// until its listener accepts TCP connections. The broker is killed when the
// test ends.
func Start(t testing.TB, opts Options) *Broker {
	t.Helper()
	bin := findBinary(t)
	dir := t.TempDir()
	b := &Broker{
		bin:     bin,
		dir:     dir,
		conf:    filepath.Join(dir, "mosquitto.conf"),
		logPath: filepath.Join(dir, "mosquitto.log"),
		outPath: filepath.Join(dir, "mosquitto.out"),
		port:    freePort(t),
	}
	var c strings.Builder
	fmt.Fprintf(&c, "listener %d 127.0.0.1\n", b.port)
	fmt.Fprintf(&c, "persistence true\npersistence_location %s/\nautosave_interval 1\n", dir)
	c.WriteString("max_inflight_messages 10000\nmax_queued_messages 100000\nqueue_qos0_messages false\n")
	if opts.PasswordFile != "" || opts.ACLFile != "" {
		c.WriteString("allow_anonymous false\n")
	} else {
		c.WriteString("allow_anonymous true\n")
	}
	if opts.PasswordFile != "" {
		fmt.Fprintf(&c, "password_file %s\n", opts.PasswordFile)
	}
	if opts.ACLFile != "" {
		fmt.Fprintf(&c, "acl_file %s\n", opts.ACLFile)
	}
	fmt.Fprintf(&c, "log_dest file %s\nlog_type error\nlog_type warning\nlog_type notice\n", b.logPath)
	if os.Geteuid() == 0 {
		// As root, mosquitto switches to the "mosquitto" user, which cannot
		// write into the test's temporary directory.
		c.WriteString("user root\n")
	}
	if opts.ExtraConfig != "" {
		c.WriteString(opts.ExtraConfig)
		c.WriteString("\n")
	}
	if err := os.WriteFile(b.conf, []byte(c.String()), 0o600); err != nil {
		t.Fatalf("mqtttest: write config: %v", err)
	}
	t.Cleanup(func() { b.stop(t, syscall.SIGKILL) })
	b.start(t)
	return b
}

// URL is the broker's address for paho: tcp://127.0.0.1:port.
func (b *Broker) URL() string { return "tcp://" + b.Addr() }

// Addr is host:port, 127.0.0.1:port.
func (b *Broker) Addr() string { return "127.0.0.1:" + strconv.Itoa(b.port) }

// Dir is the broker's temporary directory (configuration, persistence, logs).
func (b *Broker) Dir() string { return b.dir }

// Log returns mosquitto's log so far.
func (b *Broker) Log() string {
	data, err := os.ReadFile(b.logPath)
	if err != nil {
		return err.Error()
	}
	return string(data)
}

// Stop sends SIGTERM and waits: mosquitto saves its persistence database on
// the way out.
func (b *Broker) Stop(t testing.TB) {
	t.Helper()
	b.stop(t, syscall.SIGTERM)
}

// Kill sends SIGKILL and waits. What was persisted by the last autosave
// (every second) survives.
func (b *Broker) Kill(t testing.TB) {
	t.Helper()
	b.stop(t, syscall.SIGKILL)
}

// Restart starts mosquitto again with the same configuration, port and
// persistence directory, and waits until it is ready. A running broker is
// stopped gracefully (SIGTERM) first.
func (b *Broker) Restart(t testing.TB) {
	t.Helper()
	b.stop(t, syscall.SIGTERM)
	b.start(t)
}

// Reload sends SIGHUP: mosquitto reloads its configuration, including the
// password and ACL files.
func (b *Broker) Reload(t testing.TB) {
	t.Helper()
	b.mu.Lock()
	p := b.proc
	b.mu.Unlock()
	if p == nil {
		t.Fatal("mqtttest: Reload: mosquitto is not running")
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("mqtttest: send SIGHUP to mosquitto: %v", err)
	}
}

func (b *Broker) start(t testing.TB) {
	t.Helper()
	out, err := os.OpenFile(b.outPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatalf("mqtttest: open output file: %v", err)
	}
	cmd := exec.Command(b.bin, "-c", b.conf)
	cmd.Dir = b.dir
	cmd.Stdout = out
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		out.Close()
		t.Fatalf("mqtttest: start %s: %v", b.bin, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{}), out: out}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	b.mu.Lock()
	b.proc = p
	b.mu.Unlock()
	if err := b.waitReady(p); err != nil {
		b.stop(t, syscall.SIGKILL)
		t.Fatalf("mqtttest: mosquitto did not become ready: %v\n--- %s:\n%s\n--- tail of %s:\n%s",
			err, b.outPath, tail(b.outPath, 4096), b.logPath, tail(b.logPath, 4096))
	}
}

func (b *Broker) waitReady(p *process) error {
	deadline := time.Now().Add(ReadyTimeout)
	for {
		select {
		case <-p.done:
			return fmt.Errorf("mosquitto exited: %v", p.err)
		default:
		}
		conn, err := net.DialTimeout("tcp", b.Addr(), time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no listener on %s after %v: %w", b.Addr(), ReadyTimeout, err)
		}
		select {
		case <-p.done:
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stop signals the process (if running) and waits for it to exit.
func (b *Broker) stop(t testing.TB, sig syscall.Signal) {
	t.Helper()
	b.mu.Lock()
	p := b.proc
	b.proc = nil
	b.mu.Unlock()
	if p == nil {
		return
	}
	defer p.out.Close()
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(exitTimeout):
		_ = p.cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(exitTimeout):
		}
		t.Errorf("mqtttest: mosquitto did not exit within %v after %v", exitTimeout, sig)
	}
}

// findBinary locates mosquitto: TELEMETRY_MOSQUITTO, Debian's, then PATH.
func findBinary(t testing.TB) string {
	t.Helper()
	return testsupport.Binary(t, "TELEMETRY_MOSQUITTO",
		"mosquitto 2.0.x: run `make tools` (installs it with apt-get install mosquitto) or set TELEMETRY_MOSQUITTO",
		"/usr/sbin/mosquitto", "mosquitto")
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("mqtttest: find free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// tail returns the last n bytes of a file.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err.Error()
	}
	off := max(fi.Size()-n, 0)
	buf := make([]byte, fi.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
		return err.Error()
	}
	return string(buf)
}
