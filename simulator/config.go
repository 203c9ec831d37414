package simulator

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Transport says how the simulated fleet connects.
type Transport string

const (
	// TransportWS: every device and gateway on the WebSocket /v1/ingest.
	TransportWS Transport = "ws"
	// TransportMQTT: every device and gateway publishes QoS 1 to the broker.
	TransportMQTT Transport = "mqtt"
	// TransportHTTP: every device and gateway POSTs each frame to
	// /v1/ingest and takes the answer as its ack.
	TransportHTTP Transport = "http"
	// TransportMixed: connections alternate between WebSocket and MQTT.
	TransportMixed Transport = "mixed"
	// TransportGateway: the devices sit behind WebSocket gateways that
	// report for them in batches; no device connects on its own.
	TransportGateway Transport = "gateway"
)

// Profiles of simulated signals.
const (
	ProfileEnvironment = "environment"
	ProfileVehicle     = "vehicle"
	ProfilePower       = "power"
	ProfileStatus      = "status"
	ProfileMixed       = "mixed"
)

var profiles = []string{ProfileEnvironment, ProfileVehicle, ProfilePower, ProfileStatus}

// Faults are injection rates: the probability that one frame carries that
// fault. At most one fault is drawn per frame, so the rates must add up to
// at most 1. See the package documentation for what each fault does and
// which server answer it expects.
type Faults struct {
	Malformed  float64 `json:"malformed,omitempty"`
	Invalid    float64 `json:"invalid,omitempty"`
	Skew       float64 `json:"skew,omitempty"`
	Duplicate  float64 `json:"duplicate,omitempty"`
	Oversize   float64 `json:"oversize,omitempty"`
	Disconnect float64 `json:"disconnect,omitempty"`
	WrongToken float64 `json:"wrong_token,omitempty"`
}

// FaultKind names one kind of injected fault.
type FaultKind uint8

const (
	FaultNone FaultKind = iota
	FaultMalformed
	FaultInvalid
	FaultSkew
	FaultDuplicate
	FaultOversize
	FaultDisconnect
	FaultWrongToken
	numFaults
)

var faultNames = [numFaults]string{"none", "malformed", "invalid", "skew", "duplicate", "oversize", "disconnect", "wrong_token"}

func (k FaultKind) String() string {
	if k < numFaults {
		return faultNames[k]
	}
	return "fault(" + strconv.Itoa(int(k)) + ")"
}

func (f *Faults) rate(k FaultKind) float64 {
	switch k {
	case FaultMalformed:
		return f.Malformed
	case FaultInvalid:
		return f.Invalid
	case FaultSkew:
		return f.Skew
	case FaultDuplicate:
		return f.Duplicate
	case FaultOversize:
		return f.Oversize
	case FaultDisconnect:
		return f.Disconnect
	case FaultWrongToken:
		return f.WrongToken
	}
	return 0
}

func (f *Faults) ptr(k FaultKind) *float64 {
	switch k {
	case FaultMalformed:
		return &f.Malformed
	case FaultInvalid:
		return &f.Invalid
	case FaultSkew:
		return &f.Skew
	case FaultDuplicate:
		return &f.Duplicate
	case FaultOversize:
		return &f.Oversize
	case FaultDisconnect:
		return &f.Disconnect
	case FaultWrongToken:
		return &f.WrongToken
	}
	return nil
}

// Any reports whether any fault has a non-zero rate.
func (f Faults) Any() bool {
	for k := FaultMalformed; k < numFaults; k++ {
		if f.rate(k) > 0 {
			return true
		}
	}
	return false
}

// ParseFaults parses "malformed=0.01,invalid=0.02,…" (the -faults flag).
// Names are those of FaultKind.String; "all=R" sets every rate to R.
func ParseFaults(s string) (Faults, error) {
	var f Faults
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, val, ok := strings.Cut(part, "=")
		if !ok {
			return f, fmt.Errorf("fault %q: want name=rate", part)
		}
		r, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil || r < 0 || r > 1 || math.IsNaN(r) {
			return f, fmt.Errorf("fault %q: rate must be a number from 0 to 1", part)
		}
		name = strings.ReplaceAll(strings.TrimSpace(name), "-", "_")
		if name == "all" {
			for k := FaultMalformed; k < numFaults; k++ {
				*f.ptr(k) = r
			}
			continue
		}
		i := slices.Index(faultNames[:], name)
		if i <= int(FaultNone) {
			return f, fmt.Errorf("unknown fault %q (want one of %s)", name, strings.Join(faultNames[1:], ", "))
		}
		*f.ptr(FaultKind(i)) = r
	}
	return f, nil
}

