package main

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/telemetryd/telemetryd/ingest"
	"github.com/telemetryd/telemetryd/storage"
)

// readiness answers /readyz: 200 when InfluxDB answers and (when configured)
// every MQTT client is connected; 503 otherwise, naming what is down.
func readiness(store *storage.Influx, mq *ingest.MQTT) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		checks := map[string]string{}
		ok := true
		if err := store.Ping(ctx); err != nil {
			checks["influxdb"] = "down: " + err.Error()
			ok = false
		} else {
			checks["influxdb"] = "ok"
		}
		if mq != nil {
			if mq.Connected() {
				checks["mqtt"] = "ok"
			} else {
				checks["mqtt"] = "down: not connected to the broker"
				ok = false
			}
		}
		status, code := "ok", http.StatusOK
		if !ok {
			status, code = "unavailable", http.StatusServiceUnavailable
		}
		writeJSON(w, code, map[string]any{"status": status, "checks": checks})
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
