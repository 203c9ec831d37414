// Command bench is telemetryd's benchmark harness (`make bench`, issue 8).
//
// It starts the real stack — InfluxDB 1.8, Mosquitto and a telemetryd
// child process — on free loopback ports in a temporary directory, plus a
// "raw" server (this binary re-executed with TELEMETRY_BENCH_ROLE=rawserver)
// that does with bare gws what the service does with its pipeline. Every
// scenario measures the service and its raw baseline in the same run, on
// the same machine, with the same client code, and reports the ratio: on
// shared machines absolute numbers drift, ratios much less.
//
// Scenarios (see docs/performance.md for what each one measures and why):
//
//	P1 readings/s acked, WebSocket gateways sending 100-reading batches
//	   vs a bulk loader writing pre-built 5 000-line gzip batches to InfluxDB
//	P2 MQTT messages/s consumed, stored and acked (QoS 1)
//	   vs a bare paho subscriber that counts and acks (its own process)
//	P2d the same consumers draining a backlog queued in the broker for
//	   their offline persistent sessions
//	P3 WebSocket single-reading frames/s acked vs a raw gws counter
//	   (P2, P2d and P3 are judged by CPU per message or frame against the
//	   baseline's own process, the rate ratio is information)
//	P4 dashboard deliveries/s to 1 000 subscribers vs a gws Broadcaster loop
//	P4z the same fan-out with permessage-deflate vs without, in the same run
//	   (deliveries/s, wire bytes and telemetryd CPU per delivery)
//	P4r resume cost: readings/s replayed to a reconnecting dashboard
//	P5 device→dashboard latency at half the P2 rate
//	   vs bare MQTT pub→sub latency plus a gws echo round trip
//	P6 RSS per idle device WebSocket vs a raw gws server
//	P7 CPU per reading decode+normalize+encode (in process)
//	   vs encoding/json into a map + influxdb-client-go write.Point
//	P8 2× overload: RSS bounded, drops counted, latency recovery
//	P9 readings/s acked, HTTP line protocol (/api/v2/write) vs InfluxDB's /write
//	PC cluster mode: three instances (MQTT share group, NATS fan-out) vs
//	   one on the same load: CPU per reading per instance and
//	   cross-instance device→dashboard p99
//
// The harness writes bench/out/results.json (and results.md), a CPU and a
// heap profile of telemetryd per scenario (bench/out/P*.cpu.pprof,
// P*.heap.pprof, with a `go tool pprof -top` summary), and the logs of
// every process. Nothing is asserted about timing except in the table's
// pass/fail column; -smoke runs every scenario for a second or so with tiny
// counts, which CI uses so that the harness cannot rot.
//
// Ownership: the harness owns its children and kills them on exit (also
// through Pdeathsig if it dies). Every client goroutine ends with its
// scenario's context.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

// roleEnv selects what this binary does: empty runs the harness,
// "rawserver" the raw gws baseline server, "baresub" the bare paho
// subscriber (baresub.go); the harness starts both.
const roleEnv = "TELEMETRY_BENCH_ROLE"

// childMain runs the role this process was started for, if any.
func childMain() (code int, ok bool) {
	switch os.Getenv(roleEnv) {
	case "rawserver":
		return rawServerMain(), true
	case "baresub":
		return bareSubMain(), true
	}
	return 0, false
}

