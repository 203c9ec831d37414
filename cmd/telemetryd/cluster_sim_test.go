package main

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/simulator"
	"github.com/telemetryd/telemetryd/storage/influxtest"
)

// TestSimulatorAcrossInstances: the simulator spreads a WebSocket fleet
// over two real telemetryd instances (one InfluxDB; the same devices known
// to both), one instance stops mid-run, its devices fail over to the other,
// and -verify — a dashboard on each instance plus InfluxDB — finds every
// acknowledged reading stored and seen live, none lost.
func TestSimulatorAcrossInstances(t *testing.T) {
	const devices = 4
	influx := influxtest.Start(t)
	var pairs []string
	creds := &simulator.CredentialsFile{Version: 1}
	for i := 1; i <= devices; i++ {
		id := fmt.Sprintf("clu-dev-%05d", i)
		tok := fmt.Sprintf("tok-clu-%d", i)
		pairs = append(pairs, id, tok)
		creds.Devices = append(creds.Devices, simulator.Credential{Slot: id, ID: id, Token: tok, Kind: "device"})
	}
	credsFile := filepath.Join(t.TempDir(), "creds.json")
	if err := simulator.SaveCredentials(credsFile, creds); err != nil {
		t.Fatal(err)
	}
	tokens := tokensFile(t, pairs...)
	a := startService(t, influx, nil, tokens)
	b := startService(t, influx, nil, tokens)
	waitReady(t, a)
	waitReady(t, b)

	log := slog.New(slog.NewTextHandler(testLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg := simulator.Config{
		ServiceURLs: []string{a.url(""), b.url("")}, AdminToken: testAdminToken,
		InfluxURL: influx.URL(), InfluxBucket: testDB + "/autogen", CredsFile: credsFile, Fleet: "clu",
		Devices: devices, Transport: simulator.TransportWS, Rate: 50, ReadingsPerDevice: 150, Seed: 5,
		BackoffMin: 10 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
		Verify: true, VerifyTimeout: 30 * time.Second, DrainTimeout: 30 * time.Second,
	}
	done := make(chan struct{})
	var rep *simulator.Report
	var runErr error
	go func() { rep, runErr = simulator.Run(t.Context(), cfg, log); close(done) }()
	waitMetric(t, b, "readings through b", atLeast(50), "telemetryd_readings_accepted_total", `transport="ws"`)
	b.stop(t) // its devices move to a
	<-done
	if runErr != nil {
		t.Fatal(runErr)
	}
	var text strings.Builder
	rep.WriteText(&text)
	t.Logf("simulator report:\n%s", text.String())
	r := rep.Readings
	if !rep.OK || !rep.Verified || r.Stored != r.Valid || r.SeenLive != r.Valid || r.Acked != r.Valid || r.Valid != devices*150 {
		t.Fatalf("report not OK (verified %v): %v; readings %+v", rep.Verified, rep.Failures, r)
	}
	if c := rep.Connection; c.PerService[a.url("")] < 2 || c.PerService[b.url("")] < 2 || c.Failovers < 2 {
		t.Fatalf("connections per service %v, %d failovers", c.PerService, c.Failovers)
	}
}
