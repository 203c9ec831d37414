package main

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/storage"
	"github.com/telemetryd/telemetryd/telemetry"
)

// TestReadyState: /readyz is 200 exactly when readings can be accepted and
// made durable — by InfluxDB, or by a spool with room — and nothing else
// (MQTT, the drain) says otherwise.
func TestReadyState(t *testing.T) {
	const gib = 1 << 30
	up := storage.ConnState{Connected: true}
	away := storage.ConnState{Err: errors.New("influxdb ping: timeout"), Since: time.Unix(1700000000, 0)}
	never := storage.ConnState{Err: storage.ErrNotConnected}
	failed := storage.ConnState{Err: fmt.Errorf("not an InfluxDB: %w", telemetry.ErrPermanent)}
	room := storage.SpoolStats{Records: 3, Bytes: 4096, MaxBytes: gib}
	full := storage.SpoolStats{Records: 9, Bytes: gib - 100, MaxBytes: gib}
	small := storage.SpoolStats{Bytes: 1000, MaxBytes: 16384} // under 1 MiB: a tenth of it is room
	tiny := storage.SpoolStats{Bytes: 15000, MaxBytes: 16384}
	pingErr := errors.New("influxdb ping: connection refused")

	for _, c := range []struct {
		name            string
		in              readyInput
		code            int
		status, storage string
	}{
		{"influx up, no spool", readyInput{storage: up}, 200, "ok", "ok"},
		{"influx up, spool", readyInput{storage: up, spoolOn: true, spool: room}, 200, "ok", "ok"},
		{"influx up, spool full", readyInput{storage: up, spoolOn: true, spool: full}, 200, "ok", "ok"},
		{"never connected, spool room", readyInput{storage: never, spoolOn: true, spool: room}, 200, "degraded", "unreachable"},
		{"unreachable since start, spool room", readyInput{storage: away, spoolOn: true, spool: room}, 200, "degraded", "unreachable"},
		{"ping fails, spool room", readyInput{storage: up, pingErr: pingErr, spoolOn: true, spool: room}, 200, "degraded", "unreachable"},
		{"small spool with room", readyInput{storage: away, spoolOn: true, spool: small}, 200, "degraded", "unreachable"},
		{"permanent failure, spool room", readyInput{storage: failed, spoolOn: true, spool: room}, 200, "degraded", "failed"},
		{"unreachable, spool full", readyInput{storage: away, spoolOn: true, spool: full}, 503, "unavailable", "unreachable"},
		{"unreachable, small spool full", readyInput{storage: away, spoolOn: true, spool: tiny}, 503, "unavailable", "unreachable"},
		{"ping fails, no spool", readyInput{storage: up, pingErr: pingErr}, 503, "unavailable", "unreachable"},
		{"never connected, no spool", readyInput{storage: never}, 503, "unavailable", "unreachable"},
		{"permanent failure, no spool", readyInput{storage: failed}, 503, "unavailable", "failed"},
		{"mqtt down", readyInput{storage: up, mqttOn: true}, 503, "unavailable", "ok"},
		{"mqtt up", readyInput{storage: up, mqttOn: true, mqttUp: true}, 200, "ok", "ok"},
		{"draining", readyInput{storage: up, draining: true}, 503, "draining", "ok"},
		{"draining, degraded", readyInput{storage: away, spoolOn: true, spool: room, draining: true}, 503, "draining", "unreachable"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, b := readyState(c.in)
			if code != c.code || b.Status != c.status || b.Storage != c.storage {
				t.Fatalf("got %d %s storage %s, want %d %s storage %s (%v)", code, b.Status, b.Storage, c.code, c.status, c.storage, b.Checks)
			}
			if (code == http.StatusOK) != (c.status == "ok" || c.status == "degraded") {
				t.Fatalf("status %s with code %d", b.Status, code)
			}
			if b.Checks["influxdb"] == "" || b.Checks["spool"] == "" || c.in.mqttOn != (b.Checks["mqtt"] != "") {
				t.Fatalf("checks %v", b.Checks)
			}
		})
	}
}
