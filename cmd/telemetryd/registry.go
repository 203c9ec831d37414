package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/telemetryd/telemetryd/bridge"
	"github.com/telemetryd/telemetryd/devices"
	"github.com/telemetryd/telemetryd/ingest"
	"github.com/telemetryd/telemetryd/telemetry"
)

// Interface guards: the registry (through identity) is what the transports,
// the bridge and the dashboards authenticate and authorize against.
var (
	_ ingest.Authenticator       = (*devices.Registry)(nil)
	_ ingest.DeviceChecker       = (*devices.Registry)(nil)
	_ bridge.ChildAuthorizer     = (*devices.Registry)(nil)
	_ bridge.LabelSource         = (*devices.Registry)(nil)
	_ ingest.Authenticator       = (*identity)(nil)
	_ ingest.DeviceChecker       = (*identity)(nil)
	_ bridge.ChildAuthorizer     = (*identity)(nil)
	_ bridge.LabelSource         = (*identity)(nil)
	_ bridge.ViewerAuthenticator = (*identity)(nil)
)

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
	e.int(&c.MaxConnsPerDevice, "max-conns-per-device", "TELEMETRY_MAX_CONNS_PER_DEVICE", 4, "simultaneous WebSockets per device; more get HTTP 429 too_many_connections")
	e.int(&c.MaxConns, "max-conns", "TELEMETRY_MAX_CONNS", 100000, "simultaneous device WebSockets in total; more get HTTP 503 server_busy")
	e.int(&c.FrameRate, "device-frame-rate", "TELEMETRY_DEVICE_FRAME_RATE", 100, "frames per second per device over WebSocket and MQTT (token bucket); excess gets rate_limited (MQTT: acked and dropped); -1: unlimited")
	e.int(&c.FrameBurst, "device-frame-burst", "TELEMETRY_DEVICE_FRAME_BURST", 200, "frame bucket size per device (burst above -device-frame-rate)")
	e.int(&c.RateLimitClose, "rate-limit-close", "TELEMETRY_RATE_LIMIT_CLOSE", 10, "consecutive rate_limited frames after which the socket is closed with 1013")
	e.dur(&c.ReadHeaderTimeout, "read-header-timeout", "TELEMETRY_READ_HEADER_TIMEOUT", 10*time.Second, "longest time to receive a request's headers (WebSocket handshake included): slow-loris bound")
	e.dur(&c.WSPingInterval, "ws-ping-interval", "TELEMETRY_WS_PING_INTERVAL", 30*time.Second, "server ping interval on device WebSockets; a socket silent for two intervals is closed")
}

// identity wires the device registry — and, for development, the optional
// static token list (-device-tokens) — into the transports, the bridge and
// the dashboards, and keeps the Mosquitto files in step with it.
type identity struct {
	reg    *devices.Registry
	static *devices.StaticTokens // nil without -device-tokens
	api    *devices.AdminAPI
	cfg    config
	log    *slog.Logger
	// mosquitto is signalled (never blocking) when the files must be rewritten.
	mosquitto chan struct{}
	mqttTLS   *tls.Config // nil: defaults

	conns              sync.Map // net.Conn → *atomic.Bool (a request was read)
	incompleteRequests atomic.Uint64
}

func registryPath(cfg config) string { return filepath.Join(cfg.DataDir, "registry.db") }

// openIdentity opens the registry under the data directory.
func openIdentity(ctx context.Context, cfg config, log *slog.Logger) (*identity, error) {
	sec := cfg.Sec
	if sec.AdminToken != "" && len(sec.AdminToken) < 16 {
		return nil, errors.New("the admin token (TELEMETRY_ADMIN_TOKEN) must have at least 16 characters")
	}
	if (sec.MosquittoPasswordFile == "") != (sec.MosquittoACLFile == "") {
		return nil, errors.New("set both -mosquitto-password-file and -mosquitto-acl-file, or neither")
	}
	if err := checkTLSFiles(sec); err != nil {
		return nil, err
	}
	var mqttTLS *tls.Config
	if sec.MQTTCA != "" {
		var err error
		if mqttTLS, err = caTLS(sec.MQTTCA); err != nil {
			return nil, fmt.Errorf("mqtt: %w", err)
		}
	}
	store, err := devices.OpenSQLite(ctx, registryPath(cfg))
	if err != nil {
		return nil, err
	}
	reg, err := devices.Open(ctx, store, devices.Config{
		RotationGrace: sec.RotationGrace,
		AdminToken:    sec.AdminToken,
		MaxLabels:     sec.MaxLabels,
	}, log.With("component", "registry"))
	if err != nil {
		store.Close()
		return nil, err
	}
	id := &identity{reg: reg, cfg: cfg, log: log, mosquitto: make(chan struct{}, 1), mqttTLS: mqttTLS}
	id.api = devices.NewAdminAPI(reg, log.With("component", "admin-api"))
	if cfg.DeviceTokens != "" {
		if id.static, err = devices.LoadStaticTokens(cfg.DeviceTokens); err != nil {
			reg.Close()
			return nil, err
		}
	}
	if sec.MosquittoPasswordFile != "" {
		// Fail at start, not at the first change, if the files cannot be written.
		if err := id.writeMosquitto(); err != nil {
			reg.Close()
			return nil, err
		}
	}
	st := reg.Stats()
	log.Info("device registry open", "path", registryPath(cfg), "devices", st.Devices, "viewers", st.Viewers,
		"admin_api", reg.AdminEnabled(), "static_tokens", id.static != nil)
	return id, nil
}

