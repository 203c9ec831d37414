package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/telemetryd/telemetryd/authguard"
	"github.com/telemetryd/telemetryd/bridge"
	"github.com/telemetryd/telemetryd/devices"
	"github.com/telemetryd/telemetryd/ingest"
	"github.com/telemetryd/telemetryd/ingest/payload"
	"github.com/telemetryd/telemetryd/live"
	"github.com/telemetryd/telemetryd/live/relay"
	"github.com/telemetryd/telemetryd/storage"
	"github.com/telemetryd/telemetryd/telemetry"
)

// Interface guards: the packages meet only here.
var (
	_ bridge.Sink        = (*storage.Influx)(nil)
	_ telemetry.Consumer = (*bridge.Bridge)(nil)
)

// Each component's configuration is built here, in one place, from the
// settings and the collaborators it is given.

// setup reads the settings, builds the logger, loads the rules file and
// refuses settings that would only fail later.
func setup(args []string, lookupEnv func(string) (string, bool), stderr io.Writer) (config, rules, *slog.Logger, error) {
	cfg, err := parseConfig(args, lookupEnv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return cfg, rules{}, nil, errHelp
	}
	if err != nil {
		return cfg, rules{}, nil, err
	}
	log, err := newLogger(cfg, stderr)
	if err != nil {
		return cfg, rules{}, nil, err
	}
	r, err := loadRules(cfg.ConfigFile)
	if err != nil {
		return cfg, rules{}, nil, err
	}
	return cfg, r, log, cfg.Sec.check()
}

// openStore builds the InfluxDB client, tries it once (connectAtStart:
// only a permanent failure ends the start; storageJob connects later) and
// returns where the bridge writes: through the disk spool (when enabled),
// which replays to InfluxDB in the background, or straight to InfluxDB.
// durable is nil without the spool; closeStore closes both.
func openStore(ctx context.Context, cfg config, log *slog.Logger) (store *storage.Influx, sink bridge.Sink, durable *storage.Durable, closeStore func(), err error) {
	store, err = newStorage(cfg, log) // storagestart.go
	if err != nil {
		return nil, nil, nil, nil, err
	}
	if err := connectAtStart(ctx, store, cfg, log); err != nil {
		store.Close()
		return nil, nil, nil, nil, err
	}
	if !cfg.Spool {
		return store, store, nil, store.Close, nil
	}
	d, closeSpool, err := openDurable(cfg, store, log.With("component", "spool"))
	if err != nil {
		store.Close()
		return nil, nil, nil, nil, err
	}
	return store, d, d, func() { closeSpool(); store.Close() }, nil
}

// bridgeConfig: the registry authorizes gateways and labels readings; the
// durable store (nil without the spool) keeps what InfluxDB refuses; the
// hub hears of completed frames for the persisted watermark.
func bridgeConfig(cfg config, r rules, reg *devices.Registry, durable *storage.Durable, hub *live.Hub) bridge.Config {
	c := bridge.Config{
		Limits:        bridge.Limits{MaxClockSkew: cfg.MaxClockSkew},
		QueueFrames:   cfg.QueueFrames,
		MaxBatchLines: cfg.BatchLines,
		Writers:       cfg.InfluxWriters,
		FlushInterval: cfg.FlushInterval,
		// The rest of the grace is the HTTP server's, shut down last.
		DrainTimeout: max(cfg.ShutdownGrace-shutdownTimeout, time.Second),
		Children:     reg,
		Labels:       reg,
		Durable:      hub,
	}
	r.applyBridge(&c)
	if durable != nil { // a nil *Durable in the interface would not be nil
		c.DeadLetters = durable
	}
	return c
}

// guardConfig throttles credential guessing per client address.
func guardConfig(cfg config) authguard.Config {
	proxies, _ := parsePrefixes(cfg.TrustedProxies) // checked by parseFlags
	return authguard.Config{MaxFailures: cfg.AuthMaxFailures, Block: cfg.AuthBlock, TrustedProxies: proxies}
}

// hubConfig: the slow-dashboard policy, snapshot chunks well under the
// dashboards' queue bound, and resume reading storage's history (live.go).
func hubConfig(cfg config, store *storage.Influx) live.HubConfig {
	return live.HubConfig{
		SlowPolicy:         live.SlowPolicy(cfg.LiveSlowPolicy),
		SnapshotChunkBytes: min(64<<10, cfg.LiveQueueBytes/4),
		Resume:             cfg.Live.resumeConfig(store),
	}
}

