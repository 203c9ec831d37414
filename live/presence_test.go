package live

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/telemetry"
)

type presenceFrame struct {
	Type     string            `json:"type"`
	DeviceID string            `json:"device_id"`
	Online   bool              `json:"online"`
	LastSeen int64             `json:"last_seen"`
	Tags     map[string]string `json:"tags"`
	Presence []presenceFrame   `json:"presence"`
	Readings []json.RawMessage `json:"readings"`
}

func parsePresence(t *testing.T, s string) presenceFrame {
	t.Helper()
	var f presenceFrame
	if err := json.Unmarshal([]byte(s), &f); err != nil {
		t.Fatalf("frame %q: %v", s, err)
	}
	return f
}

func types(frames []string) string {
	var out []string
	for _, f := range frames {
		var v struct {
			Type     string `json:"type"`
			DeviceID string `json:"device_id"`
			Online   bool   `json:"online"`
		}
		_ = json.Unmarshal([]byte(f), &v)
		if v.Type == "presence" {
			out = append(out, fmt.Sprintf("presence:%s:%v", v.DeviceID, v.Online))
		} else {
			out = append(out, v.Type)
		}
	}
	return strings.Join(out, " ")
}

func TestPresenceEvents(t *testing.T) {
	tests := []struct {
		name   string
		filter Filter
		want   string // frame types after the snapshot: d1 and d2 report in one batch, then go silent
	}{
		{"no presence asked: readings only", Filter{}, "readings"},
		{"include", Filter{Presence: PresenceInclude},
			"presence:d1:true presence:d2:true readings presence:d1:false presence:d2:false"},
		{"only", Filter{Presence: PresenceOnly}, "presence:d1:true presence:d2:true presence:d1:false presence:d2:false"},
		{"by device", Filter{Devices: []string{"d2"}, Presence: PresenceOnly}, "presence:d2:true presence:d2:false"},
		{"by tag", Filter{Tags: map[string]string{"site": "p3"}, Presence: PresenceOnly}, "presence:d1:true presence:d1:false"},
		{"scope applies", Filter{Scope: map[string]string{"site": "p4"}, Presence: PresenceInclude}, "presence:d2:true readings presence:d2:false"},
		{"measurements do not apply to presence", Filter{Measurements: []string{"other"}, Presence: PresenceInclude},
			"presence:d1:true presence:d2:true presence:d1:false presence:d2:false"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startHub(t, HubConfig{OfflineAfter: 100 * time.Millisecond, SweepInterval: 10 * time.Millisecond})
			ctx := context.Background()
			c := &fakeClient{}
			h.Subscribe(ctx, c, "s", tt.filter)
			eventually(t, "snapshot", func() bool { return len(c.all()) == 1 })
			h.Publish([]telemetry.Reading{reading("d1", "p3", 1, fl("t", 1)), reading("d2", "p4", 1, fl("t", 2))})
			// Both go offline after 100ms of silence.
			eventually(t, "offline", func() bool {
				ds := h.Devices(ctx)
				return len(ds) == 2 && !ds[0].Online && !ds[1].Online
			})
			eventually(t, "events", func() bool { return h.Stats(ctx).PresenceEvents >= uint64(strings.Count(tt.want, "presence:")) })
			if got := types(c.all()[1:]); got != tt.want {
				t.Fatalf("frames %q\nwant   %q", got, tt.want)
			}
		})
	}
}

func TestPresenceEventShape(t *testing.T) {
	h := startHub(t, HubConfig{})
	ctx := context.Background()
	c := &fakeClient{}
	h.Subscribe(ctx, c, "s", Filter{Presence: PresenceOnly})
	eventually(t, "snapshot", func() bool { return len(c.all()) == 1 })
	before := time.Now().UnixNano()
	h.Publish([]telemetry.Reading{reading("d\"1", "p3", 1, fl("t", 1))})
	eventually(t, "presence", func() bool { return len(c.all()) == 2 })
	p := parsePresence(t, c.all()[1])
	if p.Type != "presence" || p.DeviceID != "d\"1" || !p.Online || p.LastSeen < before || p.LastSeen > time.Now().UnixNano() ||
		p.Tags["site"] != "p3" || p.Tags["device_id"] != "" {
		t.Fatalf("presence = %+v", p)
	}
	// A second reading of an online device sends nothing.
	h.Publish([]telemetry.Reading{reading("d\"1", "p3", 2, fl("t", 1))})
	eventually(t, "processed", func() bool { return h.Stats(ctx).Published == 2 && h.Stats(ctx).Series == 1 })
	if n := len(c.all()); n != 2 {
		t.Fatalf("%d frames, want 2: %v", n, c.all())
	}
}