func main() {
	if code, ok := childMain(); ok {
		os.Exit(code)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := parseConfig(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	rep, err := run(ctx, cfg, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	if rep.failedToRun() {
		os.Exit(1)
	}
}

var allScenarios = []string{"P1", "P2", "P2d", "P3", "P4", "P4z", "P4r", "P5", "P6", "P7", "P8", "P9", "PC"}

// config is the harness's settings (flags).
type config struct {
	Scenarios   []string
	Duration    time.Duration // each measured phase (service, baseline)
	Overload    time.Duration // P8's overload
	Recovery    time.Duration // P8: longest wait for latency to recover
	Out         string
	Scale       int
	Smoke       bool
	Full        bool
	Profile     bool
	Telemetryd  string
	Influxd     string
	Mosquitto   string
	ServiceArgs []string
	P5Rate      int // readings/s; 0: half the P2 service rate
	P8WSRate    int // frames/s when P3 did not run
	P8MQTTRate  int // messages/s when P2 did not run
	Rounds      int // repeat P1–P5 and P7, report the median
	Verbose     bool
	command     string
}

func parseConfig(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: bench [flags]\n\nRuns telemetryd's performance scenarios P1–P8 against raw baselines\nmeasured in the same run and prints one table (see docs/performance.md).\n\nFlags:")
		fs.PrintDefaults()
	}
	scen := fs.String("scenarios", strings.Join(allScenarios, ","), "comma-separated scenarios to run")
	fs.DurationVar(&c.Duration, "duration", 15*time.Second, "length of each measured phase (the service's and the baseline's)")
	fs.DurationVar(&c.Overload, "overload", 30*time.Second, "P8: how long the 2× overload lasts (-full: 2m)")
	fs.DurationVar(&c.Recovery, "recovery", 0, "P8: longest wait for the latency to recover after the overload (0: max(20s, overload/2))")
	fs.StringVar(&c.Out, "out", "bench/out", "output directory (results.json, results.md, profiles, logs)")
	fs.IntVar(&c.Scale, "scale", 1, "multiply connection counts, publishers, subscribers and MQTT consumer connections (big machines; 10 = 100 000 idle sockets in P6)")
	fs.BoolVar(&c.Smoke, "smoke", false, "seconds-long run with tiny counts (CI): checks that every scenario runs and yields numbers, nothing about speed")
	fs.BoolVar(&c.Full, "full", false, "P8 overload for 2 minutes, as the issue states it")
	fs.BoolVar(&c.Profile, "profile", true, "fetch a CPU and a heap profile of telemetryd for every scenario")
	fs.StringVar(&c.Telemetryd, "telemetryd", "bin/telemetryd", "telemetryd binary")
	fs.StringVar(&c.Influxd, "influxd", "", "influxd 1.8 binary (default: $TELEMETRY_INFLUXD, .tools/bin/influxd, $PATH)")
	fs.StringVar(&c.Mosquitto, "mosquitto", "", "mosquitto binary (default: $TELEMETRY_MOSQUITTO, /usr/sbin/mosquitto, $PATH)")
	svcArgs := fs.String("service-args", "", "extra telemetryd flags, space-separated (e.g. \"-flush-interval 20ms\") to compare settings")
	fs.IntVar(&c.P5Rate, "p5-rate", 0, "P5 readings/s (0: half the P2 service rate, 2000 when P2 did not run)")
	fs.IntVar(&c.P8WSRate, "p8-ws-rate", 0, "P8 WebSocket frames/s (0: twice the P3 service rate, 10000 when P3 did not run)")
	fs.IntVar(&c.P8MQTTRate, "p8-mqtt-rate", 0, "P8 MQTT messages/s (0: twice the P2 service rate, 5000 when P2 did not run)")
	fs.IntVar(&c.Rounds, "rounds", 1, "repeat P1–P5 and P7 (each round measures both sides) and report the round with the median ratio; for before/after comparisons on noisy machines")
	fs.BoolVar(&c.Verbose, "v", false, "log progress details")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	for _, s := range strings.Split(*scen, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		i := slices.IndexFunc(allScenarios, func(id string) bool { return strings.EqualFold(id, s) })
		if i < 0 {
			return c, fmt.Errorf("unknown scenario %q (want %s)", s, strings.Join(allScenarios, ","))
		}
		s = allScenarios[i]
		if !slices.Contains(c.Scenarios, s) {
			c.Scenarios = append(c.Scenarios, s)
		}
	}
	slices.Sort(c.Scenarios)
	if len(c.Scenarios) == 0 {
		return c, errors.New("no scenario selected")
	}
	if c.Scale < 1 {
		return c, errors.New("-scale must be at least 1")
	}
	if c.Rounds < 1 {
		return c, errors.New("-rounds must be at least 1")
	}
	if c.Duration < time.Second && !c.Smoke {
		return c, errors.New("-duration must be at least 1s")
	}
	c.ServiceArgs = strings.Fields(*svcArgs)
	if c.Full {
		c.Overload = 2 * time.Minute
	}
	if c.Smoke {
		if !flagSet(fs, "duration") {
			c.Duration = 1500 * time.Millisecond
		}
		if !flagSet(fs, "overload") {
			c.Overload = 2 * time.Second
		}
		if c.Recovery == 0 {
			c.Recovery = 3 * time.Second
		}
	}
	if c.Recovery == 0 {
		c.Recovery = max(20*time.Second, c.Overload/2)
	}
	c.command = "bench " + strings.Join(args, " ")
	return c, nil
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func (c config) has(id string) bool { return slices.Contains(c.Scenarios, id) }

// sizes are the scenario sizes derived from -scale and -smoke.
type sizes struct {
	P1Gateways, P1Children, P1Batch, P1Window, P1BulkLines int
	P2Publishers, P2Window, P2Lead, P2Consumers            int
	P2Drain                                                int // P2d: messages queued before the consumer connects
	P3Conns, P3Window                                      int
	P4Subscribers, P4Feeders, P4Lead                       int
	P6Conns                                                int
	P8Conns, P8Window, P8Publishers                        int
	P5Probe                                                int // P8's latency probe, readings/s
}

func (c config) sizes() sizes {
	k := c.Scale
	s := sizes{
		P1Gateways: 4 * k, P1Children: 100, P1Batch: 100, P1Window: 64, P1BulkLines: 5000,
		P2Publishers: 4 * k, P2Window: 64, P2Lead: 20000 * k, P2Consumers: k,
		P2Drain: 200000 * k,
		P3Conns: 100 * k, P3Window: 64,
		P4Subscribers: 1000 * k, P4Feeders: k, P4Lead: 16,
		P6Conns: 10000 * k,
		P8Conns: 50 * k, P8Window: 256, P8Publishers: 4 * k,
		P5Probe: 50,
	}
	if c.Smoke {
		s.P1Gateways, s.P1Children, s.P1Window, s.P1BulkLines = 1, 10, 4, 500
		s.P2Publishers, s.P2Lead, s.P2Drain = 1, 2000, 3000
		s.P3Conns, s.P3Window = 2, 8
		s.P4Subscribers = 5
		s.P6Conns = 50
		s.P8Conns, s.P8Publishers = 2, 1
	}
	return s
}

func newLogger(verbose bool) *slog.Logger {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.String("t", a.Value.Time().Format("15:04:05.000"))
		}
		return a
	}}))
}
