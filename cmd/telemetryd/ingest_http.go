package main

import (
	"log/slog"
	"net/http"

	"github.com/telemetryd/telemetryd/ingest"
)

// mountHTTPIngest serves the HTTP ways in (ingest/http.go): POST
// /v1/ingest for any payload format, and InfluxDB's write endpoints for
// line protocol (/api/v2/write, /write), so that Telegraf and InfluxDB
// clients can point at telemetryd. They share the WebSocket endpoint's
// authentication, limits and rate bucket.
func mountHTTPIngest(mux *http.ServeMux, ws *ingest.WS, log *slog.Logger) *ingest.HTTP {
	h := ingest.NewHTTP(ws, log)
	mux.Handle("POST /v1/ingest", h.Ingest())
	mux.Handle("POST /api/v2/write", h.WriteV2())
	mux.Handle("POST /write", h.WriteV1())
	return h
}
