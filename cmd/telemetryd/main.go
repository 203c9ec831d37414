// Command telemetryd ingests device telemetry over WebSocket and MQTT,
// writes it to InfluxDB and rebroadcasts it live to dashboards.
//
// It is the only place that reads flags and the environment and the only
// place that knows every package: it builds each stage with its downstream
// (storage → bridge → transports) and runs them until a signal, then shuts
// down in order: ingest stops, the bridge drains and flushes, owed acks go
// out, transports close, dashboards close.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/telemetryd/telemetryd/bridge"
	"github.com/telemetryd/telemetryd/devices"
	"github.com/telemetryd/telemetryd/ingest"
	"github.com/telemetryd/telemetryd/ingest/payload"
	"github.com/telemetryd/telemetryd/live"
	"github.com/telemetryd/telemetryd/storage"
	"github.com/telemetryd/telemetryd/telemetry"
)

// Interface guards: the packages meet only here.
var (
	_ bridge.Sink          = (*storage.Influx)(nil)
	_ telemetry.Consumer   = (*bridge.Bridge)(nil)
	_ ingest.Authenticator = (*devices.StaticTokens)(nil)
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) > 1 {
		if sub, ok := subcommands()[os.Args[1]]; ok {
			if err := sub(ctx, os.Args[2:], os.LookupEnv, os.Stdout, os.Stderr); err != nil {
				if !errors.Is(err, flag.ErrHelp) {
					fmt.Fprintf(os.Stderr, "telemetryd %s: %v\n", os.Args[1], err)
				}
				os.Exit(2)
			}
			return
		}
	}
	if err := run(ctx, os.Args[1:], os.LookupEnv, os.Stderr, nil); err != nil {
		if errors.Is(err, errHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "telemetryd:", err)
		os.Exit(1)
	}
}

var errHelp = errors.New("help requested")

// run starts the service and blocks until ctx is cancelled and shutdown is
// complete. ready, when not nil, receives the HTTP listener's address once
// the service is serving (tests use it with -http-addr 127.0.0.1:0).
func run(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stderr io.Writer, ready chan<- string) error {
	cfg, err := parseConfig(args, lookupEnv, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return err
	}
	log, err := newLogger(cfg, stderr)
	if err != nil {
		return err
	}
	rules, err := loadRules(cfg.ConfigFile)
	if err != nil {
		return err
	}

	ident, err := openIdentity(ctx, cfg, log) // registry.go
	if err != nil {
		return err
	}
	defer ident.Close()
	store, err := openStorage(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer store.Close()

	// The bridge writes through the disk spool (when enabled), which
	// replays to InfluxDB in the background.
	var sink bridge.Sink = store
	var durable *storage.Durable
	if cfg.Spool {
		d, closeSpool, err := openDurable(cfg, store, log.With("component", "spool"))
		if err != nil {
			return err
		}
		defer closeSpool()
		sink, durable = d, d
	}

	hub := live.NewHub(cfg.Live.hubConfig(store), log.With("component", "hub"))
	bcfg := bridge.Config{
		Limits:        bridge.Limits{MaxClockSkew: cfg.MaxClockSkew},
		QueueFrames:   cfg.QueueFrames,
		MaxBatchLines: cfg.BatchLines,
		Writers:       cfg.InfluxWriters,
		FlushInterval: cfg.FlushInterval,
		DrainTimeout:  max(cfg.ShutdownGrace-2*time.Second, time.Second),
	}
	rules.applyBridge(&bcfg)
	ident.configureBridge(&bcfg)
	if durable != nil {
		bcfg.DeadLetters = durable
	}
	bcfg.Durable = hub // the persisted watermark of the live stream
	br := bridge.New(bcfg, sink, hub, log.With("component", "bridge"))
	seedFieldTypes(ctx, br, store, log)

	checkOrigin := originChecker(cfg.AllowedOrigins)
	limits := payload.Limits{MaxReadings: cfg.MaxReadings}
	rules.applyPayload(&limits)
	dash := live.NewDashboards(ident.dashboardConfig(live.DashboardConfig{CheckOrigin: checkOrigin, DisableCompression: !cfg.Live.Compression}), hub, log.With("component", "dashboards"))
	ws := ingest.NewWS(ident.wsConfig(ingest.WSConfig{
		MaxFrameSize: cfg.MaxFrameBytes,
		Limits:       limits,
		CheckOrigin:  checkOrigin,
	}), ident, br, log.With("component", "ws"))
	ident.attach(ws, dash)
	var mq *ingest.MQTT
	if cfg.MQTTURL != "" {
		mq, err = ingest.NewMQTT(ident.mqttConfig(ingest.MQTTConfig{
			URL: cfg.MQTTURL, Topic: cfg.MQTTTopic, ClientID: cfg.MQTTClientID,
			Username: cfg.MQTTUsername, Password: cfg.MQTTPassword,
			Connections: cfg.MQTTConnections, Limits: limits,
		}), br, log.With("component", "mqtt"))
		if err != nil {
			return err
		}
	}

	mux := http.NewServeMux()
	mux.Handle("GET /v1/ingest", ws)
	mux.Handle("GET /v1/live", dash)
	// web.go: the dashboard page, its API and /v1/live/sse.
	mountWeb(mux, webDeps{dash: dash, hub: hub, store: store, registered: ident.reg.Devices, log: log.With("component", "web")})
	ident.mount(mux) // /api/v1/: admin API
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.Handle("GET /readyz", readiness(store, mq))
	mux.Handle("GET /metrics", metricsHandler(metricSources{bridge: br, hub: hub, dash: dash, ws: ws, mqtt: mq, registry: ident.reg, incompleteRequests: ident.IncompleteRequests, durable: durable, build: currentBuild()}, log))

	stopAdmin, err := startAdmin(cfg.AdminAddr, log.With("component", "admin"))
	if err != nil {
		return err
	}
	defer stopAdmin()

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := ident.httpServer(&http.Server{ // registry.go: handshake timeout, counter
		Handler:           mux,
		ReadHeaderTimeout: cfg.Sec.ReadHeaderTimeout,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	})

	// Each stage runs under its own context so that shutdown can stop them
	// one after another: ingest, then the bridge, then the live side.
	ingestCtx, stopIngest := context.WithCancel(context.WithoutCancel(ctx))
	bridgeCtx, stopBridge := context.WithCancel(context.WithoutCancel(ctx))
	liveCtx, stopLive := context.WithCancel(context.WithoutCancel(ctx))
	defer stopIngest()
	defer stopBridge()
	defer stopLive()

	var liveDone, bridgeDone, ingestDone, replayDone sync.WaitGroup
	replayCtx, stopReplay := context.WithCancel(context.WithoutCancel(ctx))
	defer stopReplay()
	if durable != nil {
		replayDone.Go(func() {
			if err := durable.Run(replayCtx); err != nil {
				log.Error("spool replay stopped", "error", err)
			}
		})
	}
	liveDone.Go(func() { _ = hub.Run(liveCtx) })
	liveDone.Go(func() { _ = dash.Run(liveCtx) })
	liveDone.Go(func() { _ = ident.Run(liveCtx) })
	bridgeDone.Go(func() { _ = br.Run(bridgeCtx) })
	ingestDone.Go(func() { _ = ws.Run(ingestCtx) })
	if mq != nil {
		ingestDone.Go(func() { _ = mq.Run(ingestCtx) })
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- ident.serve(srv, ln) }() // TLS when configured

	log.Info("telemetryd serving", "version", currentBuild().Version, "addr", ln.Addr().String(), "mqtt", cfg.MQTTURL != "", "influx", cfg.InfluxURL, "bucket", cfg.InfluxBucket)
	if ready != nil {
		ready <- ln.Addr().String()
	}

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		log.Error("http server failed", "error", err)
	}

	start := time.Now()
	log.Info("shutting down", "grace", cfg.ShutdownGrace)
	// 1. Stop ingest: no new sockets or frames, no new MQTT messages.
	ws.Drain()
	stopIngest()
	ingestDone.Wait()
	// 2. Drain the bridge: everything accepted is written (or given up at
	//    the grace deadline) and every owed ack is sent.
	stopBridge()
	bridgeDone.Wait()
	stopReplay() // what is still spooled is replayed after the next start
	replayDone.Wait()
	// 3. Close the transports: devices see 1001; the MQTT session keeps
	//    anything unacked for redelivery.
	ws.Close()
	if mq != nil {
		mq.Close()
	}
	// 4. Close dashboards, then the HTTP server.
	stopLive()
	liveDone.Wait()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdownCtx)
	log.Info("stopped", "took", time.Since(start).Round(time.Millisecond))
	return nil
}

