package main

import (
	"flag"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/telemetryd/telemetryd/bridge"
	"github.com/telemetryd/telemetryd/ingest"
	"github.com/telemetryd/telemetryd/ingest/payload"
)

// config is everything telemetryd reads from flags and the environment.
// Every flag's default comes from its TELEMETRY_* variable, so the same
// settings work from a shell, a unit file or docker-compose.
type config struct {
	HTTPAddr        string
	AllowedOrigins  string
	DataDir         string
	DeviceTokens    string
	LogFormat       string
	LogLevel        string
	ShutdownGrace   time.Duration
	MQTTURL         string
	MQTTTopic       string
	MQTTClientID    string
	MQTTUsername    string
	MQTTPassword    string
	MQTTConnections int
	InfluxURL       string
	InfluxToken     string
	InfluxOrg       string
	InfluxBucket    string
	InfluxTimeout   time.Duration
	InfluxGzip      string // auto, true or false; see gzipWrites
	BatchLines      int
	InfluxWriters   int
	FlushInterval   time.Duration
	QueueFrames     int
	Live            liveConfig // live.go
	MaxClockSkew    time.Duration
	MaxFrameBytes   int
	MaxReadings     int
	ConfigFile      string // optional TOML rules file (configfile.go)
	AdminAddr       string // opt-in pprof listener (admin.go)
	Spool           bool
	SpoolMaxBytes   int
	SpoolAfter      time.Duration
	Sec             securityConfig // registry.go: identity, TLS, limits
}

// envFlags registers flags whose defaults come from environment variables
// and remembers each flag's variable for the help text.
type envFlags struct {
	fs     *flag.FlagSet
	lookup func(string) (string, bool)
	errs   []error
}

func (e *envFlags) getenv(k string) string {
	v, _ := e.lookup(k)
	return v
}

func (e *envFlags) usage(env, text string) string { return text + " (env " + env + ")" }

func (e *envFlags) str(p *string, name, env, def, text string) {
	if v := e.getenv(env); v != "" {
		def = v
	}
	e.fs.StringVar(p, name, def, e.usage(env, text))
}

func (e *envFlags) dur(p *time.Duration, name, env string, def time.Duration, text string) {
	if v := e.getenv(env); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			e.errs = append(e.errs, fmt.Errorf("%s: %w", env, err))
		} else {
			def = d
		}
	}
	e.fs.DurationVar(p, name, def, e.usage(env, text))
}

func (e *envFlags) int(p *int, name, env string, def int, text string) {
	if v := e.getenv(env); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			e.errs = append(e.errs, fmt.Errorf("%s: %w", env, err))
		} else {
			def = n
		}
	}
	e.fs.IntVar(p, name, def, e.usage(env, text))
}

func (e *envFlags) bool(p *bool, name, env string, def bool, text string) {
	if v := e.getenv(env); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			e.errs = append(e.errs, fmt.Errorf("%s: %w", env, err))
		} else {
			def = b
		}
	}
	e.fs.BoolVar(p, name, def, e.usage(env, text))
}

// parseConfig parses args with defaults from lookupEnv (os.LookupEnv in main).
func parseConfig(args []string, lookupEnv func(string) (string, bool), stderr io.Writer) (config, error) {
	c, _, err := parseFlags(args, lookupEnv, stderr)
	return c, err
}

