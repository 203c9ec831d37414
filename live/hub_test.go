package live

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"testing"

	"github.com/telemetryd/telemetryd/telemetry"
)

type fakeClient struct {
	mu     sync.Mutex
	frames []string
	limit  int // Send fails once this many frames are held (0: unlimited)
}

func (c *fakeClient) Send(frame []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.limit > 0 && len(c.frames) >= c.limit {
		return false
	}
	c.frames = append(c.frames, string(frame))
	return true
}

// Room: an unlimited client always has room, a limited one up to half its limit.
func (c *fakeClient) Room() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.limit == 0 || len(c.frames) <= c.limit/2
}

func (c *fakeClient) Drop() {}

func (c *fakeClient) all() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.frames...)
}

type liveFrame struct {
	Type     string `json:"type"`
	Sub      string `json:"sub"`
	Readings []struct {
		DeviceID    string            `json:"device_id"`
		Measurement string            `json:"measurement"`
		TS          int64             `json:"ts"`
		Fields      map[string]any    `json:"fields"`
		Tags        map[string]string `json:"tags"`
		Units       map[string]string `json:"units"`
	} `json:"readings"`
}

func parseFrame(t *testing.T, s string) liveFrame {
	t.Helper()
	var f liveFrame
	if err := json.Unmarshal([]byte(s), &f); err != nil {
		t.Fatalf("frame %q: %v", s, err)
	}
	return f
}

func startHub(t *testing.T, cfg HubConfig) *Hub {
	h := NewHub(cfg, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = h.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return h
}

func reading(dev, site string, ts int64, fields ...telemetry.Field) telemetry.Reading {
	return telemetry.Reading{
		Device: telemetry.DeviceID(dev), Measurement: "env", Time: ts, Fields: fields,
		Tags: []telemetry.Tag{tg("device_id", dev), tg("site", site)},
	}
}

func fl(name string, v float64) telemetry.Field {
	return telemetry.Field{Name: name, Value: telemetry.Float(v)}
}

func TestHubSnapshotThenLive(t *testing.T) {
	h := startHub(t, HubConfig{})
	ctx := context.Background()
	h.Publish([]telemetry.Reading{reading("d1", "p3", 1, fl("t", 20), fl("h", 40))})
	h.Publish([]telemetry.Reading{reading("d1", "p3", 2, fl("t", 21))}) // h keeps its last value
	h.Publish([]telemetry.Reading{reading("d2", "p4", 1, fl("t", 5))})
	eventually(t, "published", func() bool { return h.Stats(ctx).Series == 2 })

	c := &fakeClient{}
	h.Subscribe(ctx, c, "s1", Filter{Devices: []string{"d1"}})
	eventually(t, "snapshot", func() bool { return len(c.all()) == 1 })
	snap := parseFrame(t, c.all()[0])
	if snap.Type != "snapshot" || snap.Sub != "s1" || len(snap.Readings) != 1 {
		t.Fatalf("snapshot = %+v", snap)
	}
	r := snap.Readings[0]
	if r.DeviceID != "d1" || r.TS != 2 || r.Fields["t"] != 21.0 || r.Fields["h"] != 40.0 || r.Tags["site"] != "p3" || r.Tags["device_id"] != "" {
		t.Fatalf("snapshot reading = %+v", r)
	}

	h.Publish([]telemetry.Reading{reading("d2", "p4", 3, fl("t", 6))}) // not subscribed
	h.Publish([]telemetry.Reading{reading("d1", "p3", 3, fl("t", 22))})
	eventually(t, "live", func() bool { return len(c.all()) == 2 })
	live := parseFrame(t, c.all()[1])
	if live.Type != "readings" || len(live.Readings) != 1 || live.Readings[0].Fields["t"] != 22.0 {
		t.Fatalf("live = %+v", live)
	}
}

func TestHubFilters(t *testing.T) {
	batch := []telemetry.Reading{
		reading("d1", "p3", 1, fl("t", 1), fl("h", 2)),
		reading("d2", "p4", 1, fl("t", 3)),
		{Device: "d3", Measurement: "power", Time: 1, Fields: []telemetry.Field{fl("kwh", 9)}, Tags: []telemetry.Tag{tg("device_id", "d3"), tg("site", "p3")}},
	}
	tests := []struct {
		name    string
		filter  Filter
		devices []string
		fields  int // total fields delivered
	}{
		{"everything", Filter{Devices: []string{"*"}}, []string{"d1", "d2", "d3"}, 4},
		{"by device", Filter{Devices: []string{"d2"}}, []string{"d2"}, 1},
		{"by measurement", Filter{Measurements: []string{"power"}}, []string{"d3"}, 1},
		{"by tag", Filter{Tags: map[string]string{"site": "p3"}}, []string{"d1", "d3"}, 3},
		{"by field", Filter{Fields: []string{"h"}}, []string{"d1"}, 1},
		{"scope restricts", Filter{Devices: []string{"*"}, Scope: map[string]string{"site": "p4"}}, []string{"d2"}, 1},
		{"scope and tags both apply", Filter{Tags: map[string]string{"site": "p3"}, Scope: map[string]string{"site": "p4"}}, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startHub(t, HubConfig{})
			ctx := context.Background()
			c := &fakeClient{}
			h.Subscribe(ctx, c, "s", tt.filter)
			eventually(t, "snapshot", func() bool { return len(c.all()) == 1 })
			h.Publish(batch)
			h.Publish([]telemetry.Reading{reading("marker", "zz", 1, fl("t", 0))})
			eventually(t, "fan-out", func() bool { return h.Stats(ctx).Series == 4 })
			var devices []string
			fields := 0
			for _, s := range c.all()[1:] {
				for _, r := range parseFrame(t, s).Readings {
					if r.DeviceID == "marker" {
						continue
					}
					devices = append(devices, r.DeviceID)
					fields += len(r.Fields)
				}
			}
			if fmt.Sprint(devices) != fmt.Sprint(tt.devices) || fields != tt.fields {
				t.Fatalf("delivered devices %v with %d fields; want %v with %d", devices, fields, tt.devices, tt.fields)
			}
		})
	}
}

