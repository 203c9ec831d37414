package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/telemetryd/telemetryd/bridge"
	"github.com/telemetryd/telemetryd/ingest"
	"github.com/telemetryd/telemetryd/ingest/payload"
	"github.com/telemetryd/telemetryd/live"
	"github.com/telemetryd/telemetryd/live/relay"
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
	DrainDelay      time.Duration
	MQTTURL         string
	MQTTTopic       string
	MQTTClientID    string
	MQTTUsername    string
	MQTTPassword    string
	MQTTConnections int
	MQTTFrameBurst  int           // per-device bucket of MQTT messages (ingest/mqttlimits.go)
	AuthMaxFailures int           // authguard: failed authentications per address and minute before a block
	AuthBlock       time.Duration // authguard: how long a blocked address gets 429
	TrustedProxies  string        // authguard: balancers whose X-Forwarded-For names the client
	MQTTShareGroup  string        // cluster_mqtt.go
	InstanceID      string        // stable id of this instance in a cluster (cluster_mqtt.go)
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
	GCPercent       int    // gctuning.go
	Spool           bool
	SpoolMaxBytes   int
	// DeadLetterMaxBytes bounds the dead-letter file (storage/deadletters.go).
	DeadLetterMaxBytes int
	SpoolAfter         time.Duration
	LiveSlowPolicy     string // live.SlowPolicy
	LiveQueueBytes     int
	Sec                securityConfig // identity, TLS, limits
	RegistryURL        string         // registrystore.go: "" SQLite, postgres:// shared
	LiveNATSURL        string         // cluster.go: "" in-process live hub only
	LiveNATSLinger     time.Duration
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
	e.dur(&c.DrainDelay, "drain-delay", "TELEMETRY_DRAIN_DELAY", 5*time.Second, "after SIGTERM, how long /readyz answers 503 while everything still works, before ingest stops (load balancers stop sending first); 0: none")
	e.mqttURL(&c.MQTTURL)
	e.str(&c.MQTTTopic, "mqtt-topic", "TELEMETRY_MQTT_TOPIC", "devices/+/telemetry", "MQTT topic to consume; '+' is the device id")
	e.str(&c.MQTTClientID, "mqtt-client-id", "TELEMETRY_MQTT_CLIENT_ID", "telemetryd", "stable MQTT client id (keeps the persistent session)")
	e.str(&c.MQTTUsername, "mqtt-username", "TELEMETRY_MQTT_USERNAME", "", "MQTT username")
	e.str(&c.MQTTPassword, "mqtt-password", "TELEMETRY_MQTT_PASSWORD", "", "MQTT password")
	e.int(&c.MQTTConnections, "mqtt-connections", "TELEMETRY_MQTT_CONNECTIONS", 1, "MQTT clients in a shared subscription (more throughput, no per-device order)")
	e.int(&c.AuthMaxFailures, "auth-max-failures", "TELEMETRY_AUTH_MAX_FAILURES", 10, "failed authentications (device, viewer or admin token) from one client address within a minute before that address gets 429 with Retry-After; -1: never throttle (behind a proxy every client shares its address)")
	e.str(&c.TrustedProxies, "trusted-proxies", "TELEMETRY_TRUSTED_PROXIES", "", "comma-separated addresses or CIDR prefixes of the load balancers in front of telemetryd (e.g. 127.0.0.1/32): a request from one of them is charged, for -auth-max-failures, to the client its X-Forwarded-For names; empty: the TCP peer")
	e.dur(&c.AuthBlock, "auth-block", "TELEMETRY_AUTH_BLOCK", time.Minute, "how long an address over -auth-max-failures is answered 429")
	e.int(&c.MQTTFrameBurst, "mqtt-device-frame-burst", "TELEMETRY_MQTT_DEVICE_FRAME_BURST", 0, "per-device bucket of MQTT messages above -device-frame-rate; 0: a minute of the rate, so the backlog a persistent session delivers after an outage is not refused (refused MQTT messages are acked and dropped)")
	e.str(&c.MQTTShareGroup, "mqtt-share-group", "TELEMETRY_MQTT_SHARE_GROUP", "", "cluster: every instance with this group consumes its share of $share/<group>/<topic>, each message once, under the client id <mqtt-client-id>-<instance-id>-<n>; empty: a plain subscription (see docs/cluster.md)")
	e.str(&c.InstanceID, "instance-id", "TELEMETRY_INSTANCE_ID", "", "stable id of this instance in a cluster ([A-Za-z0-9._-], at most 64); keep it across restarts, never random. Empty: the host name")
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
	e.int(&c.MaxFrameBytes, "max-frame-bytes", "TELEMETRY_MAX_FRAME_BYTES", ingest.DefaultWSConfig().MaxFrameSize, "largest WebSocket frame or MQTT message from a device")
	e.int(&c.MaxReadings, "max-readings", "TELEMETRY_MAX_READINGS", payload.DefaultLimits().MaxReadings, "most readings in one frame or MQTT message")
	registerSecurityFlags(e, &c.Sec)
	registerLiveFlags(e, &c.Live) // live.go
	e.str(&c.RegistryURL, "registry-url", "TELEMETRY_REGISTRY_URL", "", "postgres://user:password@host:port/db of a device registry shared by several instances (cluster mode, docs/cluster.md); empty: the SQLite file under -data-dir")
	e.str(&c.ConfigFile, "config", "TELEMETRY_CONFIG", "", "optional TOML file of rules: unit conversions, field types, limits (see docs/configuration.md)")
	e.int(&c.GCPercent, "gc-percent", "TELEMETRY_GC_PERCENT", defaultGCPercent, "Go garbage collector target (GOGC): heap growth over the live heap, in percent, before a collection; higher spends memory to save CPU; the GOGC variable, when set, wins")
	e.str(&c.AdminAddr, "admin-addr", "TELEMETRY_ADMIN_ADDR", "", "listen address of the admin server (pprof), e.g. 127.0.0.1:6060; empty: off. Never expose it publicly")
	e.bool(&c.Spool, "spool", "TELEMETRY_SPOOL", true, "buffer batches on disk (under the data dir) while InfluxDB is slow or down, and ack once fsynced there")
	e.int(&c.SpoolMaxBytes, "spool-max-bytes", "TELEMETRY_SPOOL_MAX_BYTES", 1<<30, "disk spool size limit; when full, devices are no longer acknowledged")
	e.int(&c.DeadLetterMaxBytes, "dead-letter-max-bytes", "TELEMETRY_DEAD_LETTER_MAX_BYTES", 64<<20, "dead-letter file size limit; when full, further refused lines are not recorded (counted in telemetryd_dead_letters_dropped_total)")
	e.dur(&c.SpoolAfter, "spool-after", "TELEMETRY_SPOOL_AFTER", 2*time.Second, "a direct InfluxDB write slower than this goes to the spool instead")
	e.str(&c.LiveSlowPolicy, "live-slow-policy", "TELEMETRY_LIVE_SLOW_POLICY", string(live.SlowConflate), `what happens to a dashboard whose queue is full: "conflate" (keep it, merge its backlog to the latest value per series and tell it) or "disconnect" (close with 1013; it reconnects and re-subscribes)`)
	e.int(&c.LiveQueueBytes, "live-queue-bytes", "TELEMETRY_LIVE_QUEUE_BYTES", live.DefaultMaxPendingBytes, "bytes queued for one dashboard (WebSocket or SSE) before -live-slow-policy applies")
	e.str(&c.LiveNATSURL, "live-nats-url", "TELEMETRY_LIVE_NATS_URL", "", "NATS server (with JetStream) joining the live side of several instances: every dashboard sees every instance's readings, snapshots hold the whole fleet; empty: this process only")
	e.dur(&c.LiveNATSLinger, "live-nats-linger", "TELEMETRY_LIVE_NATS_LINGER", relay.DefaultLinger, "how long readings are gathered into one NATS message for the other instances (a delay across instances, for a receive and a hub wake-up per batch there rather than per reading); negative: at once")
	if err := fs.Parse(args); err != nil {
		return c, fs, err
	}
	if len(e.errs) > 0 {
		return c, fs, e.errs[0]
	}
	if fs.NArg() > 0 {
		return c, fs, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if err := c.resolveInstanceID(os.Hostname); err != nil { // cluster_mqtt.go
		return c, fs, err
	}
	if _, err := gzipWrites(c.InfluxGzip, c.InfluxURL); err != nil {
		return c, fs, err
	}
	if !live.SlowPolicy(c.LiveSlowPolicy).Valid() {
		return c, fs, fmt.Errorf(`-live-slow-policy: %q is not "conflate" or "disconnect"`, c.LiveSlowPolicy)
	}
	if _, err := parsePrefixes(c.TrustedProxies); err != nil {
		return c, fs, fmt.Errorf("-trusted-proxies: %w", err)
	}
	if c.GCPercent < 10 {
		return c, fs, fmt.Errorf("-gc-percent: %d is below 10 (the collector cannot be switched off here; GOGC=off can)", c.GCPercent)
	}
	return c, fs, nil
}