// Close persists last-seen times and closes the registry.
func (id *identity) Close() {
	if err := id.reg.Close(); err != nil {
		id.log.Warn("closing the device registry", "error", err)
	}
}

// AuthenticateDevice: the registry, then the static list.
func (id *identity) AuthenticateDevice(ctx context.Context, token string) (telemetry.DeviceID, error) {
	dev, err := id.reg.AuthenticateDevice(ctx, token)
	if err != nil && id.static != nil && !strings.HasPrefix(token, devices.DeviceTokenPrefix) {
		return id.static.AuthenticateDevice(ctx, token)
	}
	return dev, err
}

// Active: registered and not revoked, or in the static list.
func (id *identity) Active(dev telemetry.DeviceID) bool {
	return id.reg.Active(dev) || (id.static != nil && id.static.Active(dev))
}

func (id *identity) MayReportFor(gateway, dev telemetry.DeviceID) bool {
	return id.reg.MayReportFor(gateway, dev)
}

func (id *identity) Labels(dev telemetry.DeviceID) []telemetry.Tag { return id.reg.Labels(dev) }

// AuthenticateViewer: a viewer token, or the admin token (unrestricted).
func (id *identity) AuthenticateViewer(ctx context.Context, token string) (bridge.Viewer, error) {
	v, err := id.reg.AuthenticateViewer(ctx, token)
	if err != nil {
		return bridge.Viewer{}, err
	}
	scope := v.Scope
	if len(scope) == 0 {
		scope = nil // unrestricted
	}
	return bridge.Viewer{ID: v.ID, Name: v.Name, Scope: scope}, nil
}

// configureBridge lets the registry authorize gateways and label readings.
func (id *identity) configureBridge(c *bridge.Config) {
	c.Children = id
	c.Labels = id
}

// dashboardConfig requires viewer tokens on every dashboard endpoint.
func (id *identity) dashboardConfig(c bridge.DashboardConfig) bridge.DashboardConfig {
	c.Viewers = id
	c.ViewerActive = id.reg.ViewerActive
	return c
}

// wsConfig adds the connection and rate limits and the per-frame check.
func (id *identity) wsConfig(c ingest.WSConfig) ingest.WSConfig {
	s := id.cfg.Sec
	c.MaxConnsPerDevice = s.MaxConnsPerDevice
	c.MaxConns = s.MaxConns
	c.FrameRate = float64(s.FrameRate)
	c.FrameBurst = s.FrameBurst
	c.RateLimitClose = s.RateLimitClose
	c.PingInterval = s.WSPingInterval
	c.Devices = id
	return c
}

// mqttConfig drops messages of unknown or revoked topic devices and sets
// the broker CA.
func (id *identity) mqttConfig(c ingest.MQTTConfig) ingest.MQTTConfig {
	c.Devices = id
	if id.mqttTLS != nil {
		c.TLS = id.mqttTLS.Clone()
	}
	return c
}

// attach closes the sockets of revoked devices and viewers as soon as the
// registry reports the change, and schedules the Mosquitto files.
func (id *identity) attach(ws *ingest.WS, dash *bridge.Dashboards) {
	id.reg.Subscribe(func(e devices.Event) {
		if e.Revokes() {
			if e.Device != "" {
				ws.Disconnect(e.Device, ingest.ClosePolicy, "credential revoked")
			} else {
				dash.Disconnect(e.Viewer, ingest.ClosePolicy, "credential revoked")
			}
		}
		if e.Device != "" && id.cfg.Sec.MosquittoPasswordFile != "" {
			select {
			case id.mosquitto <- struct{}{}:
			default: // a rewrite is already pending; it will see this change
			}
		}
	})
}

