package live

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/telemetryd/telemetryd/telemetry"
)

type posMsg struct {
	Type     string `json:"type"`
	Pos      int64  `json:"pos"`
	Readings []struct {
		DeviceID string         `json:"device_id"`
		TS       int64          `json:"ts"`
		Pos      int64          `json:"pos"`
		Fields   map[string]any `json:"fields"`
	} `json:"readings"`
	Upto    map[string]int64 `json:"upto"`
	Refused []struct {
		Pos  int64  `json:"pos"`
		Code string `json:"code"`
	} `json:"refused"`
	Replayed    int `json:"replayed"`
	FromHistory int `json:"from_history"`
	Missing     int `json:"missing"`
}

func msgs(t *testing.T, c *fakeClient) []posMsg {
	t.Helper()
	var out []posMsg
	for _, f := range c.all() {
		var m posMsg
		if err := json.Unmarshal([]byte(f), &m); err != nil {
			t.Fatalf("%q: %v", f, err)
		}
		out = append(out, m)
	}
	return out
}

// history serves readings back by device and time, as storage would.
type history struct{ rs []telemetry.Reading }

func (h history) Readings(_ context.Context, q HistoryRequest) ([]telemetry.Reading, error) {
	var out []telemetry.Reading
	for _, r := range h.rs {
		if string(r.Device) == q.Device && r.Time >= q.From && r.Time <= q.To {
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("nothing stored")
	}
	return out, nil
}

// TestHubResume: a client resuming from a position gets exactly the
// readings after it that its filter matches, from the window and beyond
// it from history, in order, then live; an unknown position gets a reset
// and a snapshot.
func TestHubResume(t *testing.T) {
	var stored []telemetry.Reading
	for i := range 20 {
		stored = append(stored, reading("dev-1", "a", int64(1000+i), fl("t", float64(i))))
	}
	tests := []struct {
		name        string
		window      int
		history     HistorySource
		fromHistory int
		reset       bool
	}{
		{"window", 64, nil, 0, false},
		{"history", 4, history{stored}, 13, false},
		{"beyond the window without history", 4, nil, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := startHub(t, HubConfig{Resume: ResumeConfig{Window: tc.window, History: tc.history}})
			ctx := context.Background()
			first := &fakeClient{}
			h.Subscribe(ctx, first, "s", Filter{Devices: []string{"dev-1"}})
			for i := range 5 {
				h.Publish([]telemetry.Reading{stored[i], reading("other", "a", 1, fl("t", 0))})
			}
			eventually(t, "5 readings", func() bool { return strings.Contains(strings.Join(first.all(), ""), `"ts":1004`) })
			all := msgs(t, first)
			last := all[len(all)-1].Pos
			for i := 5; i < 20; i++ {
				h.Publish([]telemetry.Reading{stored[i], reading("other", "a", 1, fl("t", 0))})
			}
			eventually(t, "all readings", func() bool { return strings.Contains(strings.Join(first.all(), ""), `"ts":1019`) })
			resumed := &fakeClient{}
			h.SubscribeWith(ctx, resumed, "s", Filter{Devices: []string{"dev-1"}}, SubscribeOptions{Resume: true, Since: last})
			eventually(t, "resumed", func() bool {
				a := resumed.all()
				return len(a) > 0 && (strings.Contains(a[len(a)-1], `"resumed"`) || strings.Contains(a[len(a)-1], `"snapshot"`))
			})
			h.Publish([]telemetry.Reading{reading("dev-1", "a", 5000, fl("t", 99))})
			eventually(t, "live", func() bool { return strings.Contains(strings.Join(resumed.all(), ""), "5000") })
			var ts []int64
			var prev int64
			var got posMsg
			for _, m := range msgs(t, resumed) {
				if m.Type == "resumed" {
					got = m
				}
				if m.Type == "reset" {
					got.Type = "reset"
				}
				if m.Type == "readings" {
					if m.Pos <= prev {
						t.Fatalf("message position %d after %d", m.Pos, prev)
					}
					prev = m.Pos
				}
				for _, r := range m.Readings {
					if r.Pos != 0 {
						t.Fatalf("reading position %d on a subscription without persisted", r.Pos)
					}
					ts = append(ts, r.TS)
				}
			}
			if tc.reset {
				if got.Type != "reset" {
					t.Fatalf("no reset: %v", resumed.all())
				}
				return
			}
			want := []int64{1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 1015, 1016, 1017, 1018, 1019, 5000}
			if len(ts) != len(want) {
				t.Fatalf("got readings %v, want %v", ts, want)
			}
			for i := range ts {
				if ts[i] != want[i] {
					t.Fatalf("got readings %v, want %v", ts, want)
				}
			}
			if got.Replayed != 15 || got.FromHistory != tc.fromHistory || got.Missing != 0 {
				t.Fatalf("resumed %+v, want 15 replayed, %d from history", got, tc.fromHistory)
			}
		})
	}
}

// TestHubPersisted: a subscription asking for persisted gets, per device,
// the position up to which readings completed, and the refused ones.
func TestHubPersisted(t *testing.T) {
	h := startHub(t, HubConfig{})
	ctx := context.Background()
	c := &fakeClient{}
	h.SubscribeWith(ctx, c, "s", Filter{}, SubscribeOptions{Persisted: true})
	eventually(t, "watermark", func() bool { return len(c.all()) == 2 })
	rs := []telemetry.Reading{reading("dev-1", "a", 1, fl("t", 1)), reading("dev-1", "a", 2, fl("t", 2))}
	h.Publish(rs)
	eventually(t, "readings", func() bool { return len(c.all()) == 3 })
	pos := msgs(t, c)[2].Pos
	h.Durable(rs, []telemetry.Rejection{{Index: 1, Code: "storage_rejected", Message: "type conflict"}}, nil)
	eventually(t, "persisted", func() bool { return len(c.all()) == 4 })
	m := msgs(t, c)[3]
	if m.Type != "persisted" || m.Upto["dev-1"] != pos || len(m.Refused) != 1 || m.Refused[0].Pos != pos || m.Refused[0].Code != "storage_rejected" {
		t.Fatalf("persisted %s, want upto %d with %d refused", c.all()[3], pos, pos)
	}
}

// TestHubPersistedBeyondTheWindow: a reading's durable notice is applied
// even when the reading has left the resume window since it was fanned out.
func TestHubPersistedBeyondTheWindow(t *testing.T) {
	h := startHub(t, HubConfig{Resume: ResumeConfig{Window: 1}})
	ctx := context.Background()
	c := &fakeClient{}
	h.SubscribeWith(ctx, c, "s", Filter{}, SubscribeOptions{Persisted: true})
	eventually(t, "watermark", func() bool { return len(c.all()) == 2 })
	first := []telemetry.Reading{reading("dev-1", "a", 1, fl("t", 1))}
	h.Publish(first)
	for i := range 3 {
		h.Publish([]telemetry.Reading{reading("dev-2", "a", int64(10+i), fl("t", 2))})
	}
	eventually(t, "readings", func() bool { return strings.Contains(strings.Join(c.all(), ""), `"ts":12`) })
	pos := msgs(t, c)[2].Readings[0].Pos
	h.Durable(first, nil, nil)
	eventually(t, "persisted", func() bool { return strings.Contains(strings.Join(c.all(), ""), `"upto":{"dev-1"`) })
	all := msgs(t, c)
	if m := all[len(all)-1]; m.Upto["dev-1"] != pos {
		t.Fatalf("persisted %+v, want dev-1 up to %d", m, pos)
	}
}
