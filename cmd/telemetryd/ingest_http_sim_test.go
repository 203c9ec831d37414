package main

import (
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/ingest/mqtttest"
	"github.com/telemetryd/telemetryd/simulator"
	"github.com/telemetryd/telemetryd/storage/influxtest"
)

// TestSimulatorWaysIn runs the simulator against the real service and
// InfluxDB through the newer ways in: -transport http (every frame POSTed
// to /v1/ingest, or for line protocol to /api/v2/write) and every -format
// (json, cbor, senml, senml-cbor over WebSocket frames and over HTTP; lp
// over HTTP; lp and senml-cbor over MQTT), faults included; -verify must find nothing lost and every
// fault answered as expected.
func TestSimulatorWaysIn(t *testing.T) {
	influx := influxtest.Start(t)
	for _, c := range []struct {
		name      string
		transport simulator.Transport
		format    simulator.Format
	}{
		{"http-json", simulator.TransportHTTP, simulator.FormatJSON},
		{"ws-cbor", simulator.TransportWS, simulator.FormatCBOR},
		{"http-cbor", simulator.TransportHTTP, simulator.FormatCBOR},
		{"ws-senml", simulator.TransportWS, simulator.FormatSenML},
		{"http-senml", simulator.TransportHTTP, simulator.FormatSenML},
		{"ws-senml-cbor", simulator.TransportWS, simulator.FormatSenMLCBOR},
		{"http-senml-cbor", simulator.TransportHTTP, simulator.FormatSenMLCBOR},
		{"http-lp", simulator.TransportHTTP, simulator.FormatLP},
		{"mqtt-lp", simulator.TransportMQTT, simulator.FormatLP},
		{"mqtt-senml-cbor", simulator.TransportMQTT, simulator.FormatSenMLCBOR},
	} {
		t.Run(c.name, func(t *testing.T) {
			db := "sim_" + strings.ReplaceAll(c.name, "-", "_")
			var broker *mqtttest.Broker
			mqttURL := ""
			if c.transport == simulator.TransportMQTT {
				broker = mqtttest.Start(t, mqtttest.Options{})
				mqttURL = broker.URL()
			}
			svc := startService(t, influx, broker, tokensFile(t), "-influx-bucket", db+"/autogen")
			waitReady(t, svc)
			log := slog.New(slog.NewTextHandler(testLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
			cfg := simulator.Config{
				ServiceURL: svc.url(""), AdminToken: testAdminToken, MQTTURL: mqttURL,
				InfluxURL: influx.URL(), InfluxBucket: db + "/autogen",
				CredsFile: filepath.Join(t.TempDir(), "creds.json"),
				Devices:   3, Gateways: 1, ChildrenPerGateway: 3,
				Transport: c.transport, Format: c.format, Profile: simulator.ProfileMixed,
				Rate: 40, Jitter: 0.2, ReadingsPerDevice: 40, Seed: 7,
				Faults: simulator.Faults{
					Malformed: 0.04, Invalid: 0.05, Skew: 0.04, Duplicate: 0.04, Oversize: 0.02, Disconnect: 0.02,
				},
				BackoffMin: 10 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
				Verify: true, VerifyTimeout: 30 * time.Second, DrainTimeout: 30 * time.Second,
			}
			if err := simulator.Provision(t.Context(), cfg, log); err != nil {
				t.Fatal(err)
			}
			rep, err := simulator.Run(t.Context(), cfg, log)
			if err != nil {
				t.Fatal(err)
			}
			if !rep.OK || !rep.Verified {
				t.Fatalf("report not OK (verified %v): %v\nlosses %+v", rep.Verified, rep.Failures, rep.Losses)
			}
			r := rep.Readings
			if r.Generated != 6*40 || r.Acked != r.Valid || r.Stored != r.Valid || r.SeenLive != r.Valid || r.Unacked != 0 || r.Valid == 0 {
				t.Fatalf("readings %+v", r)
			}
			for _, k := range []string{"malformed", "invalid", "skew", "duplicate"} {
				if f := rep.Faults[k]; f == nil || f.Injected == 0 || f.Confirmed != f.Injected {
					t.Errorf("fault %s: %+v", k, f)
				}
			}
			for _, k := range []string{"oversize", "disconnect"} {
				if f := rep.Faults[k]; f != nil && f.Confirmed != f.Injected {
					t.Errorf("fault %s: %+v", k, f)
				}
			}
		})
	}
}
