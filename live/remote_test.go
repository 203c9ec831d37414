package live

import (
	"context"
	"strings"
	"testing"

	"github.com/telemetryd/telemetryd/telemetry"
)

// TestSeed: seeded last values join the snapshot; those newer than the
// Hub's go to subscribers, older ones change nothing; presence is untouched.
func TestSeed(t *testing.T) {
	h := startHub(t, HubConfig{})
	ctx := context.Background()
	h.Publish([]telemetry.Reading{reading("a", "p1", 100, fl("t", 1))})
	eventually(t, "published", func() bool { return h.Stats(ctx).Series == 1 })
	c := &fakeClient{}
	h.Subscribe(ctx, c, "s", Filter{Scope: map[string]string{"site": "p1"}})
	eventually(t, "snapshot", func() bool { return len(c.all()) == 1 })

	h.Seed(ctx, []telemetry.Reading{
		reading("a", "p1", 50, fl("t", 0)),             // older than the Hub's: ignored
		reading("b", "p1", 70, fl("t", 7), fl("h", 3)), // unknown series: taken and shown
		reading("c", "p2", 80, fl("t", 8)),             // taken; outside the scope
		reading("a", "p1", 100, fl("t", 1)),            // the same: nothing new
	})
	eventually(t, "seeded readings", func() bool { return len(c.all()) == 2 })
	f := parseFrame(t, c.all()[1])
	if f.Type != "readings" || len(f.Readings) != 1 || f.Readings[0].DeviceID != "b" || f.Readings[0].Fields["h"] != 3.0 {
		t.Fatalf("seed frame %s", c.all()[1])
	}
	st := h.Stats(ctx)
	if st.Series != 3 {
		t.Fatalf("%d series, want 3", st.Series)
	}
	if st.Devices != 1 {
		t.Fatalf("presence tracks %d devices, want 1 (seeding is not hearing from a device)", st.Devices)
	}
	c2 := &fakeClient{}
	h.Subscribe(ctx, c2, "s", Filter{})
	eventually(t, "snapshot", func() bool { return len(c2.all()) == 1 })
	snap := parseFrame(t, c2.all()[0])
	if len(snap.Readings) != 3 || snap.Readings[0].TS != 100 || snap.Readings[0].Fields["t"] != 1.0 {
		t.Fatalf("snapshot %s", c2.all()[0])
	}
}

// TestNotice: a notice reaches every client; a standing one also reaches
// clients that subscribe later, once, before their first snapshot, until a
// notice that is not standing ends it.
func TestNotice(t *testing.T) {
	h := startHub(t, HubConfig{})
	ctx := context.Background()
	early := &fakeClient{}
	h.Subscribe(ctx, early, "s", Filter{})
	h.Notice(ctx, []byte(`{"type":"relay","state":"degraded"}`), true)
	eventually(t, "notice", func() bool { return len(early.all()) == 2 })

	late := &fakeClient{}
	h.Subscribe(ctx, late, "s1", Filter{})
	h.Subscribe(ctx, late, "s2", Filter{})
	eventually(t, "snapshots", func() bool { return len(late.all()) == 3 })
	got := late.all()
	if got[0] != `{"type":"relay","state":"degraded"}` || !strings.HasPrefix(got[1], `{"type":"snapshot"`) || !strings.HasPrefix(got[2], `{"type":"snapshot"`) {
		t.Fatalf("late client got %q", got)
	}

	h.Notice(ctx, []byte(`{"type":"relay","state":"recovered"}`), false)
	eventually(t, "recovered", func() bool { return len(late.all()) == 4 && len(early.all()) == 3 })
	after := &fakeClient{}
	h.Subscribe(ctx, after, "s", Filter{})
	eventually(t, "snapshot", func() bool { return len(after.all()) == 1 })
	h.Publish([]telemetry.Reading{reading("a", "p1", 1, fl("t", 1))})
	eventually(t, "live", func() bool { return len(after.all()) == 2 })
	if strings.Contains(after.all()[1], "relay") {
		t.Fatalf("ended notice still sent: %q", after.all())
	}
}

// TestNoticeOverSSE: a relay notice reaches an SSE stream as its own event
// type, a standing one ahead of the snapshot of a stream opened later.
func TestNoticeOverSSE(t *testing.T) {
	h, _, srv := startSSE(t, DashboardConfig{})
	ctx := context.Background()
	s := openSSE(t, srv.URL+"?sub=s", nil)
	for s.next(t).event != "snapshot" { // the retry hint comes first
		continue
	}
	degraded := `{"type":"relay","state":"degraded","reason":"nats_disconnected"}`
	h.Notice(ctx, []byte(degraded), true)
	if ev := s.next(t); ev.event != "relay" || ev.data != degraded {
		t.Fatalf("event %+v", ev)
	}
	late := openSSE(t, srv.URL+"?sub=s", nil)
	ev := late.next(t)
	for ev.retry != "" {
		ev = late.next(t)
	}
	if ev.event != "relay" || ev.data != degraded {
		t.Fatalf("late stream's first event %+v", ev)
	}
	if ev := late.next(t); ev.event != "snapshot" {
		t.Fatalf("then %+v", ev)
	}
}