func TestPresenceInSnapshot(t *testing.T) {
	h := startHub(t, HubConfig{})
	ctx := context.Background()
	h.Publish([]telemetry.Reading{reading("d2", "p4", 1, fl("t", 2)), reading("d1", "p3", 1, fl("t", 1))})
	eventually(t, "tracked", func() bool { return h.Stats(ctx).Devices == 2 })
	tests := []struct {
		filter   Filter
		presence string
		readings int
	}{
		{Filter{}, "", 2},
		{Filter{Presence: PresenceInclude}, "d1 d2", 2},
		{Filter{Presence: PresenceOnly}, "d1 d2", 0},
		{Filter{Presence: PresenceOnly, Scope: map[string]string{"site": "p4"}}, "d2", 0},
	}
	for i, tt := range tests {
		c := &fakeClient{}
		h.Subscribe(ctx, c, "s", tt.filter)
		eventually(t, "snapshot", func() bool { return len(c.all()) == 1 })
		f := parsePresence(t, c.all()[0])
		var ids []string
		for _, p := range f.Presence {
			if !p.Online || p.LastSeen == 0 {
				t.Fatalf("%d: presence %+v", i, p)
			}
			ids = append(ids, p.DeviceID)
		}
		if f.Type != "snapshot" || strings.Join(ids, " ") != tt.presence || len(f.Readings) != tt.readings {
			t.Fatalf("%d: snapshot %s", i, c.all()[0])
		}
		if tt.filter.Presence == PresenceNone && strings.Contains(c.all()[0], `"presence"`) {
			t.Fatalf("%d: presence in a snapshot that did not ask: %s", i, c.all()[0])
		}
	}
}

func TestHubDevicesBounded(t *testing.T) {
	h := startHub(t, HubConfig{MaxDevices: 2})
	ctx := context.Background()
	for i := range 4 {
		h.Publish([]telemetry.Reading{reading(fmt.Sprint("d", 3-i), "p", 1, fl("t", 1))})
	}
	eventually(t, "bounded", func() bool { s := h.Stats(ctx); return s.Devices == 2 && s.DevicesNotTracked == 2 })
	ds := h.Devices(ctx)
	if len(ds) != 2 || ds[0].ID != "d2" || ds[1].ID != "d3" || !ds[0].Online || ds[0].LastSeen.IsZero() ||
		len(ds[0].Tags) != 1 || ds[0].Tags[0] != tg("site", "p") {
		t.Fatalf("devices = %+v", ds)
	}
}

func TestOfflineTimeoutAdapts(t *testing.T) {
	s := hubState{hub: NewHub(HubConfig{OfflineAfter: time.Minute}, nil)}
	tests := []struct {
		interval time.Duration
		want     time.Duration
	}{
		{0, time.Minute},
		{time.Second, time.Minute},
		{30 * time.Second, time.Minute},
		{45 * time.Second, 90 * time.Second},
		{10 * time.Minute, 20 * time.Minute},
		{48 * time.Hour, 24 * time.Hour},
	}
	for _, tt := range tests {
		if got := time.Duration(s.timeout(&device{interval: float64(tt.interval)})); got != tt.want {
			t.Errorf("interval %s: timeout %s, want %s", tt.interval, got, tt.want)
		}
	}
	// The interval follows the gaps between arrivals, ignoring readings
	// that arrive together.
	now := time.Unix(1000, 0)
	r := reading("d", "p", 1, fl("t", 1))
	for i := range 20 {
		s.seen(&r, now.Add(time.Duration(i)*10*time.Second))
		s.seen(&r, now.Add(time.Duration(i)*10*time.Second)) // same frame
	}
	d := s.devices["d"]
	if got := time.Duration(d.interval); got < 9*time.Second || got > 11*time.Second {
		t.Fatalf("interval %s, want about 10s", got)
	}
}

// BenchmarkPresenceSweep100k is one sweep over 100000 online devices, none
// of which is due: the Hub's periodic cost of presence at its default bound.
func BenchmarkPresenceSweep100k(b *testing.B) {
	s := hubState{hub: NewHub(HubConfig{}, nil), clients: map[Client]*clientState{}}
	now := time.Now()
	for i := range 100000 {
		r := reading(fmt.Sprint("d", i), "p", 1, fl("t", 1))
		s.seen(&r, now)
	}
	b.ReportAllocs()
	for b.Loop() {
		s.sweep(now)
	}
}
