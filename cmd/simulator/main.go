package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/telemetryd/telemetryd/simulator"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// The first signal stops the load (the run still drains and
		// reports); a second one kills at once.
		<-ctx.Done()
		stop()
	}()
	os.Exit(run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr))
}

type options struct {
	cfg       simulator.Config
	faults    string
	burst     string
	transport string
	report    string
	logLevel  string
	quiet     bool
	provOnly  bool
	rates     [7]float64
}

// faultFlags are the per-fault rate flags, in simulator.FaultKind order.
var faultFlags = []struct{ name, text string }{
	{"fault-malformed", "rate of frames sent as truncated JSON"},
	{"fault-invalid", "rate of frames with one reading holding an invalid value (NaN, wrong type, out of range)"},
	{"fault-skew", "rate of frames with one reading dated -skew in the future"},
	{"fault-duplicate", "rate of frames sent twice"},
	{"fault-oversize", "rate of frames followed by one larger than -max-frame-bytes (WebSocket only)"},
	{"fault-disconnect", "rate of frames after which the connection is cut without a goodbye"},
	{"fault-wrong-token", "rate of frames after which the device also tries to connect with a wrong token"},
}

func parse(args []string, lookupEnv func(string) (string, bool), stderr io.Writer) (*options, error) {
	o := &options{}
	c := &o.cfg
	fs := flag.NewFlagSet("simulator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: simulator [flags]

Simulates a device fleet against telemetryd and, with -verify, checks that
nothing acknowledged is lost. Examples:

  simulator -devices 500 -rate 2 -transport mixed -duration 60s -profile environment -verify
  simulator -transport gateway -devices 200 -children-per-gateway 20 -batch 5 -duration 30s -verify
  simulator -devices 50 -duration 30s -faults all=0.01 -verify -report report.json

Flags (those naming a TELEMETRY_* variable default to it):
`)
		fs.PrintDefaults()
	}
	env := func(k, def string) string {
		if v, ok := lookupEnv(k); ok && v != "" {
			return v
		}
		return def
	}
	envInt := func(k string, def int) int {
		if n, err := strconv.Atoi(env(k, "")); err == nil {
			return n
		}
		return def
	}
	urls := &urlList{}
	_ = urls.Set(env("TELEMETRY_URL", "http://127.0.0.1:8080"))
	urls.set = false // the first -url replaces the default
	fs.Var(urls, "url", "telemetryd base URL; several instances as a,b,c or repeated -url: devices are spread among them and fail over to the next, -verify watches each (env TELEMETRY_URL)")
	fs.StringVar(&c.AdminToken, "admin-token", env("TELEMETRY_ADMIN_TOKEN", ""), "admin token for provisioning (env TELEMETRY_ADMIN_TOKEN)")
	fs.StringVar(&c.LiveToken, "live-token", env("TELEMETRY_VIEWER_TOKEN", ""), "token for the verifying dashboard; default the admin token (env TELEMETRY_VIEWER_TOKEN)")
	fs.StringVar(&c.MQTTURL, "mqtt-url", env("TELEMETRY_MQTT_URL", "tcp://127.0.0.1:1883"), "MQTT broker URL (env TELEMETRY_MQTT_URL)")
	fs.StringVar(&c.MQTTTopic, "mqtt-topic", env("TELEMETRY_MQTT_TOPIC", "devices/+/telemetry"), "device topic, '+' is the device id (env TELEMETRY_MQTT_TOPIC)")
	fs.StringVar(&c.InfluxURL, "influx-url", env("TELEMETRY_INFLUX_URL", "http://127.0.0.1:8086"), "InfluxDB URL for -verify (env TELEMETRY_INFLUX_URL)")
	fs.StringVar(&c.InfluxBucket, "influx-bucket", env("TELEMETRY_INFLUX_BUCKET", "telemetry/autogen"), `InfluxDB bucket, "database/retention-policy" on 1.8 (env TELEMETRY_INFLUX_BUCKET)`)
	fs.StringVar(&c.InfluxToken, "influx-token", env("TELEMETRY_INFLUX_TOKEN", ""), `InfluxDB token, "user:password" on 1.8 (env TELEMETRY_INFLUX_TOKEN)`)
	fs.IntVar(&c.MaxFrameBytes, "max-frame-bytes", envInt("TELEMETRY_MAX_FRAME_BYTES", 256<<10), "the service's WebSocket frame limit, for -fault-oversize (env TELEMETRY_MAX_FRAME_BYTES)")

	fs.IntVar(&c.Devices, "devices", 10, "devices connected on their own (with -transport gateway: devices behind gateways)")
	fs.IntVar(&c.Gateways, "gateways", 0, "gateways reporting for -children-per-gateway devices each (gateway mode default: devices/children)")
	fs.IntVar(&c.ChildrenPerGateway, "children-per-gateway", 10, "devices behind each gateway")
	fs.StringVar(&o.transport, "transport", "ws", "ws, mqtt, http (POST /v1/ingest per frame), mixed (connections alternate) or gateway (devices behind WebSocket gateways)")
	fs.StringVar((*string)(&c.Format), "format", "json", "payload encoding: json, senml, cbor, senml-cbor (CBOR: WebSocket binary frames) or lp (line protocol; -transport http or mqtt)")
	fs.StringVar(&c.Profile, "profile", "environment", "signals: environment, vehicle, power, status or mixed")
	fs.Float64Var(&c.Rate, "rate", 1, "readings per second per device")
	fs.Float64Var(&c.Jitter, "jitter", 0.2, "spread of each interval, ± this fraction")
	fs.IntVar(&c.Batch, "batch", 1, "readings per frame (per child for gateways)")
	fs.StringVar(&o.burst, "burst", "", "SIZE/EVERY: every device sends SIZE extra readings at once every EVERY, e.g. 20/10s")
	fs.DurationVar(&c.Duration, "duration", 30*time.Second, "how long to generate load; 0 runs until interrupted")
	fs.IntVar(&c.ReadingsPerDevice, "readings-per-device", 0, "stop each device after this many readings (0: no limit)")
	fs.Uint64Var(&c.Seed, "seed", 1, "seed for signals and fault decisions")
	fs.StringVar(&c.RunID, "run-id", "", "run id stored in tag sim_run (default: time-based)")
	fs.StringVar(&c.Fleet, "fleet", "sim", "fleet name: device name prefix and label sim_fleet")
	fs.StringVar(&c.CredsFile, "creds", "", "credentials file to reuse and update (0600 JSON); empty: a fresh fleet every run")

	fs.StringVar(&o.faults, "faults", "", "fault rates as name=rate,…: malformed, invalid, skew, duplicate, oversize, disconnect, wrong_token, or all")
	for i, f := range faultFlags {
		fs.Float64Var(&o.rates[i], f.name, 0, f.text)
	}
	fs.DurationVar(&c.SkewBy, "skew", time.Hour, "how far in the future -fault-skew dates a reading")

	fs.IntVar(&c.BufferFrames, "buffer", 1000, "unacknowledged frames a device keeps; beyond it, it skips readings")
	fs.DurationVar(&c.BackoffMin, "backoff-min", 100*time.Millisecond, "first reconnect delay")
	fs.DurationVar(&c.BackoffMax, "backoff-max", 10*time.Second, "longest reconnect delay")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", 30*time.Second, "wait for outstanding acks after generation stops")
	fs.BoolVar(&c.Verify, "verify", false, "watch the dashboard and reconcile with InfluxDB; exit 1 on any loss")
	fs.DurationVar(&c.VerifyTimeout, "verify-timeout", 30*time.Second, "wait for storage and dashboard to catch up")
	fs.IntVar(&c.MaxListed, "max-listed", 1000, "losses listed per kind in the report")
	fs.StringVar(&o.report, "report", "", "write the report as JSON to this file")
	fs.StringVar(&o.logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress output")
	fs.BoolVar(&o.provOnly, "provision-only", false, "provision the fleet into -creds and exit (no load)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	c.ServiceURLs = urls.urls
	if len(urls.urls) > 0 {
		c.ServiceURL = urls.urls[0] // provisioning
	}
	c.Transport = simulator.Transport(o.transport)
	var err error
	if c.Burst, err = simulator.ParseBurst(o.burst); err != nil {
		return nil, err
	}
	if c.Faults, err = simulator.ParseFaults(o.faults); err != nil {
		return nil, err
	}
	// A per-fault flag set explicitly wins over -faults.
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for i, f := range faultFlags {
		if set[f.name] {
			name := strings.ReplaceAll(strings.TrimPrefix(f.name, "fault-"), "-", "_")
			one, err := simulator.ParseFaults(name + "=" + strconv.FormatFloat(o.rates[i], 'g', -1, 64))
			if err != nil {
				return nil, err
			}
			c.Faults = mergeFaults(c.Faults, one)
		}
	}
	return o, nil
}

// urlList is -url: comma-separated, repeatable; the first value given
// replaces the default.
type urlList struct {
	urls []string
	set  bool
}

func (l *urlList) String() string { return strings.Join(l.urls, ",") }

func (l *urlList) Set(v string) error {
	if !l.set {
		l.urls, l.set = nil, true
	}
	for _, u := range strings.Split(v, ",") {
		if u = strings.TrimSpace(u); u != "" {
			l.urls = append(l.urls, u)
		}
	}
	return nil
}

// mergeFaults returns a with every non-zero rate of b.
func mergeFaults(a, b simulator.Faults) simulator.Faults {
	pick := func(x, y float64) float64 {
		if y != 0 {
			return y
		}
		return x
	}
	return simulator.Faults{
		Malformed: pick(a.Malformed, b.Malformed), Invalid: pick(a.Invalid, b.Invalid), Skew: pick(a.Skew, b.Skew),
		Duplicate: pick(a.Duplicate, b.Duplicate), Oversize: pick(a.Oversize, b.Oversize),
		Disconnect: pick(a.Disconnect, b.Disconnect), WrongToken: pick(a.WrongToken, b.WrongToken),
	}
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func run(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) int {
	o, err := parse(args, lookupEnv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "simulator:", err)
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		fmt.Fprintln(stderr, "simulator: log level:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if !o.quiet {
		o.cfg.Progress = stderr
		if f, ok := stderr.(*os.File); ok {
			o.cfg.ProgressTTY = isTerminal(f)
		}
	}
	if o.provOnly {
		if err := simulator.Provision(ctx, o.cfg, log); err != nil {
			fmt.Fprintln(stderr, err)
			return 2
		}
		fmt.Fprintln(stdout, "fleet provisioned in", o.cfg.CredsFile)
		return 0
	}
	rep, err := simulator.Run(ctx, o.cfg, log)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	rep.WriteText(stdout)
	if o.report != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err == nil {
			err = os.WriteFile(o.report, append(b, '\n'), 0o644)
		}
		if err != nil {
			fmt.Fprintln(stderr, "simulator: report:", err)
			return 2
		}
	}
	if !rep.OK {
		return 1
	}
	return 0
}
