package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/telemetryd/telemetryd/storage/influxtest"
)

// child is a process the harness started.
type child struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

func startChild(name, logDir string, env []string, bin string, args ...string) (*child, error) {
	logPath := filepath.Join(logDir, name+".log")
	out, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), env...)
	// Own process group: a Ctrl-C reaches the harness, which stops the
	// children in order; Pdeathsig kills them if the harness dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		out.Close()
		close(c.done)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, waits up to grace, then kills.
func (c *child) stop(grace time.Duration) {
	if c == nil || c.exited() {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

func (c *child) tail() string { return tailFile(c.logPath, 3000) }

func tailFile(path string, n int64) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if int64(len(b)) > n {
		b = b[int64(len(b))-n:]
	}
	return string(b)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitFor polls check every 50ms until it returns nil, the child exits or
// timeout passes.
func waitFor(ctx context.Context, c *child, timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if c != nil && c.exited() {
			return fmt.Errorf("%s exited (%v) before it was ready: %w\n--- tail of %s:\n%s", c.name, c.err, err, c.logPath, c.tail())
		}
		if time.Now().After(deadline) {
			msg := fmt.Sprintf("not ready after %v: %v", timeout, err)
			if c != nil {
				msg += "\n--- tail of " + c.logPath + ":\n" + c.tail()
			}
			return errors.New(msg)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// findBinary resolves a binary: the flag, then the environment variable,
// then candidates, then $PATH.
func findBinary(flagVal, env string, candidates []string, name string) (string, error) {
	if flagVal != "" {
		return flagVal, nil
	}
	if v := os.Getenv(env); v != "" {
		return v, nil
	}
	for _, c := range candidates {
		if fi, err := os.Stat(c); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return c, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s not found: run `make tools` or set %s", name, env)
}

// moduleRoot walks up from the working directory to the go.mod.
func moduleRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return "."
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}

// raiseFileLimit lifts RLIMIT_NOFILE (children inherit it) to want, or as
// far as allowed, and returns the soft limit in force.
func raiseFileLimit(want uint64) uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	if lim.Cur >= want {
		return lim.Cur
	}
	if lim.Max < want {
		// Raising the hard limit needs CAP_SYS_RESOURCE; try, then settle.
		if nr, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
			if n, err := strconv.ParseUint(strings.TrimSpace(string(nr)), 10, 64); err == nil {
				want = min(want, n)
			}
		}
		try := syscall.Rlimit{Cur: want, Max: want}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &try) == nil {
			return want
		}
		want = lim.Max
	}
	lim.Cur = want
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	return lim.Cur
}

// stack is the running system under test plus the raw baseline server.
type stack struct {
	log    *slog.Logger
	dir    string // temporary: configs, data
	logDir string // kept: process logs

	influx    *child
	influxURL string
	broker    *child
	mqttURL   string
	svc       *child
	svcAddr   string // host:port of /v1/ingest, /v1/live, /metrics
	adminAddr string // host:port of pprof
	adminTok  string
	raw       *child
	rawAddr   string
	bare      *child // the bare paho subscriber while a P2 phase runs it (baresub.go)

	svcBin    string
	svcArgs   []string // telemetryd's flags, kept for restartService
	svcStarts int

	httpc *http.Client
}

const (
	serviceDB = "telemetry"
	bulkDB    = "bulk"
)

func (s *stack) close() {
	s.bare.stop(3 * time.Second)
	s.raw.stop(3 * time.Second)
	s.svc.stop(10 * time.Second)
	s.broker.stop(5 * time.Second)
	s.influx.stop(10 * time.Second)
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
}

// startStack starts InfluxDB, Mosquitto, the raw server and telemetryd.
func startStack(ctx context.Context, cfg config, tokens []deviceToken, maxConns int, log *slog.Logger) (_ *stack, err error) {
	dir, err := os.MkdirTemp("", "telemetryd-bench-")
	if err != nil {
		return nil, err
	}
	s := &stack{log: log, dir: dir, logDir: filepath.Join(cfg.Out, "logs"), httpc: &http.Client{Timeout: 30 * time.Second}}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if err := os.MkdirAll(s.logDir, 0o755); err != nil {
		return nil, err
	}
	root := moduleRoot()
	influxd, err := findBinary(cfg.Influxd, "TELEMETRY_INFLUXD", []string{filepath.Join(root, ".tools/bin/influxd")}, "influxd")
	if err != nil {
		return nil, err
	}
	mosquitto, err := findBinary(cfg.Mosquitto, "TELEMETRY_MOSQUITTO", []string{"/usr/sbin/mosquitto"}, "mosquitto")
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(cfg.Telemetryd); err != nil {
		return nil, fmt.Errorf("telemetryd binary: %w (build it: go build -o bin/ ./cmd/...)", err)
	}

	// Start InfluxDB and Mosquitto together; each waits for its own port.
	if err := s.startInflux(ctx, influxd); err != nil {
		return nil, err
	}
	if err := s.startBroker(ctx, mosquitto); err != nil {
		return nil, err
	}
	if err := s.startRaw(ctx); err != nil {
		return nil, err
	}
	if err := s.startService(ctx, cfg, tokens, maxConns); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *stack) startInflux(ctx context.Context, bin string) error {
	ports := make([]int, 2)
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return err
		}
		ports[i] = p
	}
	d := filepath.Join(s.dir, "influxdb")
	// As influxtest.Start, but without Flux: the service writes and runs
	// InfluxQL only, and Flux costs ~3 s of CPU at start.
	conf := influxtest.Config(d, ports[0], ports[1], false)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return err
	}
	confPath := filepath.Join(d, "influxdb.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return err
	}
	c, err := startChild("influxd", s.logDir, nil, bin, "-config", confPath)
	if err != nil {
		return err
	}
	s.influx = c
	s.influxURL = "http://127.0.0.1:" + strconv.Itoa(ports[0])
	err = waitFor(ctx, c, 60*time.Second, func() error {
		resp, err := s.httpc.Get(s.influxURL + "/ping")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			return fmt.Errorf("/ping: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("influxd: %w", err)
	}
	for _, db := range []string{serviceDB, bulkDB} {
		if err := s.influxQuery(ctx, "CREATE DATABASE "+db); err != nil {
			return err
		}
	}
	return nil
}

func (s *stack) influxQuery(ctx context.Context, q string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.influxURL+"/query", strings.NewReader(url.Values{"q": {q}}.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := s.httpc.Do(req)
	if err != nil {
		return fmt.Errorf("influx %q: %w", q, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || bytes.Contains(body, []byte(`"error"`)) {
		return fmt.Errorf("influx %q: %s %s", q, resp.Status, body)
	}
	return nil
}

func (s *stack) startBroker(ctx context.Context, bin string) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	d := filepath.Join(s.dir, "mosquitto")
	if err := os.MkdirAll(d, 0o755); err != nil {
		return err
	}
	// The production reference's settings (deploy/mosquitto.conf: in-flight
	// window, queue, persistence), then what the launcher adds: listener,
	// persistence location, logging.
	var c strings.Builder
	c.WriteString(brokerSettings(filepath.Join(moduleRoot(), "deploy", "mosquitto.conf")))
	fmt.Fprintf(&c, "listener %d 127.0.0.1\npersistence_location %s/\n", port, d)
	c.WriteString("allow_anonymous true\nset_tcp_nodelay true\n")
	fmt.Fprintf(&c, "log_dest file %s\nlog_type error\nlog_type warning\nlog_type notice\n", filepath.Join(s.logDir, "mosquitto.broker.log"))
	if os.Geteuid() == 0 {
		c.WriteString("user root\n")
	}
	confPath := filepath.Join(d, "mosquitto.conf")
	if err := os.WriteFile(confPath, []byte(c.String()), 0o600); err != nil {
		return err
	}
	ch, err := startChild("mosquitto", s.logDir, nil, bin, "-c", confPath)
	if err != nil {
		return err
	}
	s.broker = ch
	addr := "127.0.0.1:" + strconv.Itoa(port)
	s.mqttURL = "tcp://" + addr
	return waitFor(ctx, ch, 30*time.Second, func() error {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return conn.Close()
	})
}

// brokerSettings returns the global settings of the project's Mosquitto
// configuration (path), without what a launcher sets per deployment; the
// values of the time of writing when the file cannot be read.
func brokerSettings(path string) string {
	const fallback = "per_listener_settings false\npersistence true\nautosave_interval 1\nautosave_on_changes false\n" +
		"max_inflight_messages 10000\nmax_queued_messages 1000000\nmax_queued_bytes 0\nqueue_qos0_messages false\n"
	b, err := os.ReadFile(path)
	if err != nil {
		return fallback
	}
	var out strings.Builder
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		key, _, _ := strings.Cut(line, " ")
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case slices.Contains([]string{"listener", "persistence_location", "password_file", "acl_file", "log_dest", "log_type", "include_dir", "user", "allow_anonymous"}, key):
		default:
			out.WriteString(line + "\n")
		}
	}
	if !strings.Contains(out.String(), "per_listener_settings") {
		return fallback
	}
	return out.String()
}

func (s *stack) startRaw(ctx context.Context) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	s.rawAddr = "127.0.0.1:" + strconv.Itoa(port)
	c, err := startChild("rawserver", s.logDir, []string{roleEnv + "=rawserver", rawAddrEnv + "=" + s.rawAddr}, self)
	if err != nil {
		return err
	}
	s.raw = c
	return waitFor(ctx, c, 30*time.Second, func() error {
		_, err := s.rawStats(ctx, false)
		return err
	})
}