// String formats f as ParseFaults reads it.
func (f Faults) String() string {
	var parts []string
	for k := FaultMalformed; k < numFaults; k++ {
		if r := f.rate(k); r > 0 {
			parts = append(parts, k.String()+"="+strconv.FormatFloat(r, 'g', -1, 64))
		}
	}
	return strings.Join(parts, ",")
}

// Burst makes every device send Size extra readings at once, all devices at
// the same moment, every Every. The zero value means no bursts.
type Burst struct {
	Size  int
	Every time.Duration
}

// ParseBurst parses "SIZE/EVERY", e.g. "20/10s".
func ParseBurst(s string) (Burst, error) {
	if s == "" {
		return Burst{}, nil
	}
	n, d, ok := strings.Cut(s, "/")
	if !ok {
		return Burst{}, fmt.Errorf("burst %q: want SIZE/EVERY, e.g. 20/10s", s)
	}
	size, err := strconv.Atoi(n)
	if err != nil || size < 0 {
		return Burst{}, fmt.Errorf("burst %q: size must be a non-negative integer", s)
	}
	every, err := time.ParseDuration(d)
	if err != nil || every <= 0 {
		return Burst{}, fmt.Errorf("burst %q: interval must be a positive duration", s)
	}
	return Burst{Size: size, Every: every}, nil
}

func (b Burst) String() string {
	if b.Size == 0 || b.Every == 0 {
		return ""
	}
	return strconv.Itoa(b.Size) + "/" + b.Every.String()
}

// Config is one simulation. The zero value of a field means its default
// (see withDefaults); Run validates the rest.
type Config struct {
	// ServiceURL is telemetryd's base URL (http://127.0.0.1:8080): the admin
	// API, /v1/ingest and /v1/live hang off it.
	ServiceURL string
	// ServiceURLs, when set, are several instances of one cluster (admin
	// API and all): connection i starts on ServiceURLs[i mod n], and one
	// whose connection fails (a refused dial, a lost socket) moves to the
	// next URL; with Verify a dashboard watches /v1/live on each. ServiceURL
	// (provisioning) defaults to the first.
	ServiceURLs []string
	// AdminToken provisions the fleet through the admin API. It may be
	// empty when CredsFile already holds every device the run needs.
	AdminToken string
	// LiveToken authenticates the verifying dashboard (default AdminToken).
	LiveToken string
	// MQTTURL is the broker (tcp://127.0.0.1:1883).
	MQTTURL string
	// MQTTTopic is the service's device topic; '+' stands for the device
	// id (default "devices/+/telemetry").
	MQTTTopic string
	// InfluxURL, InfluxBucket ("database/retention-policy") and InfluxToken
	// ("user:password" or empty) locate the stored readings for -verify.
	InfluxURL, InfluxBucket, InfluxToken string

	// Devices connected on their own (in gateway mode: devices behind gateways).
	Devices int
	// Gateways that report for ChildrenPerGateway devices each, in batches.
	Gateways, ChildrenPerGateway int
	Transport                    Transport
	// Format is the payload encoding: json (default), senml, cbor,
	// senml-cbor (CBOR ones in binary frames on WebSocket) or lp (line
	// protocol; HTTP or MQTT only). See formats.go.
	Format Format
	// Profile of the signals: environment, vehicle, power, status or mixed.
	Profile string
	// Fleet prefixes device names and labels them (sim_fleet=Fleet), so
	// that several fleets can share one service (default "sim").
	Fleet string
	// CredsFile caches the fleet's credentials between runs (0600 JSON).
	// Empty: provision a fresh fleet every run.
	CredsFile string

	// Rate is readings per second per device (default 1).
	Rate float64
	// Jitter spreads each interval by ±Jitter of itself (0 to 1; the CLI
	// defaults to 0.2).
	Jitter float64
	// Batch is readings per frame (per child, for gateways; default 1).
	Batch int
	Burst Burst
	// Duration of load generation; 0 runs until ctx is done.
	Duration time.Duration
	// ReadingsPerDevice stops each device after that many readings
	// (0: no limit). With a fixed count and seed, the faults injected are
	// reproducible.
	ReadingsPerDevice int
	// Seed makes signals and fault decisions reproducible (default 1).
	Seed uint64
	// RunID tags every reading (tag sim_run) so the run can be found in
	// storage; default: a fresh id per run.
	RunID string

	Faults Faults
	// SkewBy is how far in the future a skewed reading is dated (default 1h;
	// the service refuses more than its -max-clock-skew, 5m by default).
	SkewBy time.Duration
	// MaxFrameBytes is the service's frame limit (default 256 KiB); an
	// oversized fault frame exceeds it.
	MaxFrameBytes int

	// BufferFrames bounds unacknowledged frames per device (default 1000).
	// A device whose buffer is full skips readings (counted) until acks free it.
	BufferFrames int
	// BackoffMin and BackoffMax bound reconnect delays (default 100ms, 10s).
	BackoffMin, BackoffMax time.Duration
	// DrainTimeout bounds the wait for outstanding acks after generation
	// stops (default 30s).
	DrainTimeout time.Duration

	// Verify watches /v1/live during the run and reconciles with InfluxDB after it.
	Verify bool
	// VerifyTimeout bounds the wait for acked readings to appear in InfluxDB
	// and on the dashboard (default 30s).
	VerifyTimeout time.Duration
	// MaxListed caps each loss list in the report (default 1000); counts
	// are always complete.
	MaxListed int

	// Progress receives progress output; nil disables it. ProgressTTY
	// selects a single updating line (terminal) over periodic plain lines.
	Progress         io.Writer
	ProgressTTY      bool
	ProgressInterval time.Duration // default 1s on a terminal, 10s otherwise
}

