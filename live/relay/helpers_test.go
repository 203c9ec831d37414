package relay

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/live"
	"github.com/telemetryd/telemetryd/telemetry"
)

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testLogB() *slog.Logger { return slog.New(slog.DiscardHandler) }

func testLog(t *testing.T) *slog.Logger {
	if os.Getenv("RELAY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

// instance is one telemetryd's live side: a Hub and its Relay.
type instance struct {
	name  string
	hub   *live.Hub
	relay *Relay
	stop  func()
}

func startInstance(t *testing.T, url, name string, tune func(*Config)) *instance {
	t.Helper()
	return startInstanceHub(t, url, name, live.HubConfig{}, tune)
}

func startInstanceHub(t *testing.T, url, name string, hc live.HubConfig, tune func(*Config)) *instance {
	t.Helper()
	log := testLog(t).With("instance", name)
	hub := live.NewHub(hc, log)
	cfg := Config{URL: url, Instance: name, FlushInterval: 50 * time.Millisecond, ReconnectWait: 50 * time.Millisecond}
	if tune != nil {
		tune(&cfg)
	}
	r, err := New(cfg, hub, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = hub.Run(ctx) })
	wg.Go(func() {
		if err := r.Run(ctx); err != nil {
			t.Errorf("relay %s: %v", name, err)
		}
	})
	var once sync.Once
	in := &instance{name: name, hub: hub, relay: r, stop: func() { once.Do(func() { cancel(); wg.Wait() }) }}
	t.Cleanup(in.stop)
	return in
}

func (in *instance) waitConnected(t *testing.T) {
	t.Helper()
	eventually(t, in.name+" connected", func() bool { return in.relay.Stats().Connected })
}

// dashboard is a Hub client that keeps every frame.
type dashboard struct {
	mu     sync.Mutex
	frames []frame
}

type frame struct {
	Type     string `json:"type"`
	Sub      string `json:"sub"`
	State    string `json:"state"`
	Reason   string `json:"reason"`
	Instance string `json:"instance"`
	Readings []struct {
		DeviceID    string             `json:"device_id"`
		Measurement string             `json:"measurement"`
		TS          int64              `json:"ts"`
		Fields      map[string]float64 `json:"fields"`
		Tags        map[string]string  `json:"tags"`
	} `json:"readings"`
	Presence []struct {
		DeviceID string `json:"device_id"`
		Online   bool   `json:"online"`
	} `json:"presence"`
	DeviceID string `json:"device_id"`
	Online   bool   `json:"online"`
	Last     bool   `json:"last"` // of a snapshot's chunks
}

func (d *dashboard) Send(b []byte) bool {
	var f frame
	if err := json.Unmarshal(b, &f); err != nil {
		panic("hub sent invalid JSON: " + string(b))
	}
	d.mu.Lock()
	d.frames = append(d.frames, f)
	d.mu.Unlock()
	return true
}

func (d *dashboard) Room() bool { return true }
func (d *dashboard) Drop()      { panic("the hub dropped a test dashboard") }

func (d *dashboard) all() []frame {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.frames)
}

func subscribe(t *testing.T, h *live.Hub, f live.Filter) *dashboard {
	t.Helper()
	d := &dashboard{}
	h.Subscribe(context.Background(), d, "s", f)
	eventually(t, "snapshot", func() bool {
		return slices.ContainsFunc(d.all(), func(f frame) bool { return f.Type == "snapshot" && f.Last })
	})
	return d
}

// seen is every (device, ts) the dashboard got in readings frames (live or
// snapshot, as asked).
func (d *dashboard) seen(types ...string) map[string][]int64 {
	out := map[string][]int64{}
	for _, f := range d.all() {
		if !slices.Contains(types, f.Type) {
			continue
		}
		for _, r := range f.Readings {
			out[r.DeviceID] = append(out[r.DeviceID], r.TS)
		}
	}
	return out
}

func (d *dashboard) has(typ, dev string, ts int64) bool {
	return slices.Contains(d.seen(typ)[dev], ts)
}

func (d *dashboard) relayStates() []string {
	var out []string
	for _, f := range d.all() {
		if f.Type == "relay" {
			out = append(out, f.State)
		}
	}
	return out
}

func reading(dev, site string, ts int64, v float64) telemetry.Reading {
	return telemetry.Reading{
		Device: telemetry.DeviceID(dev), Measurement: "env", Time: ts,
		Tags:   []telemetry.Tag{{Key: telemetry.DeviceIDTag, Value: dev}, {Key: "site", Value: site}},
		Fields: []telemetry.Field{{Name: "t", Value: telemetry.Float(v)}},
	}
}

// proxy is a TCP forwarder in front of NATS that a test can cut (every
// connection closed, new ones refused) and restore, to take NATS away from
// one instance only.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  []net.Conn
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.setCut(true) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.cut {
				p.mu.Unlock()
				c.Close()
				continue
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				p.mu.Unlock()
				c.Close()
				continue
			}
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			go func() { _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
	return p
}

func (p *proxy) URL() string { return "nats://" + p.ln.Addr().String() }

func (p *proxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}