// deviceToken is one line of telemetryd's -device-tokens file.
type deviceToken struct{ ID, Token string }

func tokenFor(id string) string { return "bench-" + id }

func (s *stack) startService(ctx context.Context, cfg config, tokens []deviceToken, maxConns int) error {
	var b strings.Builder
	for _, t := range tokens {
		fmt.Fprintf(&b, "%s %s\n", t.ID, t.Token)
	}
	tokPath := filepath.Join(s.dir, "device-tokens")
	if err := os.WriteFile(tokPath, []byte(b.String()), 0o600); err != nil {
		return err
	}
	ports := make([]int, 2)
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return err
		}
		ports[i] = p
	}
	s.svcAddr = "127.0.0.1:" + strconv.Itoa(ports[0])
	s.adminAddr = "127.0.0.1:" + strconv.Itoa(ports[1])
	tok := make([]byte, 16)
	_, _ = rand.Read(tok)
	s.adminTok = "bench-admin-" + hex.EncodeToString(tok)
	args := []string{
		"-http-addr", s.svcAddr,
		"-admin-addr", s.adminAddr, // pprof
		"-admin-token", s.adminTok, // admin API (P1 gateways) and an unrestricted viewer (P4, P5)
		"-device-tokens", tokPath,
		"-data-dir", filepath.Join(s.dir, "telemetryd"),
		"-influx-url", s.influxURL,
		"-influx-bucket", serviceDB + "/autogen",
		"-mqtt-url", s.mqttURL,
		"-mqtt-client-id", "telemetryd-bench",
		"-mqtt-connections", strconv.Itoa(cfg.sizes().P2Consumers),
		"-log-level", "warn",
		"-shutdown-grace", "5s",
		// The benchmark's devices send far above the production default of
		// 100 frames/s each; a high rate keeps the bucket code on the path.
		"-device-frame-rate", "1000000",
		"-max-conns", strconv.Itoa(maxConns),
	}
	args = append(args, cfg.ServiceArgs...)
	s.svcBin, s.svcArgs = cfg.Telemetryd, args
	if err := s.launchService(); err != nil {
		return err
	}
	return s.waitReady(ctx)
}

