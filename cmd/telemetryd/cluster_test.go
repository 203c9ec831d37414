package main

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/live/relay/natstest"
	"github.com/telemetryd/telemetryd/storage/influxtest"
)

// relayMsg is a dashboard message of either kind this test waits for.
type relayMsg struct {
	liveMsg
	State string `json:"state"`
}

// waitFor reads dashboard messages until ok accepts one.
func (c *wsClient) waitFor(t *testing.T, what string, ok func(relayMsg) bool) relayMsg {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("no %s on the dashboard", what)
		}
		var m relayMsg
		raw := c.next(t, left)
		if err := json.Unmarshal([]byte(raw), &m); err != nil {
			t.Fatalf("message %q: %v", raw, err)
		}
		if ok(m) {
			return m
		}
	}
}

func hasReading(dev string, ts int64) func(relayMsg) bool {
	return func(m relayMsg) bool {
		if m.Type != "readings" && m.Type != "snapshot" {
			return false
		}
		for _, r := range m.Readings {
			if r.DeviceID == dev && r.TS == ts {
				return true
			}
		}
		return false
	}
}

// TestClusterLiveAcrossInstances: two telemetryd instances on one NATS (the
// nats-server binary, as `make run-cluster` runs it). A WebSocket device on
// A shows live on a dashboard on B; NATS stopped: B's dashboard is told and
// A goes on ingesting; NATS back: told again, live again; B restarted: its
// snapshot holds A's series.
func TestClusterLiveAcrossInstances(t *testing.T) {
	influx := influxtest.Start(t)
	ns := natstest.StartBinary(t)
	tokens := tokensFile(t, "ws-dev", "tok-ws-dev")
	cluster := func(id string) []string { return []string{"-live-nats-url", ns.URL(), "-instance-id", id} }
	a := startService(t, influx, nil, tokens, cluster("a")...)
	b := startService(t, influx, nil, tokens, cluster("b")...)
	for _, svc := range []*service{a, b} {
		waitMetric(t, svc, "relay connected", eq(1), "telemetryd_live_relay_connected")
	}

	dash := mustDialWS(t, b.ws("/v1/live"), bearer(testAdminToken))
	dash.send(t, `{"op":"subscribe","id":"s","devices":["*"]}`)
	dash.waitFor(t, "snapshot", func(m relayMsg) bool { return m.Type == "snapshot" })

	dev := mustDialWS(t, a.ws("/v1/ingest"), bearer("tok-ws-dev"))
	ts := time.Now().UnixMilli() // device time in ms; dashboards get ns
	dev.send(t, fmt.Sprintf(`{"seq":1,"ts":%d,"measurement":"env","metrics":{"t":21.5}}`, ts))
	dash.waitFor(t, "A's reading live on B", hasReading("ws-dev", ts*1e6))

	ns.Stop()
	dash.waitFor(t, "degraded", func(m relayMsg) bool { return m.Type == "relay" && m.State == "degraded" })
	dev.send(t, fmt.Sprintf(`{"seq":2,"ts":%d,"measurement":"env","metrics":{"t":22}}`, ts+1))
	for { // A acknowledges: ingest goes on without NATS
		var ack ackOrError
		if dev.nextJSON(t, &ack); ack.Ack != nil && *ack.Ack == 2 {
			break
		}
	}

	ns.Restart(t)
	dash.waitFor(t, "recovered", func(m relayMsg) bool { return m.Type == "relay" && m.State == "recovered" })
	waitMetric(t, a, "A's relay connected", eq(1), "telemetryd_live_relay_connected")
	dev.send(t, fmt.Sprintf(`{"seq":3,"ts":%d,"measurement":"env","metrics":{"t":23}}`, ts+2))
	dash.waitFor(t, "live after NATS came back", hasReading("ws-dev", (ts+2)*1e6))
	// Seq 3's value written to the last-value stream: after the write
	// that ended the outage (with its catch-up), one more.
	waitMetric(t, a, "A's catch-up after the outage", atLeast(1), "telemetryd_live_relay_catchup_readings_total")
	written := scrape(t, a).get("telemetryd_live_relay_last_values_written_total")
	dev.send(t, fmt.Sprintf(`{"seq":4,"ts":%d,"measurement":"env","metrics":{"t":24}}`, ts+3))
	waitMetric(t, a, "A's last value written", atLeast(written+1), "telemetryd_live_relay_last_values_written_total")

	// B restarted: its snapshot holds A's series.
	b.stop(t)
	b = startService(t, influx, nil, tokens, cluster("b")...)
	waitMetric(t, b, "B's relay connected", eq(1), "telemetryd_live_relay_connected")
	dash = mustDialWS(t, b.ws("/v1/live"), bearer(testAdminToken))
	dash.send(t, `{"op":"subscribe","id":"s","devices":["*"]}`)
	snap := dash.waitFor(t, "snapshot", func(m relayMsg) bool { return m.Type == "snapshot" })
	if !hasReading("ws-dev", (ts+3)*1e6)(snap) {
		t.Fatalf("restarted B's snapshot lacks A's series: %+v", snap)
	}
}
