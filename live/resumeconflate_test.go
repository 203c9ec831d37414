package live

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/telemetryd/telemetryd/telemetry"
)

func decodePos(t *testing.T, frames []string) []posMsg {
	t.Helper()
	out := make([]posMsg, len(frames))
	for i, f := range frames {
		if err := json.Unmarshal([]byte(f), &out[i]); err != nil {
			t.Fatalf("%q: %v", f, err)
		}
	}
	return out
}

// TestHubConflatedPositionsResume: a conflated dashboard's positions stay
// honest. The "conflated" notice carries the position up to which the
// dashboard had every reading, so a resume from it brings back exactly the
// readings merged away and those after (none twice, none missing); the
// message that empties the backlog carries the newest position, from which
// nothing is owed.
func TestHubConflatedPositionsResume(t *testing.T) {
	h := startHub(t, HubConfig{})
	ctx := context.Background()
	slow := &queueClient{maxFrames: 4, maxBytes: 1 << 20}
	fast := &fakeClient{}
	h.Subscribe(ctx, slow, "s", Filter{})
	h.Subscribe(ctx, fast, "s", Filter{})
	eventually(t, "subscribed", func() bool { slow.read(0); return len(fast.all()) == 1 && len(slow.messages()) == 1 })
	const n, nDev = 40, 4
	for i := range n {
		h.Publish([]telemetry.Reading{reading(fmt.Sprint("d", i%nDev), "p3", int64(1000+i), fl("t", float64(i)))})
		eventually(t, "delivery", func() bool { return len(fast.all()) == i+2 })
	}
	var ms []posMsg
	eventually(t, "the backlog sent", func() bool {
		slow.read(0)
		ms = decodePos(t, slow.messages())
		last := ms[len(ms)-1]
		return last.Type == "readings" && last.Pos > 0 && h.Stats(ctx).Backlogged == 0
	})
	before := map[int64]bool{} // readings the dashboard had when told it was conflated
	var notice, prev, final int64
	for _, m := range ms {
		if m.Pos != 0 && m.Pos < prev {
			t.Fatalf("position %d after %d", m.Pos, prev)
		}
		prev = max(prev, m.Pos)
		switch {
		case m.Type == "conflated" && notice == 0:
			if m.Pos == 0 {
				t.Fatalf("conflated notice without a position: %+v", m)
			}
			notice = m.Pos
		case m.Type == "readings" && notice == 0:
			for _, r := range m.Readings {
				before[r.TS] = true
			}
		}
		if m.Type == "readings" {
			final = m.Pos
		}
	}
	if notice == 0 {
		t.Fatalf("never conflated: %v", slow.messages())
	}
	resumed := &fakeClient{}
	h.SubscribeWith(ctx, resumed, "s", Filter{}, SubscribeOptions{Resume: true, Since: notice})
	eventually(t, "resumed", func() bool { return strings.Contains(strings.Join(resumed.all(), ""), `"resumed"`) })
	got := map[int64]bool{}
	for _, m := range decodePos(t, resumed.all()) {
		for _, r := range m.Readings {
			if got[r.TS] || before[r.TS] {
				t.Fatalf("reading at %d twice", r.TS)
			}
			got[r.TS] = true
		}
	}
	if len(before)+len(got) != n {
		t.Fatalf("%d readings before the notice and %d replayed from its position, want %d in all", len(before), len(got), n)
	}
	// From the position of the message that emptied the backlog nothing is owed.
	again := &fakeClient{}
	h.SubscribeWith(ctx, again, "s", Filter{}, SubscribeOptions{Resume: true, Since: final})
	eventually(t, "resumed", func() bool { return len(again.all()) == 1 })
	if m := decodePos(t, again.all())[0]; m.Type != "resumed" || m.Replayed != 0 {
		t.Fatalf("resume from the backlog's last position: %+v", m)
	}
}