// launchService starts telemetryd with s.svcArgs. A restart logs to
// telemetryd.<n>.log: the first process's log stays.
func (s *stack) launchService() error {
	s.svcStarts++
	name := "telemetryd"
	if s.svcStarts > 1 {
		name += "." + strconv.Itoa(s.svcStarts)
	}
	c, err := startChild(name, s.logDir, nil, s.svcBin, s.svcArgs...)
	if err != nil {
		return err
	}
	s.svc = c
	return nil
}

// stopService stops telemetryd through its graceful shutdown (SIGTERM):
// everything accepted is written and acked first; its MQTT sessions stay
// with the broker, which queues their messages until it is back.
func (s *stack) stopService() { s.svc.stop(20 * time.Second) }

// restartService starts telemetryd again with the same flags — ports,
// data directory, admin token and MQTT client id, hence the same
// persistent MQTT session — and returns once the process is started,
// without waiting for it to be ready (waitReady).
func (s *stack) restartService() error {
	if !s.svc.exited() {
		return errors.New("restart: telemetryd still running")
	}
	return s.launchService()
}

// waitReady waits until telemetryd's /readyz answers 200.
func (s *stack) waitReady(ctx context.Context) error {
	return waitFor(ctx, s.svc, 60*time.Second, func() error {
		resp, err := s.httpc.Get("http://" + s.svcAddr + "/readyz")
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %s %s", resp.Status, body)
		}
		return nil
	})
}

// metrics scrapes telemetryd's /metrics into "name{labels}" → value;
// with names, only those metric families (promhttp's name[] filter).
// The scrape asks for no compression: gzip made the harness's 100 ms
// polls cost telemetryd ~6 % of its CPU in P2, which counted against the
// service in the CPU ratio.
func (s *stack) metrics(ctx context.Context, names ...string) (metricSet, error) {
	u := "http://" + s.svcAddr + "/metrics"
	if len(names) > 0 {
		q := url.Values{}
		for _, n := range names {
			q.Add("name[]", n)
		}
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := s.httpc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s", resp.Status)
	}
	return parseMetrics(resp.Body)
}