// parseFlags is parseConfig that also returns the FlagSet, whose flags
// `telemetryd config-reference` documents (configref.go).
func parseFlags(args []string, lookupEnv func(string) (string, bool), stderr io.Writer) (config, *flag.FlagSet, error) {
	var c config
	fs := flag.NewFlagSet("telemetryd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: telemetryd [flags]\n\nIngests device telemetry over WebSocket and MQTT, stores it in InfluxDB\nand rebroadcasts it live to dashboards. Every flag defaults to its\nenvironment variable.\n\nFlags:")
		fs.PrintDefaults()
	}
	e := &envFlags{fs: fs, lookup: lookupEnv}
	e.str(&c.HTTPAddr, "http-addr", "TELEMETRY_HTTP_ADDR", ":8080", "HTTP listen address for /v1/ingest, /v1/live, /healthz, /readyz")
	e.str(&c.AllowedOrigins, "allowed-origins", "TELEMETRY_ALLOWED_ORIGINS", "", "comma-separated Origins allowed to open WebSockets (besides same-origin and clients that send none); * allows all")
	e.str(&c.DataDir, "data-dir", "TELEMETRY_DATA_DIR", "./data", "directory for local state")
	e.str(&c.DeviceTokens, "device-tokens", "TELEMETRY_DEVICE_TOKENS", "", `optional file of "<device-id> <token>" lines authenticating devices besides the registry (development)`)
	e.str(&c.LogFormat, "log-format", "TELEMETRY_LOG_FORMAT", "json", "log format: json or text")
	e.str(&c.LogLevel, "log-level", "TELEMETRY_LOG_LEVEL", "info", "log level: debug, info, warn, error")
	e.dur(&c.ShutdownGrace, "shutdown-grace", "TELEMETRY_SHUTDOWN_GRACE", 25*time.Second, "longest graceful shutdown after SIGTERM")
	e.mqttURL(&c.MQTTURL)
	e.str(&c.MQTTTopic, "mqtt-topic", "TELEMETRY_MQTT_TOPIC", "devices/+/telemetry", "MQTT topic to consume; '+' is the device id")
	e.str(&c.MQTTClientID, "mqtt-client-id", "TELEMETRY_MQTT_CLIENT_ID", "telemetryd", "stable MQTT client id (keeps the persistent session)")
	e.str(&c.MQTTUsername, "mqtt-username", "TELEMETRY_MQTT_USERNAME", "", "MQTT username")
	e.str(&c.MQTTPassword, "mqtt-password", "TELEMETRY_MQTT_PASSWORD", "", "MQTT password")
	e.int(&c.MQTTConnections, "mqtt-connections", "TELEMETRY_MQTT_CONNECTIONS", 1, "MQTT clients in a shared subscription (more throughput, no per-device order)")
	e.str(&c.InfluxURL, "influx-url", "TELEMETRY_INFLUX_URL", "http://127.0.0.1:8086", "InfluxDB URL")
	e.str(&c.InfluxToken, "influx-token", "TELEMETRY_INFLUX_TOKEN", "", `InfluxDB token ("user:password" or empty on 1.8)`)
	e.str(&c.InfluxOrg, "influx-org", "TELEMETRY_INFLUX_ORG", "", `InfluxDB organization ("" on 1.8)`)
	e.str(&c.InfluxBucket, "influx-bucket", "TELEMETRY_INFLUX_BUCKET", "telemetry/autogen", `InfluxDB bucket ("database/retention-policy" on 1.8)`)
	e.dur(&c.InfluxTimeout, "influx-timeout", "TELEMETRY_INFLUX_TIMEOUT", 10*time.Second, "timeout of one InfluxDB request")
	e.str(&c.InfluxGzip, "influx-gzip", "TELEMETRY_INFLUX_GZIP", "auto", `gzip write requests: "true", "false", or "auto": unless InfluxDB is on a loopback address, where compressing only costs CPU on both ends`)
	e.int(&c.BatchLines, "batch-lines", "TELEMETRY_BATCH_LINES", bridge.DefaultConfig().MaxBatchLines, "most readings per InfluxDB write")
	e.int(&c.InfluxWriters, "influx-writers", "TELEMETRY_INFLUX_WRITERS", bridge.DefaultConfig().Writers, "batches written to InfluxDB at once (acks still follow arrival order)")
	e.dur(&c.FlushInterval, "flush-interval", "TELEMETRY_FLUSH_INTERVAL", bridge.DefaultConfig().FlushInterval, "how long a batch's first reading waits for more before a free writer takes it; while all writers are busy, batches grow up to -batch-lines")
	e.int(&c.QueueFrames, "queue-frames", "TELEMETRY_QUEUE_FRAMES", bridge.DefaultConfig().QueueFrames, "frames waiting for storage before devices are slowed down")
	e.dur(&c.MaxClockSkew, "max-clock-skew", "TELEMETRY_MAX_CLOCK_SKEW", bridge.DefaultLimits().MaxClockSkew, "how far in the future a device timestamp may be")
	e.int(&c.MaxFrameBytes, "max-frame-bytes", "TELEMETRY_MAX_FRAME_BYTES", ingest.DefaultWSConfig().MaxFrameSize, "largest WebSocket frame from a device")
	e.int(&c.MaxReadings, "max-readings", "TELEMETRY_MAX_READINGS", payload.DefaultLimits().MaxReadings, "most readings in one frame or MQTT message")
	registerSecurityFlags(e, &c.Sec)
	registerLiveFlags(e, &c.Live) // live.go
	e.str(&c.ConfigFile, "config", "TELEMETRY_CONFIG", "", "optional TOML file of rules: unit conversions, field types, limits (see docs/configuration.md)")
	e.str(&c.AdminAddr, "admin-addr", "TELEMETRY_ADMIN_ADDR", "", "listen address of the admin server (pprof), e.g. 127.0.0.1:6060; empty: off. Never expose it publicly")
	e.bool(&c.Spool, "spool", "TELEMETRY_SPOOL", true, "buffer batches on disk (under the data dir) while InfluxDB is slow or down, and ack once fsynced there")
	e.int(&c.SpoolMaxBytes, "spool-max-bytes", "TELEMETRY_SPOOL_MAX_BYTES", 1<<30, "disk spool size limit; when full, devices are no longer acknowledged")
	e.dur(&c.SpoolAfter, "spool-after", "TELEMETRY_SPOOL_AFTER", 2*time.Second, "a direct InfluxDB write slower than this goes to the spool instead")
	if err := fs.Parse(args); err != nil {
		return c, fs, err
	}
	if len(e.errs) > 0 {
		return c, fs, e.errs[0]
	}
	if fs.NArg() > 0 {
		return c, fs, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if _, err := gzipWrites(c.InfluxGzip, c.InfluxURL); err != nil {
		return c, fs, err
	}
	return c, fs, nil
}

