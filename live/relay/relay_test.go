package relay

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetryd/telemetryd/live"
	"github.com/telemetryd/telemetryd/live/relay/natstest"
	"github.com/telemetryd/telemetryd/telemetry"
)

// servers are the NATS servers the relay must work with: the in-process one
// of the tests and Debian's binary, which `make run-cluster` runs.
var servers = []struct {
	name  string
	start func(testing.TB) *natstest.Server
}{
	{"in-process", natstest.Start},
	{"binary", natstest.StartBinary},
}

// TestRelayAcrossInstances is the whole contract on a real NATS: readings
// ingested on A show on B's dashboard with B's filters and scopes, once; a
// restarted B's snapshot holds every series; presence is fleet-wide; NATS
// stopped: A's Publish goes on, dashboards are told, and once NATS is back
// they are told again, live flows and what was missed arrives.
func TestRelayAcrossInstances(t *testing.T) {
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			ns := srv.start(t)
			t.Logf("NATS %s", ns.Version(t))
			a := startInstance(t, ns.URL(), "a", nil)
			b := startInstance(t, ns.URL(), "b", nil)
			a.waitConnected(t)
			b.waitConnected(t)

			// B's viewer may see plant-1 only; A's dashboard sees all.
			onB := subscribe(t, b.hub, live.Filter{Scope: map[string]string{"site": "plant-1"}, Presence: live.PresenceInclude})
			onA := subscribe(t, a.hub, live.Filter{})
			a.relay.Publish([]telemetry.Reading{reading("dev-1", "plant-1", 1000, 1), reading("dev-2", "plant-2", 1000, 2)})
			b.relay.Publish([]telemetry.Reading{reading("dev-3", "plant-1", 1000, 3)})

			eventually(t, "dev-1 live on B", func() bool { return onB.has("readings", "dev-1", 1000) })
			eventually(t, "dev-3 on A", func() bool { return onA.has("readings", "dev-3", 1000) })
			if got := onB.seen("readings")["dev-2"]; got != nil {
				t.Fatalf("B's scoped dashboard got dev-2 of plant-2: %v", got)
			}
			eventually(t, "presence of dev-1 on B", func() bool {
				return slices.ContainsFunc(onB.all(), func(f frame) bool { return f.Type == "presence" && f.DeviceID == "dev-1" && f.Online })
			})
			if ds := b.hub.Devices(context.Background()); len(ds) != 3 {
				t.Fatalf("B knows the presence of %d devices, want 3 (fleet-wide): %+v", len(ds), ds)
			}
			// Each reading once: own messages do not come back.
			if st := a.relay.Stats(); st.ReceivedReadings != 1 || st.PublishedReadings != 2 {
				t.Fatalf("A's relay: %+v", st)
			}
			if n := len(onA.seen("readings")["dev-1"]); n != 1 {
				t.Fatalf("A's dashboard got dev-1 %d times", n)
			}

			// Restart B: its snapshot holds every series, its own and A's.
			eventually(t, "last values written", func() bool {
				return a.relay.Stats().LastValuesWritten >= 2 && b.relay.Stats().LastValuesWritten >= 1
			})
			b.stop()
			b = startInstance(t, ns.URL(), "b", nil)
			b.waitConnected(t)
			snap := subscribe(t, b.hub, live.Filter{}).seen("snapshot")
			for _, dev := range []string{"dev-1", "dev-2", "dev-3"} {
				if !slices.Equal(snap[dev], []int64{1000}) {
					t.Fatalf("restarted B's snapshot: %s = %v, want [1000] (all: %v)", dev, snap[dev], snap)
				}
			}
			onB = subscribe(t, b.hub, live.Filter{})

			// NATS goes away. A's Publish returns at once however much is
			// published, and A's own dashboard still gets everything.
			ns.Stop()
			eventually(t, "degraded on A and B", func() bool {
				return slices.Contains(onA.relayStates(), "degraded") && slices.Contains(onB.relayStates(), "degraded")
			})
			for i := range 200 {
				a.relay.Publish([]telemetry.Reading{reading("dev-4", "plant-1", 2000+int64(i), 4)})
			}
			eventually(t, "A's own dashboard during the outage", func() bool { return len(onA.seen("readings")["dev-4"]) == 200 })
			// Counted once the writer has taken them (after its linger).
			eventually(t, "A's relay counting what it could not send", func() bool {
				st := a.relay.Stats()
				return !st.Connected && st.UnsentReadings+st.DroppedBatches > 0
			})
			// A dashboard that subscribes during the outage is told too.
			late := subscribe(t, b.hub, live.Filter{})
			eventually(t, "degraded for a late dashboard", func() bool { return slices.Contains(late.relayStates(), "degraded") })

			// NATS is back on the same port.
			ns.Restart(t)
			a.waitConnected(t)
			b.waitConnected(t)
			for _, d := range []*dashboard{onA, onB, late} {
				eventually(t, "recovered", func() bool { return slices.Equal(d.relayStates(), []string{"degraded", "recovered"}) })
			}
			// What B missed arrives: the last value of dev-4 (catch-up, or
			// B's reload if A wrote it first).
			eventually(t, "dev-4's last value on B", func() bool { return onB.has("readings", "dev-4", 2199) })
			// Live again.
			a.relay.Publish([]telemetry.Reading{reading("dev-1", "plant-1", 3000, 5)})
			eventually(t, "live after recovery", func() bool { return onB.has("readings", "dev-1", 3000) })
			// And last values are written again.
			written := a.relay.Stats().LastValuesWritten
			a.relay.Publish([]telemetry.Reading{reading("dev-1", "plant-1", 3001, 6)})
			eventually(t, "last values written after recovery", func() bool { return a.relay.Stats().LastValuesWritten > written })
		})
	}
}