// metricSet is a scrape of Prometheus text format.
type metricSet map[string]float64

func parseMetrics(r io.Reader) (metricSet, error) {
	m := metricSet{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i <= 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] = v
	}
	return m, sc.Err()
}

// sum adds every series of the metric name (with any labels).
func (m metricSet) sum(name string) float64 {
	var t float64
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			t += v
		}
	}
	return t
}

// get is one series, e.g. `telemetryd_acks_sent_total{transport="mqtt"}`.
func (m metricSet) get(key string) float64 { return m[key] }

// delta returns after−before for every series of the names given (all
// counters when names is empty), skipping zero differences.
func delta(before, after metricSet, prefixes ...string) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		if len(prefixes) > 0 && !hasAnyPrefix(k, prefixes) {
			continue
		}
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

func hasAnyPrefix(s string, ps []string) bool {
	for _, p := range ps {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// rawStats reads the raw server's counters (gc: run a GC first).
func (s *stack) rawStats(ctx context.Context, gc bool) (rawCounters, error) {
	u := "http://" + s.rawAddr + "/stats"
	if gc {
		u += "?gc=1"
	}
	var st rawCounters
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return st, err
	}
	resp, err := s.httpc.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// profiler fetches telemetryd's CPU profile over a window and its heap
// profile after it, from the pprof admin listener.
type profiler struct {
	s       *stack
	out     string
	enabled bool
	log     *slog.Logger
}

// cpu starts a CPU profile of d (rounded up to whole seconds) and returns
// a function that waits for it and writes <out>/<id>.cpu.pprof.
func (p *profiler) cpu(ctx context.Context, id string, d time.Duration) (wait func() string) {
	return p.cpuOf(ctx, p.s.adminAddr, id, d)
}

// cpuOf is cpu for the telemetryd whose admin listener is at addr.
func (p *profiler) cpuOf(ctx context.Context, addr, id string, d time.Duration) (wait func() string) {
	if !p.enabled || d < time.Second {
		return func() string { return "" }
	}
	secs := int((d + time.Second - 1) / time.Second)
	path := filepath.Join(p.out, id+".cpu.pprof")
	var wg sync.WaitGroup
	var errMsg string
	wg.Go(func() {
		if err := p.fetch(ctx, addr, "/debug/pprof/profile?seconds="+strconv.Itoa(secs), path, d+30*time.Second); err != nil {
			errMsg = err.Error()
		}
	})
	return func() string {
		wg.Wait()
		if errMsg != "" {
			p.log.Warn("cpu profile not written", "scenario", id, "error", errMsg)
			return ""
		}
		return path
	}
}

// heap writes <out>/<id>.heap.pprof (after a GC).
func (p *profiler) heap(ctx context.Context, id string) string {
	if !p.enabled {
		return ""
	}
	path := filepath.Join(p.out, id+".heap.pprof")
	if err := p.fetch(ctx, p.s.adminAddr, "/debug/pprof/heap?gc=1", path, 30*time.Second); err != nil {
		p.log.Warn("heap profile not written", "scenario", id, "error", err)
		return ""
	}
	return path
}

func (p *profiler) fetch(ctx context.Context, addr, path, file string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s: %s %s", path, resp.Status, b)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// topOf summarizes a CPU profile with `go tool pprof -top` into
// <profile>.top.txt (flat) and <profile>.cum.txt (-cum: which paths the
// time goes down, docs/performance.md) and returns the flat summary's
// first lines (empty if go is missing).
func topOf(profile string, n int) []string {
	if profile == "" {
		return nil
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return nil
	}
	base := strings.TrimSuffix(profile, ".pprof")
	if out, err := exec.Command(goBin, "tool", "pprof", "-top", "-cum", "-nodecount=60", profile).Output(); err == nil {
		_ = os.WriteFile(base+".cum.txt", out, 0o644)
	}
	out, err := exec.Command(goBin, "tool", "pprof", "-top", "-nodecount=25", profile).Output()
	if err != nil {
		return nil
	}
	_ = os.WriteFile(base+".top.txt", out, 0o644)
	var lines []string
	started := false
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "flat") {
			started = true
			continue
		}
		if started && strings.TrimSpace(l) != "" {
			lines = append(lines, strings.TrimSpace(l))
			if len(lines) == n {
				break
			}
		}
	}
	return lines
}