// dashboardConfig requires viewer tokens on every dashboard endpoint.
func dashboardConfig(cfg config, reg *devices.Registry) live.DashboardConfig {
	return live.DashboardConfig{
		CheckOrigin:     originChecker(cfg.AllowedOrigins),
		Viewers:         reg,
		ViewerActive:    reg.ViewerActive,
		MaxPendingBytes: cfg.LiveQueueBytes,
		// permessage-deflate for dashboards that offer it (live.go)
		DisableCompression: !cfg.Live.Compression,
	}
}

// payloadLimits are the decoder's limits, shared by WebSocket and MQTT.
func payloadLimits(cfg config, r rules) payload.Limits {
	l := payload.Limits{MaxReadings: cfg.MaxReadings}
	r.applyPayload(&l)
	return l
}

// wsConfig: connection and rate limits, and the per-frame check that the
// device is still active.
func wsConfig(cfg config, r rules, devs ingest.DeviceChecker) ingest.WSConfig {
	s := cfg.Sec
	return ingest.WSConfig{
		MaxFrameSize:      cfg.MaxFrameBytes,
		Limits:            payloadLimits(cfg, r),
		CheckOrigin:       originChecker(cfg.AllowedOrigins),
		MaxConnsPerDevice: s.MaxConnsPerDevice,
		MaxConns:          s.MaxConns,
		FrameRate:         float64(s.FrameRate),
		FrameBurst:        s.FrameBurst,
		RateLimitClose:    s.RateLimitClose,
		PingInterval:      s.WSPingInterval,
		Devices:           devs,
	}
}

// openMQTT builds the MQTT consumer; nil when -mqtt-url is empty. Messages
// of unknown or revoked topic devices are dropped.
func openMQTT(cfg config, r rules, devs ingest.DeviceChecker, br *bridge.Bridge, log *slog.Logger) (*ingest.MQTT, error) {
	if cfg.MQTTURL == "" {
		return nil, nil
	}
	tlsConf, err := mqttTLS(cfg.Sec)
	if err != nil {
		return nil, err
	}
	return ingest.NewMQTT(ingest.MQTTConfig{
		URL: cfg.MQTTURL, Topic: cfg.MQTTTopic, ClientID: mqttClientID(cfg), ShareGroup: cfg.MQTTShareGroup,
		Username: cfg.MQTTUsername, Password: cfg.MQTTPassword,
		Connections: cfg.MQTTConnections, Limits: payloadLimits(cfg, r),
		Devices: devs, TLS: tlsConf,
		// The WebSocket limits apply to MQTT devices too (mqttlimits.go).
		MaxMessageSize: cfg.MaxFrameBytes, FrameRate: float64(cfg.Sec.FrameRate), FrameBurst: cfg.MQTTFrameBurst,
	}, br, log.With("component", "mqtt"))
}

// endpoints are the components the public HTTP server routes to.
type endpoints struct {
	ws      *ingest.WS
	mqtt    *ingest.MQTT // nil: MQTT off
	bridge  *bridge.Bridge
	hub     *live.Hub
	dash    *live.Dashboards
	store   *storage.Influx
	durable *storage.Durable // nil: no spool
	reg     *devices.Registry
	guard   *authguard.Guard // authguard.go: credential guessing throttled
	server  *server
	ready   *readiness   // health.go
	relay   *relay.Relay // nil: this process only
}

// routes is every public endpoint.
func routes(e endpoints, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /v1/ingest", e.ws)
	httpIngest := mountHTTPIngest(mux, e.ws, log.With("component", "http-ingest")) // ingest_http.go: POST /v1/ingest, /api/v2/write, /write
	mux.Handle("GET /v1/live", e.dash)
	// web.go: the dashboard page, its API and /v1/live/sse.
	mountWeb(mux, webDeps{dash: e.dash, hub: e.hub, store: e.store, registered: e.reg.Devices, log: log.With("component", "web")})
	// The admin API (404 when no admin token is configured).
	mux.Handle("/api/v1/", devices.NewAdminAPI(e.reg, log.With("component", "admin-api")))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.Handle("GET /readyz", e.ready)
	mux.Handle("GET /metrics", metricsHandler(metricSources{
		bridge: e.bridge, hub: e.hub, dash: e.dash, ws: e.ws, mqtt: e.mqtt, http: httpIngest, registry: e.reg, relay: e.relay,
		incompleteRequests: e.server.IncompleteRequests, durable: e.durable, guard: e.guard, build: currentBuild(),
	}, log))
	return e.guard.Wrap(mux)
}