// TestPublishNeverBlocks: with the writer unable to keep up (here: never
// running at all) Publish still returns, hands every batch to the local Hub
// and counts what it could not queue for NATS.
func TestPublishNeverBlocks(t *testing.T) {
	hub := &countingHub{}
	r, err := New(Config{URL: "nats://127.0.0.1:1", Instance: "a", PublishBuffer: 4}, hub, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	for range 1000 {
		r.Publish([]telemetry.Reading{reading("d", "s", 1, 1)})
	}
	if hub.published != 1000 {
		t.Fatalf("local hub got %d batches", hub.published)
	}
	if st := r.Stats(); st.DroppedBatches != 996 {
		t.Fatalf("dropped %d batches, want 996 (4 queued)", st.DroppedBatches)
	}
}

type countingHub struct{ published int }

func (h *countingHub) Publish([]telemetry.Reading)               { h.published++ }
func (h *countingHub) Seed(context.Context, []telemetry.Reading) {}
func (h *countingHub) Notice(context.Context, []byte, bool)      {}

// TestStartWithoutNATS: an instance started while NATS is down serves its
// own dashboards, tells them, and joins the fleet when NATS comes.
func TestStartWithoutNATS(t *testing.T) {
	ns := natstest.Start(t)
	b := startInstance(t, ns.URL(), "b", nil)
	b.waitConnected(t)
	ns.Stop()
	a := startInstance(t, ns.URL(), "a", nil)
	onA := subscribe(t, a.hub, live.Filter{})
	eventually(t, "degraded from the start", func() bool { return slices.Equal(onA.relayStates(), []string{"degraded"}) })
	for _, f := range onA.all() {
		if f.Type == "relay" && (f.Reason != "nats_disconnected" || f.Instance != "a") {
			t.Fatalf("notice %+v", f)
		}
	}
	a.relay.Publish([]telemetry.Reading{reading("dev-1", "p", 1, 1)})
	eventually(t, "local live without NATS", func() bool { return onA.has("readings", "dev-1", 1) })

	ns.Restart(t)
	a.waitConnected(t)
	b.waitConnected(t)
	eventually(t, "recovered", func() bool { return slices.Equal(onA.relayStates(), []string{"degraded", "recovered"}) })
	onB := subscribe(t, b.hub, live.Filter{})
	// dev-1 was ingested before A ever reached NATS: it comes as catch-up.
	eventually(t, "A's first reading on B", func() bool {
		return onB.has("snapshot", "dev-1", 1) || onB.has("readings", "dev-1", 1)
	})
}

// TestLastValuesCoalesced: a series written many times within one flush
// interval costs one write, which holds the last value of every field.
func TestLastValuesCoalesced(t *testing.T) {
	ns := natstest.Start(t)
	a := startInstance(t, ns.URL(), "a", func(c *Config) { c.FlushInterval = time.Hour })
	a.waitConnected(t)
	for i := range 500 {
		r := reading("dev-1", "p", int64(1000+i), float64(i))
		if i == 0 {
			r.Fields = append(r.Fields, telemetry.Field{Name: "h", Value: telemetry.Float(42)})
		}
		a.relay.Publish([]telemetry.Reading{r})
	}
	eventually(t, "relayed", func() bool { return a.relay.Stats().PublishedReadings == 500 })
	a.stop() // the final flush
	if st := a.relay.Stats(); st.LastValuesWritten != 1 {
		t.Fatalf("%d last-value writes for one series, want 1", st.LastValuesWritten)
	}
	b := startInstance(t, ns.URL(), "b", nil)
	b.waitConnected(t)
	var snap frame
	for _, f := range subscribe(t, b.hub, live.Filter{}).all() {
		if f.Type == "snapshot" {
			snap = f
		}
	}
	if len(snap.Readings) != 1 {
		t.Fatalf("snapshot %+v", snap)
	}
	if r := snap.Readings[0]; r.TS != 1499 || r.Fields["t"] != 499 || r.Fields["h"] != 42 {
		t.Fatalf("last value %+v, want ts 1499, t 499, h 42", r)
	}
}

// TestManyReadingsAcrossMessages: a batch larger than MaxMessageBytes is cut
// into several messages, and every reading arrives.
func TestManyReadingsAcrossMessages(t *testing.T) {
	ns := natstest.Start(t)
	small := func(c *Config) { c.MaxMessageBytes = 1024 }
	a := startInstance(t, ns.URL(), "a", small)
	b := startInstance(t, ns.URL(), "b", small)
	a.waitConnected(t)
	b.waitConnected(t)
	onB := subscribe(t, b.hub, live.Filter{})
	const n = 2000
	rs := make([]telemetry.Reading, n)
	for i := range rs {
		rs[i] = reading(fmt.Sprintf("dev-%d", i%50), "p", int64(i), float64(i))
	}
	a.relay.Publish(rs)
	eventually(t, "all readings on B", func() bool {
		c := 0
		for _, ts := range onB.seen("readings") {
			c += len(ts)
		}
		return c == n
	})
	if st := a.relay.Stats(); st.PublishedMessages < 10 {
		t.Fatalf("%d messages for %d readings with 1 KiB messages", st.PublishedMessages, n)
	}
}

// TestLingerGathersReadings: readings published one at a time within
// Linger of each other travel as one NATS message (one receive and one Hub
// wake-up per batch at the other instances, not one per reading).
func TestLingerGathersReadings(t *testing.T) {
	ns := natstest.Start(t)
	slow := func(c *Config) { c.Linger = 2 * time.Second }
	a := startInstance(t, ns.URL(), "a", slow)
	b := startInstance(t, ns.URL(), "b", slow)
	a.waitConnected(t)
	b.waitConnected(t)
	onB := subscribe(t, b.hub, live.Filter{})
	const n = 10
	for i := range n {
		a.relay.Publish([]telemetry.Reading{reading(fmt.Sprintf("dev-%d", i), "p", 1000, float64(i))})
		if i == 0 {
			// A gap a writer that does not linger would send the first
			// reading in (it takes microseconds), well inside the linger.
			time.Sleep(200 * time.Millisecond)
		}
	}
	eventually(t, "all readings on B", func() bool { return len(onB.seen("readings")) == n })
	if st := a.relay.Stats(); st.PublishedMessages != 1 || st.PublishedReadings != n {
		t.Fatalf("%d messages for %d readings, want 1 for %d", st.PublishedMessages, st.PublishedReadings, n)
	}
}

// TestCatchupAfterOneInstanceLostNATS: only A loses NATS; B stays connected
// and never reloads, so what A ingested meanwhile can reach B's dashboard
// only as A's catch-up once A is back.
func TestCatchupAfterOneInstanceLostNATS(t *testing.T) {
	ns := natstest.Start(t)
	px := startProxy(t, ns.Addr())
	a := startInstance(t, px.URL(), "a", nil)
	b := startInstance(t, ns.URL(), "b", nil)
	a.waitConnected(t)
	b.waitConnected(t)
	onB := subscribe(t, b.hub, live.Filter{})

	px.setCut(true)
	eventually(t, "A degraded", func() bool { return !a.relay.Stats().Connected })
	a.relay.Publish([]telemetry.Reading{reading("dev-5", "p", 10, 1), reading("dev-5", "p", 11, 2)})
	a.relay.Publish([]telemetry.Reading{reading("dev-6", "p", 20, 3)})
	eventually(t, "A's outage readings counted as not relayed", func() bool { return a.relay.Stats().UnsentReadings == 3 })
	loadsB := b.relay.Stats().LastValuesLoaded

	px.setCut(false)
	a.waitConnected(t)
	eventually(t, "catch-up on B", func() bool { return onB.has("readings", "dev-5", 11) && onB.has("readings", "dev-6", 20) })
	if onB.has("readings", "dev-5", 10) {
		t.Fatal("catch-up sent more than the last value of dev-5")
	}
	if st := b.relay.Stats(); st.LastValuesLoaded != loadsB || !st.Connected {
		t.Fatalf("B reloaded or went degraded: %+v", st)
	}
	if st := a.relay.Stats(); st.CatchupReadings != 2 {
		t.Fatalf("A's catch-up: %+v", st)
	}
	if slices.Contains(onB.relayStates(), "degraded") {
		t.Fatal("B's dashboard was told of A's outage")
	}
}

// TestOwnMessagesSkipped: a message carrying this instance's id is not
// taken back (a second connection of the same id; no-echo covers the first).
func TestOwnMessagesSkipped(t *testing.T) {
	hub := &countingHub{}
	r, err := New(Config{URL: "nats://127.0.0.1:1", Instance: "a"}, hub, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	var enc encoder
	data := enc.encode(nil, []telemetry.Reading{reading("d", "s", 1, 1)})
	r.receive(context.Background(), &nats.Msg{Header: nats.Header{hdrInstance: {"a"}}, Data: data})
	if hub.published != 0 {
		t.Fatal("own message taken back")
	}
	r.receive(context.Background(), &nats.Msg{Header: nats.Header{hdrInstance: {"b"}}, Data: data})
	if hub.published != 1 {
		t.Fatal("another instance's message not taken")
	}
}

// TestPresenceAcrossInstances: a device reporting to A is online on B from
// its first relayed reading, and goes offline on B after its silence, not
// before: remote readings keep presence's timing.
func TestPresenceAcrossInstances(t *testing.T) {
	ns := natstest.Start(t)
	const offlineAfter = 300 * time.Millisecond
	hc := live.HubConfig{OfflineAfter: offlineAfter, SweepInterval: 10 * time.Millisecond}
	a := startInstanceHub(t, ns.URL(), "a", hc, nil)
	b := startInstanceHub(t, ns.URL(), "b", hc, nil)
	a.waitConnected(t)
	b.waitConnected(t)
	onB := subscribe(t, b.hub, live.Filter{Presence: live.PresenceOnly})

	var last time.Time
	for i := range 5 {
		a.relay.Publish([]telemetry.Reading{reading("dev-1", "p", int64(i), 1)})
		last = time.Now()
		time.Sleep(offlineAfter / 10) // the device's reporting interval
	}
	events := func() []bool {
		var out []bool
		for _, f := range onB.all() {
			if f.Type == "presence" && f.DeviceID == "dev-1" {
				out = append(out, f.Online)
			}
		}
		return out
	}
	eventually(t, "offline on B", func() bool { return slices.Equal(events(), []bool{true, false}) })
	if silent := time.Since(last); silent < offlineAfter {
		t.Fatalf("offline on B after %v of silence, before the %v timeout", silent, offlineAfter)
	}
}

// TestStreamDeletedWhileRunning: an operator deletes the last-value stream;
// the relay creates it again and the next writes land.
func TestStreamDeletedWhileRunning(t *testing.T) {
	ns := natstest.Start(t)
	a := startInstance(t, ns.URL(), "a", nil)
	a.waitConnected(t)
	a.relay.Publish([]telemetry.Reading{reading("dev-1", "p", 1, 1)})
	eventually(t, "written", func() bool { return a.relay.Stats().LastValuesWritten == 1 })

	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(context.Background(), "TELEMETRYD_LAST"); err != nil {
		t.Fatal(err)
	}
	a.relay.Publish([]telemetry.Reading{reading("dev-2", "p", 2, 2)})
	eventually(t, "written again", func() bool { return a.relay.Stats().LastValuesWritten >= 2 })

	b := startInstance(t, ns.URL(), "b", nil)
	b.waitConnected(t)
	if snap := subscribe(t, b.hub, live.Filter{}).seen("snapshot"); !slices.Equal(snap["dev-2"], []int64{2}) {
		t.Fatalf("snapshot after the stream came back: %v", snap)
	}
}