// gzipWrites decides -influx-gzip for an InfluxDB URL. Compression trades
// CPU on both ends (ours to compress, InfluxDB's to inflate) for bandwidth;
// over loopback bandwidth is free, so "auto" compresses only when InfluxDB
// is elsewhere.
func gzipWrites(mode, influxURL string) (bool, error) {
	switch strings.ToLower(mode) {
	case "true", "on", "1":
		return true, nil
	case "false", "off", "0":
		return false, nil
	case "auto", "":
		u, err := url.Parse(influxURL)
		if err != nil {
			return true, nil // the InfluxDB client reports the bad URL
		}
		host := u.Hostname()
		if host == "localhost" {
			return false, nil
		}
		ip, err := netip.ParseAddr(host)
		return err != nil || !ip.IsLoopback(), nil
	}
	return false, fmt.Errorf(`-influx-gzip: %q is not "auto", "true" or "false"`, mode)
}

// mqttURL registers -mqtt-url. Its variable set to the empty string
// disables MQTT, so "unset" and "empty" differ here.
func (e *envFlags) mqttURL(p *string) {
	def := "tcp://127.0.0.1:1883"
	if v, ok := e.lookup("TELEMETRY_MQTT_URL"); ok {
		def = v
	}
	e.fs.StringVar(p, "mqtt-url", def, e.usage("TELEMETRY_MQTT_URL", "MQTT broker URL; empty disables MQTT"))
}

// mustGzip is gzipWrites for a config that parseConfig accepted.
func mustGzip(c config) bool {
	gz, _ := gzipWrites(c.InfluxGzip, c.InfluxURL)
	return gz
}
