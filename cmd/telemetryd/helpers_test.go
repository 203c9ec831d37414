package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"github.com/telemetryd/telemetryd/ingest/mqtttest"
	"github.com/telemetryd/telemetryd/internal/testsupport"
	"github.com/telemetryd/telemetryd/storage/influxtest"
)

const testDB = "telemetry"

// testAdminToken is every test service's operator token; it also opens
// /v1/live as an unrestricted viewer.
const testAdminToken = "test-admin-token-0123456789"

// service is a telemetryd running in-process on a free loopback port.
type service struct {
	addr   string
	cancel context.CancelFunc
	done   chan struct{} // closed when run returns
	err    error         // run's result, set before done is closed
	stderr *syncBuffer
}

func (s *service) url(path string) string { return "http://" + s.addr + path }
func (s *service) ws(path string) string  { return "ws://" + s.addr + path }

// stop shuts the service down as SIGTERM would and waits for it.
func (s *service) stop(t *testing.T) {
	t.Helper()
	s.cancel()
	select {
	case <-s.done:
		if s.err != nil {
			t.Fatalf("telemetryd: %v", s.err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("telemetryd did not stop")
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// tokensFile writes a static device token list.
func tokensFile(t *testing.T, pairs ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tokens.txt")
	var b strings.Builder
	for i := 0; i+1 < len(pairs); i += 2 {
		fmt.Fprintf(&b, "%s %s\n", pairs[i], pairs[i+1])
	}
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// startService runs telemetryd against influx and broker (nil: MQTT off).
func startService(t *testing.T, influx *influxtest.Server, broker *mqtttest.Broker, tokens string, extra ...string) *service {
	t.Helper()
	mqttURL := ""
	if broker != nil {
		mqttURL = broker.URL()
	}
	return startServiceAt(t, influx.URL(), mqttURL, tokens, extra...)
}

// startServiceAt runs telemetryd against the InfluxDB at influxURL (which
// need not answer) and the broker at mqttURL ("": MQTT off).
func startServiceAt(t *testing.T, influxURL, mqttURL, tokens string, extra ...string) *service {
	t.Helper()
	args := append([]string{
		"-http-addr", "127.0.0.1:0",
		"-influx-url", influxURL,
		"-influx-bucket", testDB + "/autogen",
		"-mqtt-url", mqttURL,
		"-mqtt-client-id", "telemetryd-test-" + strings.ReplaceAll(t.Name(), "/", "-"),
		"-device-tokens", tokens,
		"-admin-token", testAdminToken,
		"-data-dir", t.TempDir(),
		"-log-level", "debug",
		"-shutdown-grace", "10s",
		"-drain-delay", "0",
	}, extra...)
	ctx, cancel := context.WithCancel(context.Background())
	s := &service{cancel: cancel, done: make(chan struct{}), stderr: &syncBuffer{}}
	ready := make(chan string, 1)
	noEnv := func(string) (string, bool) { return "", false }
	go func() { s.err = run(ctx, args, noEnv, s.stderr, ready); close(s.done) }()
	select {
	case s.addr = <-ready:
	case <-s.done:
		t.Fatalf("telemetryd exited: %v\n%s", s.err, s.stderr)
	case <-time.After(60 * time.Second):
		t.Fatalf("telemetryd did not start\n%s", s.stderr)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.done:
		case <-time.After(30 * time.Second):
		}
		if t.Failed() {
			t.Logf("telemetryd log:\n%s", tail(s.stderr.String(), 8000))
		}
	})
	return s
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// wsClient is a WebSocket peer that collects text messages and the close code.
type wsClient struct {
	gws.BuiltinEventHandler
	conn     *gws.Conn
	msgs     chan string
	closed   chan struct{}
	mu       sync.Mutex
	closeErr error
}

func dialWS(t *testing.T, url string, header http.Header) (*wsClient, *http.Response, error) {
	t.Helper()
	c := &wsClient{msgs: make(chan string, 10000), closed: make(chan struct{})}
	conn, resp, err := gws.NewClient(c, &gws.ClientOption{Addr: url, RequestHeader: header})
	if err != nil {
		return nil, resp, err
	}
	c.conn = conn
	go conn.ReadLoop()
	t.Cleanup(func() { _ = conn.WriteClose(1000, nil) })
	return c, resp, nil
}

func mustDialWS(t *testing.T, url string, header http.Header) *wsClient {
	t.Helper()
	c, resp, err := dialWS(t, url, header)
	if err != nil {
		body := ""
		if resp != nil && resp.Body != nil {
			b, _ := io.ReadAll(resp.Body)
			body = string(b)
		}
		t.Fatalf("dial %s: %v %s", url, err, body)
	}
	return c
}

func bearer(token string) http.Header { return http.Header{"Authorization": {"Bearer " + token}} }

func (c *wsClient) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	c.msgs <- string(m.Bytes())
}

func (c *wsClient) OnClose(_ *gws.Conn, err error) {
	c.mu.Lock()
	c.closeErr = err
	c.mu.Unlock()
	close(c.closed)
}

func (c *wsClient) send(t *testing.T, msg string) {
	t.Helper()
	if err := c.conn.WriteString(msg); err != nil {
		t.Fatalf("send: %v", err)
	}
}

// next returns the next message, failing the test after timeout.
func (c *wsClient) next(t *testing.T, timeout time.Duration) string {
	t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(timeout):
		t.Fatalf("no message within %s", timeout)
		return ""
	}
}

// nextJSON decodes the next message into v.
func (c *wsClient) nextJSON(t *testing.T, v any) string {
	t.Helper()
	m := c.next(t, 15*time.Second)
	if err := json.Unmarshal([]byte(m), v); err != nil {
		t.Fatalf("message %q: %v", m, err)
	}
	return m
}

// closeCode waits for the socket to close and returns the peer's close code
// (0 when it closed without one).
func (c *wsClient) closeCode(t *testing.T) uint16 {
	t.Helper()
	select {
	case <-c.closed:
	case <-time.After(15 * time.Second):
		t.Fatal("socket not closed")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if ce, ok := c.closeErr.(*gws.CloseError); ok {
		return ce.Code
	}
	return 0
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testsupport.Eventually(t, timeout, what, cond)
}