func TestHubDropsSlowClientOnly(t *testing.T) {
	h := startHub(t, HubConfig{SlowPolicy: SlowDisconnect})
	ctx := context.Background()
	slow := &fakeClient{limit: 2}
	fast := &fakeClient{}
	h.Subscribe(ctx, slow, "s", Filter{})
	h.Subscribe(ctx, fast, "s", Filter{})
	eventually(t, "subscribed", func() bool { return len(fast.all()) == 1 })
	for i := range 10 {
		h.Publish([]telemetry.Reading{reading("d1", "p3", int64(i), fl("t", float64(i)))})
		eventually(t, "delivery", func() bool { return len(fast.all()) == i+2 })
	}
	st := h.Stats(ctx)
	if st.SlowClientsDropped != 1 || st.Clients != 1 || len(slow.all()) != 2 {
		t.Fatalf("stats %+v, slow got %d frames", st, len(slow.all()))
	}
}

func TestHubUnsubscribeAndDetach(t *testing.T) {
	h := startHub(t, HubConfig{})
	ctx := context.Background()
	c := &fakeClient{}
	h.Subscribe(ctx, c, "a", Filter{})
	h.Subscribe(ctx, c, "b", Filter{})
	eventually(t, "subscribed", func() bool { return h.Stats(ctx).Subscriptions == 2 })
	h.Unsubscribe(ctx, c, "a")
	eventually(t, "unsubscribed", func() bool { return h.Stats(ctx).Subscriptions == 1 })
	h.Detach(ctx, c)
	eventually(t, "detached", func() bool { return h.Stats(ctx).Clients == 0 })
}

func TestHubSeriesBound(t *testing.T) {
	h := startHub(t, HubConfig{MaxSeries: 2})
	ctx := context.Background()
	for i := range 5 {
		h.Publish([]telemetry.Reading{reading(fmt.Sprint("d", i), "p", 1, fl("t", 1))})
	}
	eventually(t, "bounded", func() bool { s := h.Stats(ctx); return s.Series == 2 && s.SeriesNotRemembered == 3 })
}

func TestReadingJSONIsValidAndEscaped(t *testing.T) {
	r := telemetry.Reading{Device: "d\"1", Measurement: "m", Time: 5,
		Fields: []telemetry.Field{{Name: "s", Value: telemetry.String("a\x00\xff</script>"), Unit: "Cel"}, {Name: "i", Value: telemetry.Int(-3)}, {Name: "b", Value: telemetry.Bool(true)}},
		Tags:   []telemetry.Tag{tg("device_id", "d\"1"), tg("site", "ü")}}
	b := AppendReadingJSON(nil, &r, nil)
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	if v["device_id"] != "d\"1" || v["fields"].(map[string]any)["s"] != "a\x00\ufffd</script>" || v["units"].(map[string]any)["s"] != "Cel" {
		t.Fatalf("decoded %v", v)
	}
}

func BenchmarkHubFanOut1000(b *testing.B) {
	h := NewHub(HubConfig{}, slog.New(slog.DiscardHandler))
	s := hubState{hub: h, clients: map[Client]*clientState{}, last: map[string]*series{}}
	for i := range 1000 {
		sub := &subscription{id: "s", filter: Filter{}}
		sub.key = sub.filter.key("s")
		s.clients[&countClient{n: i}] = &clientState{subs: []*subscription{sub}}
	}
	rs := []telemetry.Reading{reading("d1", "p3", 1, fl("t", 20), fl("h", 40))}
	b.ReportAllocs()
	for b.Loop() {
		s.fanOut(rs)
	}
}

type countClient struct{ n int }

func (c *countClient) Send([]byte) bool { c.n++; return true }
func (c *countClient) Room() bool       { return true }
func (c *countClient) Drop()            {}
