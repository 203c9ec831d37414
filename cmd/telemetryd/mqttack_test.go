package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/telemetryd/telemetryd/bridge"
	"github.com/telemetryd/telemetryd/ingest"
	"github.com/telemetryd/telemetryd/ingest/mqtttest"
	"github.com/telemetryd/telemetryd/internal/testsupport"
	"github.com/telemetryd/telemetryd/telemetry"
)

// TestStalledBrokerSocketDoesNotDelayWSAcks: the bridge completes every
// frame, from both transports, on one goroutine, in arrival order. When the
// socket towards the broker stops moving, the MQTT PUBACKs cannot be
// written; a WebSocket frame completed after those MQTT frames must still
// be acknowledged at once.
//
// The real bridge, WebSocket endpoint and MQTT consumer, and a real
// Mosquitto behind a proxy that stops forwarding telemetryd → broker. The
// consumer reaches the proxy over a Unix socket, where every unbuffered
// 4-byte PUBACK write is charged a whole socket buffer, so that a few
// thousand messages fill the kernel's buffer and paho's writer really
// blocks (over TCP it would take hundreds of thousands).
func TestStalledBrokerSocketDoesNotDelayWSAcks(t *testing.T) {
	const total = 2000 // MQTT messages published while stalled
	broker := mqtttest.Start(t, mqtttest.Options{})
	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())

	sink := &countingSink{}
	b := bridge.New(bridge.Config{FlushInterval: time.Millisecond}, sink, nil, log)
	bridgeDone := make(chan struct{})
	go func() { _ = b.Run(ctx); close(bridgeDone) }()

	ws := ingest.NewWS(ingest.WSConfig{}, tokenAuth{"ws-token": "ws-1"}, b, log)
	srv := httptest.NewServer(ws)
	t.Cleanup(srv.Close)

	proxy := startStallProxy(t, broker.Addr())
	m, err := ingest.NewMQTT(ingest.MQTTConfig{URL: "unix://" + proxy.path, ClientID: "ack-test"}, b, log)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stopIntake := context.WithCancel(ctx)
	mqttDone := make(chan struct{})
	go func() { _ = m.Run(runCtx); close(mqttDone) }()
	t.Cleanup(func() {
		proxy.resume()
		stopIntake()
		<-mqttDone
		cancel()
		<-bridgeDone
		m.Close()
	})
	testsupport.Eventually(t, 20*time.Second, "MQTT subscribed", m.Connected)

	pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(broker.URL()).SetClientID("pub").SetMaxResumePubInFlight(0))
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher connect: %v", tok.Error())
	}
	t.Cleanup(func() { pub.Disconnect(10) })
	publish := func(from, to int) {
		t.Helper()
		var toks []mqtt.Token
		for i := from; i < to; i++ {
			toks = append(toks, pub.Publish("devices/mqtt-1/telemetry", 1, false,
				fmt.Sprintf(`{"seq":%d,"measurement":"m","metrics":{"v":%d}}`, i, i)))
		}
		for _, tok := range toks {
			if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
				t.Fatalf("publish: %v", tok.Error())
			}
		}
	}

	// Unstalled, a message is stored and acked: the path works.
	publish(0, 1)
	testsupport.Eventually(t, 20*time.Second, "the first PUBACK", func() bool { return m.Stats().Acked == 1 })

	proxy.stall()
	publish(1, 1+total)
	// The stall is in effect once the proxy holds PUBACKs; stored frames
	// run ahead of the PUBACKs written once the socket's buffer is full.
	var stored int
	testsupport.Eventually(t, 30*time.Second, "MQTT messages stored, their PUBACKs stuck", func() bool {
		stored = sink.lines("mqtt-1")
		return proxy.stalledBytes() > 0 && uint64(stored) > m.Stats().Acked+100
	})
	// A WebSocket frame arriving after those stored MQTT frames is completed
	// by the same goroutine after them (arrival order), and acked while
	// their PUBACKs still wait: the MQTT side's ack sender is blocked on
	// the socket, the bridge's completer is not.
	wsc := mustDialWS(t, "ws"+strings.TrimPrefix(srv.URL, "http"), bearer("ws-token"))
	wsc.send(t, `{"seq":7,"measurement":"m","metrics":{"v":1}}`)
	var ack ackOrError
	wsc.nextJSON(t, &ack)
	if ack.Ack == nil || *ack.Ack != 7 {
		t.Fatalf("want ack 7, got %+v", ack)
	}
	acked, held := m.Stats().Acked, proxy.stalledBytes()
	if acked >= uint64(stored) || held == 0 {
		t.Fatalf("the WebSocket ack came after the PUBACKs of earlier MQTT frames (acked %d of %d, %d bytes held by the proxy)", acked, stored, held)
	}
	t.Logf("WebSocket ack received with %d of the %d earlier MQTT messages' PUBACKs written, %d bytes held by the stalled proxy", acked, stored, held)

	// Unstalled, every PUBACK due goes out.
	proxy.resume()
	testsupport.Eventually(t, 30*time.Second, "every PUBACK written", func() bool {
		st := m.Stats()
		return st.Unacked == 0 && st.Acked == 1+total
	})
}

// tokenAuth authenticates WebSocket devices by a fixed token table.
type tokenAuth map[string]telemetry.DeviceID

func (a tokenAuth) AuthenticateDevice(_ context.Context, token string) (telemetry.DeviceID, error) {
	if id, ok := a[token]; ok {
		return id, nil
	}
	return "", errors.New("unknown token")
}

// countingSink keeps the line protocol written to it.
type countingSink struct {
	mu   sync.Mutex
	body strings.Builder
}

func (s *countingSink) Write(_ context.Context, lines []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.body.Write(lines)
	return nil
}

func (s *countingSink) lines(device string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.body.String(), "device_id="+device)
}

// stallProxy forwards a Unix socket to the broker's TCP port. stall stops
// the client → broker direction: it reads no more from the client, so the
// client's socket buffer fills up and its writes block.
type stallProxy struct {
	path string
	mu   sync.Mutex
	gate chan struct{} // non-nil while stalled; closed by resume

	held atomic.Int64 // bytes read from the client and held back
}

func startStallProxy(t *testing.T, brokerAddr string) *stallProxy {
	t.Helper()
	// A short path: sun_path holds 108 bytes, t.TempDir's can be longer.
	dir, err := os.MkdirTemp("", "stall")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := &stallProxy{path: filepath.Join(dir, "s")}
	l, err := net.Listen("unix", p.path)
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	t.Cleanup(func() { l.Close(); p.resume(); conns.Wait() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", brokerAddr)
			if err != nil {
				c.Close()
				continue
			}
			conns.Add(2)
			go func() { defer conns.Done(); _, _ = io.Copy(c, up); c.Close() }()
			go func() { defer conns.Done(); p.upstream(c, up); up.Close() }()
		}
	}()
	return p
}

func (p *stallProxy) upstream(c, up net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			p.mu.Lock()
			g := p.gate
			p.mu.Unlock()
			if g != nil {
				p.held.Add(int64(n))
				<-g
				p.held.Add(-int64(n))
			}
			if _, werr := up.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *stallProxy) stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gate == nil {
		p.gate = make(chan struct{})
	}
}

func (p *stallProxy) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gate != nil {
		close(p.gate)
		p.gate = nil
	}
}

// stalledBytes is what the proxy read from the client and holds back.
func (p *stallProxy) stalledBytes() int64 { return p.held.Load() }
