package influxtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
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

// ReadyTimeout bounds how long Start and Restart wait for /ping.
const ReadyTimeout = 60 * time.Second

// exitTimeout bounds how long Kill waits for the process to exit.
const exitTimeout = 30 * time.Second

// Server is a running influxd.
type Server struct {
	bin     string
	dir     string
	conf    string
	logPath string
	port    int
	url     string
	httpc   *http.Client

	mu   sync.Mutex
	proc *process // nil when not running
}

type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once Wait returned
	err  error         // Wait's result, valid after done
	log  *os.File
}

// Start starts influxd with a configuration in t.TempDir() and waits until
// it answers /ping. The server is killed when the test ends.
//
// Flux is off: telemetryd reads only through InfluxQL, and Flux's standard
// library would cost seconds of CPU at every start. Share one server
// between subtests, each in its own database, where a test does not kill or
// freeze it.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := findBinary(t)
	dir := t.TempDir()
	ports := freePorts(t, 2)
	port, rpcPort := ports[0], ports[1]
	s := &Server{
		bin:     bin,
		dir:     dir,
		conf:    filepath.Join(dir, "influxdb.conf"),
		logPath: filepath.Join(dir, "influxd.log"),
		port:    port,
		url:     "http://127.0.0.1:" + strconv.Itoa(port),
		httpc:   &http.Client{Timeout: 30 * time.Second},
	}
	conf := Config(dir, port, rpcPort, false)
	// [[graphite]], [[collectd]], [[opentsdb]] and [[udp]] are disabled by
	// default and are left out.
	if err := os.WriteFile(s.conf, []byte(conf), 0o600); err != nil {
		t.Fatalf("influxtest: write config: %v", err)
	}
	t.Cleanup(func() { s.stop(t, syscall.SIGKILL) })
	s.start(t)
	return s
}

// URL is the server's HTTP base URL, http://127.0.0.1:port.
func (s *Server) URL() string { return s.url }

// Dir is the server's temporary directory (configuration, data, log).
func (s *Server) Dir() string { return s.dir }

// CreateDB creates a database (idempotent).
func (s *Server) CreateDB(t testing.TB, name string) {
	t.Helper()
	s.Query(t, "", "CREATE DATABASE "+QuoteIdent(name))
}

// Series is one series of a query result. Numbers are json.Number.
type Series struct {
	Name    string            `json:"name"`
	Tags    map[string]string `json:"tags"`
	Columns []string          `json:"columns"`
	Values  [][]any           `json:"values"`
}

