package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/simulator"
	"github.com/telemetryd/telemetryd/storage/influxtest"
)

// TestSimulatorEndToEnd runs the device simulator in-process against the
// real service, a real InfluxDB and a real Mosquitto with password and ACL
// files written from the device registry: a fleet provisioned through the
// admin API, devices and gateways (with children) over WebSocket and MQTT,
// and every fault kind injected. The simulator's own verification (dashboard
// subscription plus InfluxDB) must find nothing lost and every fault
// answered exactly as expected; InfluxDB is then counted independently.
func TestSimulatorEndToEnd(t *testing.T) {
	influx := influxtest.Start(t)
	const db = "sim_e2e"
	svc, broker, pwFile, _ := startWithBrokerAuth(t, influx, db)
	waitReady(t, svc)

	log := slog.New(slog.NewTextHandler(testLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg := simulator.Config{
		ServiceURL:   svc.url(""),
		AdminToken:   testAdminToken,
		MQTTURL:      broker.URL(),
		InfluxURL:    influx.URL(),
		InfluxBucket: db + "/autogen",
		CredsFile:    filepath.Join(t.TempDir(), "creds.json"),
		// Connections alternate WebSocket/MQTT: devices 1 and 3 and
		// gateway 2 on WebSocket, device 2 and gateway 1 on MQTT.
		Devices: 3, Gateways: 2, ChildrenPerGateway: 3,
		Transport: simulator.TransportMixed, Profile: simulator.ProfileMixed,
		Rate: 40, Jitter: 0.2, ReadingsPerDevice: 50, Seed: 7,
		Faults: simulator.Faults{
			Malformed: 0.04, Invalid: 0.05, Skew: 0.04, Duplicate: 0.04,
			Oversize: 0.02, Disconnect: 0.02, WrongToken: 0.02,
		},
		BackoffMin: 10 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
		Verify: true, VerifyTimeout: 30 * time.Second, DrainTimeout: 30 * time.Second,
	}

	// Provision first: the service rewrites the broker's password and ACL
	// files, which the broker reads on SIGHUP.
	if err := simulator.Provision(t.Context(), cfg, log); err != nil {
		t.Fatal(err)
	}
	creds, err := simulator.LoadCredentials(cfg.CredsFile)
	if err != nil || len(creds.Devices) != 3+2+2*3 {
		t.Fatalf("credentials: %v, %d devices", err, len(creds.Devices))
	}
	eventually(t, 10*time.Second, "broker files rewritten", func() bool {
		pw, _ := os.ReadFile(pwFile)
		for _, c := range creds.Devices {
			if !strings.Contains(string(pw), c.ID+":") {
				return false
			}
		}
		return true
	})
	broker.Reload(t)

	rep, err := simulator.Run(t.Context(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	rep.WriteText(&text)
	t.Logf("simulator report:\n%s", text.String())
	if !rep.OK || !rep.Verified {
		t.Fatalf("report not OK (verified %v): %v", rep.Verified, rep.Failures)
	}

	// The fleet: both transports and a gateway.
	if f := rep.Fleet; f.Devices != 9 || f.Gateways != 2 || f.Children != 6 || f.WebSockets != 3 || f.MQTT != 2 {
		t.Fatalf("fleet %+v", f)
	}
	// Zero loss: every valid reading acked, stored and seen live.
	r := rep.Readings
	if r.Generated != 9*50 || r.Sent != r.Generated || r.Valid+r.Faulty != r.Sent {
		t.Fatalf("readings %+v", r)
	}
	if r.Acked != r.Valid || r.Stored != r.Valid || r.SeenLive != r.Valid || r.Unacked != 0 {
		t.Fatalf("valid %d, acked %d, stored %d, seen live %d, unacked %d", r.Valid, r.Acked, r.Stored, r.SeenLive, r.Unacked)
	}
	l := rep.Losses
	for name, n := range map[string]uint64{
		"acked_not_stored": l.AckedNotStored.Count, "not_seen_live": l.NotSeenLive.Count, "unacked": l.Unacked.Count,
		"unexpected_rejections": l.UnexpectedRejections.Count, "faults_accepted": l.FaultsAccepted.Count,
	} {
		if n != 0 {
			t.Errorf("losses %s = %d", name, n)
		}
	}
	// Every fault kind was injected (seed 7) and answered exactly as
	// expected, and nothing else was refused.
	for _, k := range []string{"malformed", "invalid", "skew", "duplicate", "oversize", "disconnect", "wrong_token"} {
		f := rep.Faults[k]
		if f == nil || f.Injected == 0 || f.Confirmed != f.Injected || f.Unverified != 0 {
			t.Errorf("fault %s: %+v", k, f)
		}
	}
	var expectedRejections uint64
	for code, rc := range rep.Rejected {
		if rc.Unexpected != 0 {
			t.Errorf("rejected %s: %d unexpected", code, rc.Unexpected)
		}
		expectedRejections += rc.Expected
	}
	// The WebSocket answers name each refused reading; the MQTT ones are
	// checked in storage. Together they are the faulty readings.
	if r.Rejected != expectedRejections || expectedRejections == 0 || expectedRejections >= r.Faulty {
		t.Errorf("rejected %d readings, %d expected; %d faulty (some over MQTT)", r.Rejected, expectedRejections, r.Faulty)
	}
	if n := rep.Connection.CloseCodes["1009"]; n != rep.Faults["oversize"].Injected {
		t.Errorf("%d closes with 1009 for %d oversized frames", n, rep.Faults["oversize"].Injected)
	}
	// Latency figures are present and ordered.
	for _, k := range []string{"ack", "ack_ws", "ack_mqtt", "live"} {
		lt, ok := rep.Latency[k]
		if !ok || lt.Count == 0 || lt.P50 <= 0 || lt.P90 < lt.P50 || lt.P99 < lt.P90 || lt.Max < lt.P99 {
			t.Errorf("latency %s: %+v", k, lt)
		}
	}
	if tp := rep.Throughput; tp.ReadingsPerS <= 0 || tp.FramesPerS <= 0 {
		t.Errorf("throughput %+v", tp)
	}

	// Independently of the simulator: InfluxDB holds exactly the valid
	// readings of this run, once each (duplicates and resends collapse).
	q := fmt.Sprintf(`SELECT count("sim_seq") FROM "environment","vehicle","power","status" WHERE "sim_run" = '%s'`, rep.RunID)
	var stored int64
	for _, s := range influx.Query(t, db, q) {
		for _, row := range s.Values {
			n, _ := row[1].(interface{ Int64() (int64, error) }).Int64()
			stored += n
		}
	}
	if uint64(stored) != r.Valid {
		t.Fatalf("InfluxDB holds %d readings of run %s, want the %d valid ones", stored, rep.RunID, r.Valid)
	}
}

// testLogWriter sends log lines to the test log.
type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