func newLogger(cfg config, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return nil, fmt.Errorf("log level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch cfg.LogFormat {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want json or text", cfg.LogFormat)
}

// openStorage connects to InfluxDB, retrying until it answers or ctx ends,
// so that the service can start before its database.
func openStorage(ctx context.Context, cfg config, log *slog.Logger) (*storage.Influx, error) {
	delay := 500 * time.Millisecond
	for {
		tlsConf, err := influxTLS(cfg) // registry.go: -influx-ca
		if err != nil {
			return nil, err
		}
		store, err := storage.Open(ctx, storage.Config{
			URL: cfg.InfluxURL, Token: cfg.InfluxToken, Org: cfg.InfluxOrg, Bucket: cfg.InfluxBucket,
			Timeout: cfg.InfluxTimeout, Gzip: mustGzip(cfg), TLS: tlsConf,
		}, log.With("component", "storage"))
		if err == nil {
			return store, nil
		}
		log.Warn("InfluxDB not reachable yet; retrying", "url", cfg.InfluxURL, "retry_in", delay, "error", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("storage: %w", err)
		case <-time.After(delay):
		}
		delay = min(delay*2, 10*time.Second)
	}
}

// originChecker allows requests without an Origin (devices, non-browser
// clients), same-origin requests, and the listed origins ("*": any).
func originChecker(list string) func(*http.Request) bool {
	allowed := map[string]bool{}
	for _, o := range strings.Split(list, ",") {
		if o = strings.TrimSpace(o); o != "" {
			allowed[strings.ToLower(strings.TrimSuffix(o, "/"))] = true
		}
	}
	return func(r *http.Request) bool {
		origin := strings.ToLower(r.Header.Get("Origin"))
		if origin == "" || allowed["*"] || allowed[origin] {
			return true
		}
		host := strings.TrimPrefix(strings.TrimPrefix(origin, "https://"), "http://")
		return host == strings.ToLower(r.Host)
	}
}