func (c Config) withDefaults() Config {
	def := func(p *time.Duration, d time.Duration) {
		if *p <= 0 {
			*p = d
		}
	}
	var urls []string
	for _, u := range c.ServiceURLs {
		if u = strings.TrimSuffix(strings.TrimSpace(u), "/"); u != "" {
			urls = append(urls, u)
		}
	}
	if c.ServiceURL == "" && len(urls) > 0 {
		c.ServiceURL = urls[0]
	}
	if c.ServiceURL == "" {
		c.ServiceURL = "http://127.0.0.1:8080"
	}
	c.ServiceURL = strings.TrimSuffix(c.ServiceURL, "/")
	if len(urls) == 0 {
		urls = []string{c.ServiceURL}
	}
	c.ServiceURLs = urls
	if c.LiveToken == "" {
		c.LiveToken = c.AdminToken
	}
	if c.MQTTURL == "" {
		c.MQTTURL = "tcp://127.0.0.1:1883"
	}
	if c.MQTTTopic == "" {
		c.MQTTTopic = "devices/+/telemetry"
	}
	if c.InfluxURL == "" {
		c.InfluxURL = "http://127.0.0.1:8086"
	}
	c.InfluxURL = strings.TrimSuffix(c.InfluxURL, "/")
	if c.InfluxBucket == "" {
		c.InfluxBucket = "telemetry/autogen"
	}
	if c.Format == "" {
		c.Format = FormatJSON
	}
	if c.Transport == "" {
		c.Transport = TransportWS
	}
	if c.Profile == "" {
		c.Profile = ProfileEnvironment
	}
	if c.Fleet == "" {
		c.Fleet = "sim"
	}
	if c.ChildrenPerGateway <= 0 {
		c.ChildrenPerGateway = 10
	}
	if c.Transport == TransportGateway && c.Gateways <= 0 {
		c.Gateways = (c.Devices + c.ChildrenPerGateway - 1) / c.ChildrenPerGateway
	}
	if c.Rate <= 0 {
		c.Rate = 1
	}
	if c.Batch <= 0 {
		c.Batch = 1
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	def(&c.SkewBy, time.Hour)
	if c.MaxFrameBytes <= 0 {
		c.MaxFrameBytes = 256 << 10
	}
	if c.BufferFrames <= 0 {
		c.BufferFrames = 1000
	}
	def(&c.BackoffMin, 100*time.Millisecond)
	def(&c.BackoffMax, 10*time.Second)
	def(&c.DrainTimeout, 30*time.Second)
	def(&c.VerifyTimeout, 30*time.Second)
	if c.MaxListed <= 0 {
		c.MaxListed = 1000
	}
	if c.ProgressInterval <= 0 {
		c.ProgressInterval = 10 * time.Second
		if c.ProgressTTY {
			c.ProgressInterval = time.Second
		}
	}
	return c
}

// maxReadingBytes is a generous bound on one encoded reading, used to keep
// ordinary frames well under the service's frame limit.
const maxReadingBytes = 640

// validate checks a Config that has its defaults applied.
func (c *Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	switch c.Transport {
	case TransportWS, TransportMQTT, TransportHTTP, TransportMixed, TransportGateway:
	default:
		bad("transport %q: want ws, mqtt, http, mixed or gateway", c.Transport)
	}
	switch {
	case !slices.Contains(formats, c.Format):
		bad("format %q: want json, senml, cbor, senml-cbor or lp", c.Format)
	case c.Format == FormatLP && c.Transport != TransportHTTP && c.Transport != TransportMQTT:
		// A line-protocol WebSocket frame has no seq, so nothing would ack it.
		bad("format lp needs -transport http (the 204 is the ack) or mqtt (the PUBACK is), not %s", c.Transport)
	}
	if c.Profile != ProfileMixed && !slices.Contains(profiles, c.Profile) {
		bad("profile %q: want environment, vehicle, power, status or mixed", c.Profile)
	}
	if c.Devices < 0 || c.Gateways < 0 {
		bad("devices and gateways must not be negative")
	}
	direct := c.Devices
	if c.Transport == TransportGateway {
		direct = 0
	}
	if direct+c.Gateways == 0 {
		bad("nothing to simulate: set -devices or -gateways")
	}
	if !validFleet(c.Fleet) {
		bad("fleet %q: 1 to 32 characters of [A-Za-z0-9_-]", c.Fleet)
	}
	if c.RunID != "" && !validFleet(c.RunID) {
		bad("run id %q: 1 to 32 characters of [A-Za-z0-9_-]", c.RunID)
	}
	if math.IsInf(c.Rate, 0) || math.IsNaN(c.Rate) || c.Rate > 10000 {
		bad("rate %v: at most 10000 readings/s per device", c.Rate)
	}
	if c.Jitter < 0 || c.Jitter > 1 {
		bad("jitter %v: want 0 to 1", c.Jitter)
	}
	perFrame := c.Batch
	if c.Gateways > 0 {
		perFrame = max(perFrame, c.Batch*c.ChildrenPerGateway)
	}
	if perFrame > 5000 {
		bad("%d readings per frame exceed the service's default limit of 5000", perFrame)
	}
	if perFrame*maxReadingBytes >= c.MaxFrameBytes {
		bad("%d readings per frame may exceed the %d-byte frame limit; lower -batch or -children-per-gateway", perFrame, c.MaxFrameBytes)
	}
	if c.Burst.Size < 0 || (c.Burst.Size > 0 && c.Burst.Every <= 0) {
		bad("burst: size must be ≥ 0 and the interval positive")
	}
	if c.ReadingsPerDevice < 0 {
		bad("readings per device must not be negative")
	}
	sum := 0.0
	for k := FaultMalformed; k < numFaults; k++ {
		r := c.Faults.rate(k)
		if r < 0 || r > 1 || math.IsNaN(r) {
			bad("fault %s: rate %v not in [0,1]", k, r)
		}
		sum += r
	}
	if sum > 1+1e-9 {
		bad("fault rates add up to %.3f; at most one fault is drawn per frame, so they must add up to at most 1", sum)
	}
	urls := []struct{ name, v string }{{"service URL", c.ServiceURL}, {"MQTT URL", c.MQTTURL}, {"InfluxDB URL", c.InfluxURL}}
	for _, u := range c.ServiceURLs {
		urls = append(urls, struct{ name, v string }{"service URL", u})
	}
	for _, u := range urls {
		if p, err := url.Parse(u.v); err != nil || p.Scheme == "" || p.Host == "" {
			bad("%s %q: want scheme://host:port", u.name, u.v)
		}
	}
	if _, _, err := splitBucket(c.InfluxBucket); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func validFleet(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// splitBucket maps an InfluxDB 1.8 bucket "db/rp" to its database and
// retention policy ("" for the default).
func splitBucket(b string) (db, rp string, err error) {
	db, rp, _ = strings.Cut(b, "/")
	if db == "" {
		return "", "", fmt.Errorf("InfluxDB bucket %q: want database[/retention-policy]", b)
	}
	return db, rp, nil
}
