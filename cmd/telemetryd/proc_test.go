package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The crash tests need a real process to kill -9: they build telemetryd once
// and run it as a child.

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func telemetrydBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "telemetryd-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "telemetryd")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = &buildError{err: err, out: string(out)}
		}
	})
	if buildErr != nil {
		t.Fatalf("building telemetryd: %v", buildErr)
	}
	return binPath
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + ": " + e.out }

// proc is telemetryd running as a child process.
type proc struct {
	t    *testing.T
	args []string
	mu   sync.Mutex
	addr string // guarded by mu: devices read it while the process restarts
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan error
}

// startProc starts telemetryd with args; -http-addr 127.0.0.1:0 picks a port,
// which later restarts reuse.
func startProc(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, args: append([]string{"-http-addr", "127.0.0.1:0"}, args...)}
	p.start()
	t.Cleanup(func() {
		if p.cmd != nil && p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("telemetryd process log:\n%s", tail(p.log.String(), 8000))
		}
	})
	return p
}

func (p *proc) start() {
	t := p.t
	t.Helper()
	args := p.args
	if addr := p.getAddr(); addr != "" {
		args = append(append([]string{}, args...), "-http-addr", addr) // the last flag wins
	}
	cmd := exec.Command(telemetrydBinary(t), args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if p.log == nil {
		p.log = &syncBuffer{}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.cmd = cmd
	p.done = make(chan error, 1)
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(io.TeeReader(stderr, io.Discard))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.log.Write([]byte(line + "\n"))
			if strings.Contains(line, `"msg":"telemetryd serving"`) {
				var m struct {
					Addr string `json:"addr"`
				}
				_ = json.Unmarshal([]byte(line), &m)
				select {
				case ready <- m.Addr:
				default:
				}
			}
		}
		p.done <- cmd.Wait()
	}()
	select {
	case addr := <-ready:
		p.mu.Lock()
		p.addr = addr
		p.mu.Unlock()
	case err := <-p.done:
		t.Fatalf("telemetryd exited at start: %v\n%s", err, p.log)
	case <-time.After(60 * time.Second):
		t.Fatalf("telemetryd did not start\n%s", p.log)
	}
}

func (p *proc) getAddr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addr
}

// waitReady waits for /readyz (InfluxDB reachable, MQTT subscribed).
func (p *proc) waitReady() {
	p.t.Helper()
	eventually(p.t, 30*time.Second, "readyz", func() bool {
		resp, err := http.Get("http://" + p.getAddr() + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func (p *proc) ws(path string) string { return "ws://" + p.getAddr() + path }

// kill9 kills the process without warning.
func (p *proc) kill9() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// term sends SIGTERM and returns how long the process took to exit.
func (p *proc) term() (time.Duration, error) {
	start := time.Now()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		return time.Since(start), err
	case <-time.After(60 * time.Second):
		p.kill9()
		return time.Since(start), os.ErrDeadlineExceeded
	}
}