// mount serves the admin API (404 when no admin token is configured).
func (id *identity) mount(mux *http.ServeMux) { mux.Handle("/api/v1/", id.api) }

// Run persists last-seen times and rewrites the Mosquitto files after
// changes until ctx is done.
func (id *identity) Run(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = id.reg.Run(ctx)
	}()
	for {
		select {
		case <-ctx.Done():
			<-done
			return nil
		case <-id.mosquitto:
			if err := id.writeMosquitto(); err != nil {
				id.log.Error("rewriting the Mosquitto files failed; the broker keeps the previous ones", "error", err)
			}
		}
	}
}

func (id *identity) writeMosquitto() error {
	c := id.cfg
	err := id.reg.WriteMosquittoFiles(c.Sec.MosquittoPasswordFile, c.Sec.MosquittoACLFile, c.MQTTTopic,
		devices.MosquittoAccount{Username: c.MQTTUsername, Password: c.MQTTPassword})
	if err != nil {
		return err
	}
	if c.Sec.MosquittoPIDFile != "" {
		return signalPIDFile(c.Sec.MosquittoPIDFile)
	}
	return nil
}

// signalPIDFile sends SIGHUP (Mosquitto: reload password and ACL files) to
// the process whose id the file holds.
func signalPIDFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("mosquitto pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return fmt.Errorf("mosquitto pid file %s: no valid pid", path)
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		return fmt.Errorf("reload mosquitto (pid %d): %w", pid, err)
	}
	return nil
}

// httpServer applies the handshake timeout to srv and counts connections
// closed before they sent a complete request (slow or abandoned handshakes,
// the -read-header-timeout refusals among them).
func (id *identity) httpServer(srv *http.Server) *http.Server {
	srv.ReadHeaderTimeout = id.cfg.Sec.ReadHeaderTimeout
	next := srv.Handler
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		seen := new(atomic.Bool)
		id.conns.Store(c, seen)
		return context.WithValue(ctx, requestSeenKey{}, seen)
	}
	srv.ConnState = func(c net.Conn, s http.ConnState) {
		if s != http.StateClosed && s != http.StateHijacked {
			return
		}
		if v, ok := id.conns.LoadAndDelete(c); ok && !v.(*atomic.Bool).Load() && s == http.StateClosed {
			id.incompleteRequests.Add(1)
		}
	}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if seen, ok := r.Context().Value(requestSeenKey{}).(*atomic.Bool); ok {
			seen.Store(true)
		}
		next.ServeHTTP(w, r)
	})
	return srv
}

type requestSeenKey struct{}

// IncompleteRequests counts connections closed before a complete request.
func (id *identity) IncompleteRequests() uint64 { return id.incompleteRequests.Load() }

// serve serves srv on ln, over TLS when a certificate is configured.
func (id *identity) serve(srv *http.Server, ln net.Listener) error {
	if id.cfg.Sec.TLSCert == "" && id.cfg.Sec.TLSKey == "" {
		return srv.Serve(ln)
	}
	cert, err := tls.LoadX509KeyPair(id.cfg.Sec.TLSCert, id.cfg.Sec.TLSKey)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	srv.TLSConfig = &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		// HTTP/1.1 only: a WebSocket upgrade needs a hijackable HTTP/1.1
		// connection, which HTTP/2 would not give gws.
		NextProtos: []string{"http/1.1"},
	}
	return srv.ServeTLS(ln, "", "")
}

// checkTLSFiles fails at start when the certificate pair cannot be loaded.
func checkTLSFiles(sec securityConfig) error {
	if (sec.TLSCert == "") != (sec.TLSKey == "") {
		return errors.New("set both -tls-cert and -tls-key, or neither")
	}
	if sec.TLSCert != "" {
		if _, err := tls.LoadX509KeyPair(sec.TLSCert, sec.TLSKey); err != nil {
			return fmt.Errorf("tls: %w", err)
		}
	}
	return nil
}

// caTLS returns a client TLS configuration trusting the CAs in a PEM file.
func caTLS(path string) (*tls.Config, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s: no PEM certificate", path)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// influxTLS is the TLS configuration for InfluxDB (nil: defaults).
func influxTLS(cfg config) (*tls.Config, error) {
	if cfg.Sec.InfluxCA == "" {
		return nil, nil
	}
	t, err := caTLS(cfg.Sec.InfluxCA)
	if err != nil {
		return nil, fmt.Errorf("influx: %w", err)
	}
	return t, nil
}
