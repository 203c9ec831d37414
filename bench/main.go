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

// scenarioIDs lists every scenario, in run order (run.go's scenarios).
func scenarioIDs() []string {
	var ids []string
	for _, sc := range scenarios() {
		ids = append(ids, sc.id)
	}
	return ids
}

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
	allScenarios := scenarioIDs()
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