// Query runs InfluxQL against db with epoch=ns (times are json.Number
// nanoseconds) and returns the first statement's series. Read statements
// (SELECT, SHOW) use GET, others POST. A query error fails the test.
func (s *Server) Query(t testing.TB, db, q string) []Series {
	t.Helper()
	params := url.Values{"q": {q}, "epoch": {"ns"}}
	if db != "" {
		params.Set("db", db)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var req *http.Request
	var err error
	head := strings.ToUpper(strings.TrimSpace(q))
	if strings.HasPrefix(head, "SELECT") || strings.HasPrefix(head, "SHOW") {
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/query?"+params.Encode(), nil)
	} else {
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, s.url+"/query", strings.NewReader(params.Encode()))
		if req != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
	}
	if err != nil {
		t.Fatalf("influxtest: query %q: %v", q, err)
	}
	resp, err := s.httpc.Do(req)
	if err != nil {
		t.Fatalf("influxtest: query %q: %v", q, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("influxtest: query %q: read: %v", q, err)
	}
	var out struct {
		Error   string `json:"error"`
		Results []struct {
			Error  string   `json:"error"`
			Series []Series `json:"series"`
		} `json:"results"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil {
		t.Fatalf("influxtest: query %q: status %d, decode %q: %v", q, resp.StatusCode, body, err)
	}
	if out.Error != "" || resp.StatusCode != http.StatusOK {
		t.Fatalf("influxtest: query %q: status %d: %s", q, resp.StatusCode, out.Error)
	}
	if len(out.Results) == 0 {
		return nil
	}
	if out.Results[0].Error != "" {
		t.Fatalf("influxtest: query %q: %s", q, out.Results[0].Error)
	}
	return out.Results[0].Series
}

// Count runs a query such as SELECT COUNT("v") FROM "m" and returns the
// first value of its first row (0 when there are no rows).
func (s *Server) Count(t testing.TB, db, q string) int64 {
	t.Helper()
	series := s.Query(t, db, q)
	if len(series) == 0 || len(series[0].Values) == 0 {
		return 0
	}
	row := series[0].Values[0]
	if len(row) < 2 {
		t.Fatalf("influxtest: count %q: row %v has no value column", q, row)
	}
	n, ok := row[1].(json.Number)
	if !ok {
		t.Fatalf("influxtest: count %q: value %v (%T) is not a number", q, row[1], row[1])
	}
	c, err := n.Int64()
	if err != nil {
		t.Fatalf("influxtest: count %q: %v", q, err)
	}
	return c
}

// CountPoints returns how many points of measurement have a value for field.
func (s *Server) CountPoints(t testing.TB, db, measurement, field string) int64 {
	t.Helper()
	return s.Count(t, db, "SELECT COUNT("+QuoteIdent(field)+") FROM "+QuoteIdent(measurement))
}

// QuoteIdent quotes an InfluxQL identifier.
func QuoteIdent(s string) string {
	return `"` + strings.NewReplacer("\n", `\n`, `\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// Kill sends SIGKILL and waits for the process to exit. The data directory
// is kept, so Restart brings the same data back.
func (s *Server) Kill(t testing.TB) {
	t.Helper()
	s.stop(t, syscall.SIGKILL)
}

// Restart starts influxd again (killing it first if it still runs) on the
// same port and data directory, and waits until it is ready.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.stop(t, syscall.SIGKILL)
	s.start(t)
}

// Freeze stops the process with SIGSTOP: connections are accepted by the
// kernel but never answered. It returns once every thread has stopped.
func (s *Server) Freeze(t testing.TB) {
	t.Helper()
	p := s.signal(t, syscall.SIGSTOP)
	s.waitStopped(t, p, true)
}

// Thaw resumes a frozen process with SIGCONT. It returns once no thread is
// stopped any more.
func (s *Server) Thaw(t testing.TB) {
	t.Helper()
	p := s.signal(t, syscall.SIGCONT)
	s.waitStopped(t, p, false)
}

func (s *Server) signal(t testing.TB, sig syscall.Signal) *process {
	t.Helper()
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p == nil {
		t.Fatalf("influxtest: %v: influxd is not running", sig)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("influxtest: send %v to influxd: %v", sig, err)
	}
	return p
}

// waitStopped polls /proc until every thread of p is stopped (or none is).
// SIGSTOP takes effect asynchronously: a thread on another CPU may still
// answer a request right after kill(2) returned. Without /proc it returns at
// once.
func (s *Server) waitStopped(t testing.TB, p *process, stopped bool) {
	t.Helper()
	taskDir := fmt.Sprintf("/proc/%d/task", p.cmd.Process.Pid)
	if _, err := os.Stat(taskDir); err != nil {
		return
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		all, none, err := threadStates(taskDir)
		if err == nil && ((stopped && all) || (!stopped && none)) {
			return
		}
		select {
		case <-p.done:
			t.Fatalf("influxtest: influxd exited: %v", p.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("influxtest: influxd threads not %s after 10s (err %v)", map[bool]string{true: "stopped", false: "running"}[stopped], err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// threadStates reports whether all threads (or none) are in state T
// (stopped by a signal).
func threadStates(taskDir string) (all, none bool, err error) {
	entries, err := os.ReadDir(taskDir)
	if err != nil {
		return false, false, err
	}
	all, none = true, true
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(taskDir, e.Name(), "stat"))
		if err != nil {
			continue // the thread exited
		}
		// The state follows the command name, which is in parentheses.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 || i+2 >= len(b) {
			return false, false, fmt.Errorf("unexpected %s/stat: %q", e.Name(), b)
		}
		if b[i+2] == 'T' {
			none = false
		} else {
			all = false
		}
	}
	return all, none, nil
}

// start launches influxd and waits for /ping.
func (s *Server) start(t testing.TB) {
	t.Helper()
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatalf("influxtest: open log: %v", err)
	}
	fmt.Fprintf(logf, "---- influxtest: starting %s at %s\n", s.bin, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(s.bin, "run", "-config", s.conf)
	cmd.Dir = s.dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Env = hermeticEnv()
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("influxtest: start %s: %v", s.bin, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{}), log: logf}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()

	began := time.Now()
	if err := s.waitReady(p); err != nil {
		s.stop(t, syscall.SIGKILL)
		t.Fatalf("influxtest: influxd did not become ready: %v\n--- tail of %s:\n%s", err, s.logPath, tail(s.logPath, 4096))
	}
	t.Logf("influxtest: influxd ready on %s after %v", s.url, time.Since(began).Round(time.Millisecond))
}

func (s *Server) waitReady(p *process) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(ReadyTimeout)
	var last error
	for {
		select {
		case <-p.done:
			return fmt.Errorf("influxd exited: %v", p.err)
		default:
		}
		resp, err := client.Get(s.url + "/ping")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				return nil
			}
			err = fmt.Errorf("/ping: status %d", resp.StatusCode)
		}
		last = err
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v: %w", ReadyTimeout, last)
		}
		select {
		case <-p.done:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop signals the process (if running) and waits for it to exit.
func (s *Server) stop(t testing.TB, sig syscall.Signal) {
	t.Helper()
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p == nil {
		return
	}
	defer p.log.Close()
	_ = p.cmd.Process.Signal(sig)
	if sig != syscall.SIGKILL {
		_ = p.cmd.Process.Signal(syscall.SIGCONT) // a frozen process cannot handle SIGTERM
	}
	select {
	case <-p.done:
	case <-time.After(exitTimeout):
		_ = p.cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(exitTimeout):
		}
		t.Errorf("influxtest: influxd did not exit within %v after %v", exitTimeout, sig)
	}
}

// findBinary locates influxd: TELEMETRY_INFLUXD, then the one `make tools`
// installs, then PATH.
func findBinary(t testing.TB) string {
	t.Helper()
	return testsupport.Binary(t, "TELEMETRY_INFLUXD",
		"InfluxDB OSS 1.8.10: run `make tools` (installs .tools/bin/influxd) or set TELEMETRY_INFLUXD",
		".tools/bin/influxd", "influxd")
}

// hermeticEnv is the environment without INFLUXDB_* variables, which
// influxd would apply over the configuration file.
func hermeticEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "INFLUXDB_") {
			env = append(env, kv)
		}
	}
	return env
}

// freePorts returns n distinct loopback TCP ports that were free a moment ago.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("influxtest: find free port: %v", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
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
	b := make([]byte, fi.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
		return err.Error()
	}
	return string(b)
}

// Config is the influxd configuration Start uses, for other harnesses that
// run influxd themselves (bench): state under dir, HTTP and the RPC service
// on the given loopback ports, every other listener and background service
// off. Flux costs seconds of CPU at start and nothing of telemetryd
// queries with it.
func Config(dir string, httpPort, rpcPort int, flux bool) string {
	return fmt.Sprintf(`reporting-disabled = true
bind-address = "127.0.0.1:%d"

[meta]
  dir = %q
  logging-enabled = false

[data]
  dir = %q
  wal-dir = %q
  query-log-enabled = false
  wal-fsync-delay = "0s"

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:%d"
  auth-enabled = false
  log-enabled = false
  flux-enabled = %t
  pprof-enabled = false
  unix-socket-enabled = false
  https-enabled = false
  max-body-size = 0

[logging]
  level = "warn"
  suppress-logo = true
`, rpcPort, filepath.Join(dir, "meta"), filepath.Join(dir, "data"), filepath.Join(dir, "wal"), httpPort, flux)
}
