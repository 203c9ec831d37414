package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/telemetryd/telemetryd/authguard"
	"github.com/telemetryd/telemetryd/bridge"
	"github.com/telemetryd/telemetryd/ingest"
	"github.com/telemetryd/telemetryd/live"
	"github.com/telemetryd/telemetryd/storage"
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
	cfg, rules, log, err := setup(args, lookupEnv, stderr) // components.go
	if err != nil {
		return err
	}
	restoreGC := tuneGC(cfg.GCPercent, lookupEnv, log) // gctuning.go
	defer restoreGC()
	dataDir, err := storage.LockDir(cfg.DataDir) // one process per data dir: its spool and dead letters are its own
	if err != nil {
		return err
	}
	defer func() { _ = dataDir.Unlock() }()
	// The registry before storage: it fails fast; storage does not wait for InfluxDB (storagestart.go).
	reg, err := openRegistry(ctx, cfg, log) // registry.go
	if err != nil {
		return err
	}
	defer closeRegistry(reg, log)
	auth, err := newDeviceAuth(reg, cfg.DeviceTokens)
	if err != nil {
		return err
	}
	mosquitto, err := openMosquittoSync(reg, cfg, log) // nil: not configured
	if err != nil {
		return err
	}
	store, sink, durable, closeStore, err := openStore(ctx, cfg, log) // durable nil: -spool=false
	if err != nil {
		return err
	}
	defer closeStore()

	// The live side: the hub rebroadcasts what the bridge normalized.
	hub := live.NewHub(hubConfig(cfg, store), log.With("component", "hub"))
	dash := live.NewDashboards(dashboardConfig(cfg, reg), hub, log.With("component", "dashboards"))
	rel, err := openRelay(cfg, hub, log) // cluster.go; nil: this process only
	if err != nil {
		return err
	}

	br := bridge.New(bridgeConfig(cfg, rules, reg, durable, hub), sink, livePublisher(hub, rel), log.With("component", "bridge"))
	storageUp := storageJob(ctx, store, br, durable, log) // storagestart.go: connect, seed the type guard, replay
	ws := ingest.NewWS(wsConfig(cfg, rules, auth), auth, br, log.With("component", "ws"))
	mq, err := openMQTT(cfg, rules, auth, br, log) // nil: MQTT off
	if err != nil {
		return err
	}
	closeOnRevoke(reg, ws, dash)

	stopAdmin, err := startAdmin(cfg.AdminAddr, log.With("component", "admin"))
	if err != nil {
		return err
	}
	defer stopAdmin()
	guard := authguard.New(guardConfig(cfg))
	srv := newServer(cfg, log)                 // server.go: TLS, handshake timeout, connection counting
	health := newReadiness(store, durable, mq) // health.go: /readyz
	if err := srv.listen(cfg.HTTPAddr, routes(endpoints{ws: ws, mqtt: mq, bridge: br, hub: hub, dash: dash,
		store: store, durable: durable, reg: reg, guard: guard, server: srv, ready: health, relay: rel}, log)); err != nil {
		return err
	}

	// Start downstream first; each stage stops on its own, in reverse order.
	stopReplay := start(ctx, storageUp)
	stopLive := start(ctx, hub.Run, dash.Run, reg.Run, guard.Run, when(mosquitto != nil, mosquitto.Run), when(rel != nil, logged(log, "live relay stopped", rel.Run)))
	stopBridge := start(ctx, br.Run)
	stopIngest := start(ctx, ws.Run, when(mq != nil, mq.Run))
	log.Info("telemetryd serving", "version", currentBuild().Version, "addr", srv.Addr(), "mqtt", cfg.MQTTURL != "", "influx", cfg.InfluxURL, "bucket", cfg.InfluxBucket)
	srv.serveUntil(ctx, ready) // the signal, or the server failing, starts the shutdown

	health.drain(log, cfg.DrainDelay) // 0. /readyz 503 while everything still works: balancers stop sending first
	began := time.Now()
	log.Info("shutting down", "grace", cfg.ShutdownGrace)
	ws.Drain() // 1. ingest: no new sockets or frames, no new MQTT messages
	stopIngest()
	stopBridge() // 2. all accepted is written (or given up at the grace deadline), owed acks sent
	stopReplay() //    what is still spooled is replayed after the next start
	ws.Close()   // 3. transports: devices see 1001; MQTT keeps what is unacked for redelivery
	if mq != nil {
		mq.Close()
	}
	stopLive() // 4. dashboards, then the HTTP server
	srv.shutdown()
	log.Info("stopped", "took", time.Since(began).Round(time.Millisecond))
	return nil
}

// start runs each fn (nil ones skipped) in its own goroutine under a
// context of its own: detached from ctx, whose end starts the ordered
// shutdown rather than stopping everything at once. stop cancels that
// context and waits for every fn to return.
func start(ctx context.Context, fns ...func(context.Context) error) (stop func()) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	for _, fn := range fns {
		if fn != nil {
			wg.Go(func() { _ = fn(ctx) })
		}
	}
	return func() {
		cancel()
		wg.Wait()
	}
}

// when is fn if cond holds, else nil (start skips it): for optional
// components, whose nil pointer must not be run.
func when(cond bool, fn func(context.Context) error) func(context.Context) error {
	if !cond {
		return nil
	}
	return fn
}

// logged runs fn and logs the error it ends with.
func logged(log *slog.Logger, msg string, fn func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		err := fn(ctx)
		if err != nil {
			log.Error(msg, "error", err)
		}
		return err
	}
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