// parsePrefixes reads a comma-separated list of addresses (one host each)
// and CIDR prefixes.
func parsePrefixes(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, item := range strings.Split(list, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		if p, err := netip.ParsePrefix(item); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(item)
		if err != nil {
			return nil, fmt.Errorf("%q is neither an address nor a CIDR prefix", item)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
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

// securityConfig is the identity, transport-security and limit settings.
type securityConfig struct {
	AdminToken            string
	RotationGrace         time.Duration
	MaxLabels             int
	TLSCert, TLSKey       string
	MQTTCA, InfluxCA      string
	MosquittoPasswordFile string
	MosquittoACLFile      string
	MosquittoPIDFile      string
	MaxConnsPerDevice     int
	MaxConns              int
	FrameRate             int
	FrameBurst            int
	RateLimitClose        int
	ReadHeaderTimeout     time.Duration
	WSPingInterval        time.Duration
}

func registerSecurityFlags(e *envFlags, c *securityConfig) {
	e.str(&c.AdminToken, "admin-token", "TELEMETRY_ADMIN_TOKEN", "", "operator token for /api/v1 (devices, viewers) and an unrestricted viewer; empty disables the admin API. At least 16 characters")
	e.dur(&c.RotationGrace, "token-rotation-grace", "TELEMETRY_TOKEN_ROTATION_GRACE", time.Hour, "how long a rotated device token keeps working when the rotation names no grace")
	e.int(&c.MaxLabels, "max-labels", "TELEMETRY_MAX_LABELS", 16, "most labels per device (and pairs per viewer scope)")
	e.str(&c.TLSCert, "tls-cert", "TELEMETRY_TLS_CERT", "", "PEM certificate (chain) for HTTPS/wss on -http-addr; with -tls-key")
	e.str(&c.TLSKey, "tls-key", "TELEMETRY_TLS_KEY", "", "PEM private key for -tls-cert")
	e.str(&c.MQTTCA, "mqtt-ca", "TELEMETRY_MQTT_CA", "", "PEM CA bundle trusted for ssl:// broker URLs (default: system roots)")
	e.str(&c.InfluxCA, "influx-ca", "TELEMETRY_INFLUX_CA", "", "PEM CA bundle trusted for https:// InfluxDB URLs (default: system roots)")
	e.str(&c.MosquittoPasswordFile, "mosquitto-password-file", "TELEMETRY_MOSQUITTO_PASSWORD_FILE", "", "rewrite this Mosquitto password_file from the registry at start and on every change (with -mosquitto-acl-file)")
	e.str(&c.MosquittoACLFile, "mosquitto-acl-file", "TELEMETRY_MOSQUITTO_ACL_FILE", "", "rewrite this Mosquitto acl_file from the registry at start and on every change")
	e.str(&c.MosquittoPIDFile, "mosquitto-pid-file", "TELEMETRY_MOSQUITTO_PID_FILE", "", "send SIGHUP to the pid in this file after rewriting the Mosquitto files (reload)")
	e.int(&c.MaxConnsPerDevice, "max-conns-per-device", "TELEMETRY_MAX_CONNS_PER_DEVICE", ingest.DefaultWSConfig().MaxConnsPerDevice, "simultaneous WebSockets per device; more get HTTP 429 too_many_connections")
	e.int(&c.MaxConns, "max-conns", "TELEMETRY_MAX_CONNS", ingest.DefaultWSConfig().MaxConns, "simultaneous device WebSockets in total; more get HTTP 503 server_busy")
	e.int(&c.FrameRate, "device-frame-rate", "TELEMETRY_DEVICE_FRAME_RATE", int(ingest.DefaultWSConfig().FrameRate), "frames per second per device over WebSocket and MQTT (token bucket); excess gets rate_limited (MQTT: acked and dropped); -1: unlimited")
	e.int(&c.FrameBurst, "device-frame-burst", "TELEMETRY_DEVICE_FRAME_BURST", ingest.DefaultWSConfig().FrameBurst, "frame bucket size per device (burst above -device-frame-rate)")
	e.int(&c.RateLimitClose, "rate-limit-close", "TELEMETRY_RATE_LIMIT_CLOSE", ingest.DefaultWSConfig().RateLimitClose, "consecutive rate_limited frames after which the socket is closed with 1013")
	e.dur(&c.ReadHeaderTimeout, "read-header-timeout", "TELEMETRY_READ_HEADER_TIMEOUT", 10*time.Second, "longest time to receive a request's headers (WebSocket handshake included): slow-loris bound")
	e.dur(&c.WSPingInterval, "ws-ping-interval", "TELEMETRY_WS_PING_INTERVAL", ingest.DefaultWSConfig().PingInterval, "server ping interval on device WebSockets; a socket silent for two intervals is closed")
}

// check refuses settings that would otherwise fail late: at the first
// admin request, the first registry change, the first TLS handshake or
// the first broker connection.
func (sec securityConfig) check() error {
	if sec.AdminToken != "" && len(sec.AdminToken) < 16 {
		return errors.New("the admin token (TELEMETRY_ADMIN_TOKEN) must have at least 16 characters")
	}
	if (sec.MosquittoPasswordFile == "") != (sec.MosquittoACLFile == "") {
		return errors.New("set both -mosquitto-password-file and -mosquitto-acl-file, or neither")
	}
	if err := checkTLSFiles(sec.TLSCert, sec.TLSKey); err != nil {
		return err
	}
	if _, err := mqttTLS(sec); err != nil {
		return err
	}
	return nil
}