// TestHubSnapshotChunksHoldLive: live readings that arrive while a
// snapshot is still being sent in chunks do not overtake it, and only its
// last chunk carries a position; a series that changed after its chunk
// went out comes again, with its latest value, before that last chunk.
func TestHubSnapshotChunksHoldLive(t *testing.T) {
	h := startHub(t, HubConfig{SnapshotChunkBytes: 512})
	ctx := context.Background()
	const nDev = 100
	batch := make([]telemetry.Reading, 0, nDev)
	for i := range nDev {
		batch = append(batch, reading(fmt.Sprintf("dev-%03d", i), "p3", 1, fl("t", 1)))
	}
	h.Publish(batch)
	eventually(t, "series", func() bool { return h.Stats(ctx).Series == nDev })
	c := &queueClient{maxFrames: 4, maxBytes: 1 << 20}
	fast := &fakeClient{}
	h.Subscribe(ctx, c, "s", Filter{})
	h.Subscribe(ctx, fast, "f", Filter{Devices: []string{"dev-000"}})
	eventually(t, "the first chunks", func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.queue) > 0 })
	h.Publish([]telemetry.Reading{reading("dev-000", "p3", 2, fl("t", 2))}) // its chunk (the first) is out
	eventually(t, "fan-out", func() bool { return len(fast.all()) == 2 })
	var ms []posMsg
	eventually(t, "the last chunk", func() bool {
		c.read(0)
		ms = decodePos(t, c.messages())
		for _, m := range ms {
			if m.Type == "snapshot" && strings.Contains(c.messages()[len(c.messages())-1], `"last":true`) {
				return true
			}
		}
		return false
	})
	latest := map[string]float64{}
	for i, m := range ms {
		last := i == len(ms)-1
		if m.Type != "snapshot" {
			t.Fatalf("message %d is %q before the snapshot's last chunk", i, m.Type)
		}
		if (m.Pos != 0) != last {
			t.Fatalf("chunk %d (last %v) has position %d", i, last, m.Pos)
		}
		for _, r := range m.Readings {
			latest[r.DeviceID] = r.Fields["t"].(float64)
		}
	}
	if len(ms) < 3 || len(latest) != nDev || latest["dev-000"] != 2 {
		t.Fatalf("%d chunks, %d series, dev-000 at %v", len(ms), len(latest), latest["dev-000"])
	}
}

// TestHubResumeAcrossInboxOverflow: readings the overloaded inbox merged
// away never had a position, so a resume from before them is reset rather
// than replayed without them; one from after them resumes.
func TestHubResumeAcrossInboxOverflow(t *testing.T) {
	h := startHub(t, HubConfig{InboxBatches: 2})
	ctx := context.Background()
	c := &gateClient{}
	h.Subscribe(ctx, c, "s", Filter{})
	eventually(t, "snapshot", func() bool { return len(c.all()) == 1 })
	before := decodePos(t, c.all())[0].Pos
	c.arm()
	h.Publish([]telemetry.Reading{reading("a", "p", 0, fl("t", 0))})
	<-c.entered
	for i := 1; i < 8; i++ {
		h.Publish([]telemetry.Reading{reading("a", "p", int64(i), fl("t", float64(i)))})
	}
	close(c.release)
	eventually(t, "the latest value", func() bool { return strings.Contains(strings.Join(c.all(), ""), `"ts":7`) })
	ms := decodePos(t, c.all())
	after := ms[len(ms)-1].Pos
	for _, tc := range []struct {
		since int64
		want  string
	}{{before, "reset"}, {after, "resumed"}} {
		r := &fakeClient{}
		h.SubscribeWith(ctx, r, "s", Filter{}, SubscribeOptions{Resume: true, Since: tc.since})
		eventually(t, tc.want, func() bool { return len(r.all()) > 0 })
		if m := decodePos(t, r.all())[0]; m.Type != tc.want {
			t.Fatalf("resume from %d (overflow after %d): %s, want %s", tc.since, before, r.all()[0], tc.want)
		}
	}
}
