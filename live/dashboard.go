package live

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"

	"github.com/telemetryd/telemetryd/telemetry"
)

// DefaultMaxPendingBytes is DashboardConfig.MaxPendingBytes's default.
const DefaultMaxPendingBytes = 4 << 20

// Bounds of what one dashboard socket may ask for.
const (
	maxSubscriptions = 64
	maxFilterItems   = 1000
)

// ViewerAuthenticator checks a dashboard token. It returns an error for an
// unknown or revoked token. Implementations must be safe for concurrent use
// and must not do I/O per call.
type ViewerAuthenticator interface {
	AuthenticateViewer(ctx context.Context, token string) (telemetry.Viewer, error)
}

// DashboardConfig tunes the /v1/live handler. The zero value of each field
// means its default.
type DashboardConfig struct {
	// PingInterval between server pings; a socket silent for two intervals is closed (default 20s).
	PingInterval time.Duration
	// MaxPending bounds frames queued for one socket or SSE stream
	// (default 2048) and MaxPendingBytes their size (default 4 MiB). What
	// happens to a dashboard that would pass them is the Hub's SlowPolicy:
	// its stream is conflated (default), or it is closed with 1013 and
	// should reconnect and re-subscribe. The byte bound is what limits
	// memory; the frame bound keeps a dashboard on a brief stall (a GC
	// pause, a busy tab) from being conflated at high rates.
	MaxPending      int
	MaxPendingBytes int
	// MaxMessageSize bounds a client message (default 64 KiB).
	MaxMessageSize int
	// CheckOrigin vets the Origin header of an upgrade; nil allows all.
	CheckOrigin func(r *http.Request) bool
	// Viewers authenticates dashboards; nil leaves /v1/live open.
	Viewers ViewerAuthenticator
	// ViewerActive, when set, is asked when a socket opens whether its
	// viewer is still active (a revocation may race the upgrade); if not,
	// the socket is closed with 1008.
	ViewerActive func(viewerID string) bool
	// DisableCompression turns permessage-deflate off (deflate.go); by
	// default a client that offers it gets it.
	DisableCompression bool
}

// Dashboards serves dashboard WebSockets: clients subscribe with filters and
// receive snapshots and live readings from the Hub.
type Dashboards struct {
	cfg      DashboardConfig
	hub      *Hub
	log      *slog.Logger
	upgrader *gws.Upgrader
	conns    sync.Map // *dashConn → struct{}
	count    atomic.Int64
	closing  atomic.Bool
	sseCount atomic.Int64
	sseConns sync.Map      // *sseClient → struct{}
	shutdown chan struct{} // closed by Run when it ends: SSE streams return
	shared   broadcasters  // deflate.go: each shared frame compressed once
}

// NewDashboards returns the /v1/live handler; start its ping loop with Run.
func NewDashboards(cfg DashboardConfig, hub *Hub, log *slog.Logger) *Dashboards {
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = 20 * time.Second
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 2048
	}
	if cfg.MaxPendingBytes <= 0 {
		cfg.MaxPendingBytes = DefaultMaxPendingBytes
	}
	if cfg.MaxMessageSize <= 0 {
		cfg.MaxMessageSize = 64 << 10
	}
	d := &Dashboards{cfg: cfg, hub: hub, log: log, shutdown: make(chan struct{})}
	d.upgrader = gws.NewUpgrader(&dashEvents{d: d}, &gws.ServerOption{
		ReadMaxPayloadSize: cfg.MaxMessageSize,
		CheckUtf8Enabled:   true,
		Recovery:           gws.Recovery,
		Logger:             gwsLogger{log},
		PermessageDeflate:  deflateOption(cfg.DisableCompression),
	})
	return d
}

// Connections is the number of open dashboard sockets and SSE streams.
func (d *Dashboards) Connections() int { return int(d.count.Load() + d.sseCount.Load()) }

// Authenticate returns the viewer making request r: anonymous and
// unrestricted when no ViewerAuthenticator is configured, else the owner of
// r's token (telemetry.BearerToken). The error wraps
// telemetry.ErrUnauthorized. The dashboard page's API uses it too, so every
// dashboard endpoint accepts the same tokens.
func (d *Dashboards) Authenticate(r *http.Request) (telemetry.Viewer, error) {
	if d.cfg.Viewers == nil {
		return telemetry.Anonymous(), nil
	}
	v, err := d.cfg.Viewers.AuthenticateViewer(r.Context(), telemetry.BearerToken(r))
	if err != nil {
		return telemetry.Viewer{}, fmt.Errorf("%w: %w", telemetry.ErrUnauthorized, err)
	}
	return v, nil
}

// admit is the preamble of both feeds (WebSocket and SSE): refused while
// shutting down, from a foreign origin or without a valid token, with the
// same answers as the device endpoint. It returns the viewer when r may go on.
func (d *Dashboards) admit(w http.ResponseWriter, r *http.Request) (telemetry.Viewer, bool) {
	if d.closing.Load() {
		telemetry.RefuseShuttingDown(w)
		return telemetry.Viewer{}, false
	}
	if d.cfg.CheckOrigin != nil && !d.cfg.CheckOrigin(r) {
		telemetry.RefuseOrigin(w)
		return telemetry.Viewer{}, false
	}
	viewer, err := d.Authenticate(r)
	if err != nil {
		telemetry.RefuseUnauthorized(w, "viewer")
		return telemetry.Viewer{}, false
	}
	return viewer, true
}

func (d *Dashboards) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	viewer, ok := d.admit(w, r)
	if !ok {
		return
	}
	socket, err := d.upgrader.Upgrade(w, r)
	if err != nil {
		return // gws has answered the client
	}
	limitSendBuffer(socket.NetConn())
	c := &dashConn{d: d, conn: socket, viewer: viewer, deflate: !d.cfg.DisableCompression && offersDeflate(r)}
	socket.Session().Store(sessionKey, c)
	go socket.ReadLoop()
}

// Run pings every socket each PingInterval until ctx is done, then closes
// every socket with 1001 (going away).
func (d *Dashboards) Run(ctx context.Context) error {
	t := time.NewTicker(d.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			d.conns.Range(func(k, _ any) bool {
				k.(*dashConn).conn.WriteAsync(gws.OpcodePing, nil, nil)
				return true
			})
		case <-ctx.Done():
			d.closing.Store(true)
			close(d.shutdown)
			d.conns.Range(func(k, _ any) bool {
				k.(*dashConn).close(telemetry.CloseGoingAway, "server shutting down")
				return true
			})
			return nil
		}
	}
}

const sessionKey = "c"

// dashSendBuffer is the kernel send buffer of a dashboard socket. The
// queue a dashboard may fall behind by is the service's (MaxPendingBytes,
// then conflation), not the kernel's: an autotuned buffer of megabytes
// would hold stale values, and a writer blocked on a full one is woken only
// once a third of it has drained, which on a slow link takes longer than
// the deadline that completed writes extend (dashConn.alive).
const dashSendBuffer = 128 << 10

func limitSendBuffer(c net.Conn) {
	if t, ok := c.(interface{ NetConn() net.Conn }); ok { // TLS
		c = t.NetConn()
	}
	if t, ok := c.(interface{ SetWriteBuffer(int) error }); ok {
		_ = t.SetWriteBuffer(dashSendBuffer)
	}
}

// dashConn is one dashboard socket; it implements Client.
type dashConn struct {
	d            *Dashboards
	conn         *gws.Conn
	viewer       telemetry.Viewer
	pending      atomic.Int64
	pendingBytes atomic.Int64
	closed       atomic.Bool
	lastAlive    atomic.Int64 // Unix ns of the last deadline extension by a write
	mu           sync.Mutex
	subIDs       map[string]struct{} // the socket's live subscriptions (the cap counts them)
	deflate      bool                // permessage-deflate negotiated
}

// Send implements Client: it queues frame on the socket's write queue
// unless MaxPending frames or MaxPendingBytes would be passed (a frame
// always fits an empty queue, so a large one cannot wedge a socket). What
// happens then is the Hub's SlowPolicy.
func (c *dashConn) Send(frame []byte) bool { return c.queue(frame, 1) }

// queue is Send with the bounds multiplied by slack.
func (c *dashConn) queue(frame []byte, slack int64) bool {
	if c.closed.Load() {
		return false
	}
	size := int64(len(frame))
	frames, bytes := c.pending.Add(1), c.pendingBytes.Add(size)
	if frames > 1 && (frames > slack*int64(c.d.cfg.MaxPending) || bytes > slack*int64(c.d.cfg.MaxPendingBytes)) {
		c.pending.Add(-1)
		c.pendingBytes.Add(-size)
		return false
	}
	c.d.write(c, frame, func(err error) { // deflate.go
		c.pending.Add(-1)
		c.pendingBytes.Add(-size)
		if err == nil {
			c.alive()
		}
	})
	return true
}

// alive extends the socket's deadline after a write went through (at most
// once a second): a dashboard on a slow link reads the server's pings only
// after the frames queued before them, so its pongs come late, but the
// writes it takes show it is there.
func (c *dashConn) alive() {
	if c.closed.Load() { // the close's own deadline stands
		return
	}
	now := time.Now()
	if last := c.lastAlive.Load(); now.UnixNano()-last < int64(time.Second) || !c.lastAlive.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	_ = c.conn.SetDeadline(now.Add(2 * c.d.cfg.PingInterval))
}

// Room implements Client: the queue is at most half full.
func (c *dashConn) Room() bool {
	return !c.closed.Load() && c.pending.Load() <= int64(c.d.cfg.MaxPending)/2 &&
		c.pendingBytes.Load() <= int64(c.d.cfg.MaxPendingBytes)/2
}

// Drop implements Client: the Hub gave up on the socket (SlowDisconnect).
func (c *dashConn) Drop() { c.close(telemetry.CloseTryLater, "too slow: reconnect and resubscribe") }

func (c *dashConn) close(code uint16, reason string) {
	if c.closed.Swap(true) {
		return
	}
	// Never block the caller (the hub) on a stuck peer: the deadline frees
	// a write that is blocked, and the close happens on its own goroutine.
	go func() {
		_ = c.conn.SetDeadline(time.Now().Add(2 * time.Second))
		_ = c.conn.WriteClose(code, []byte(reason))
	}()
}

// sendJSON answers a client message. Answers may pass the queue's bound
// (a conflating dashboard's queue is often full) up to twice it; a client
// that sends messages but does not read the answers is closed with 1013.
func (c *dashConn) sendJSON(v any) {
	b, err := json.Marshal(v)
	if err == nil && !c.queue(b, 2) {
		c.Drop()
	}
}

// track records subscribe (add) or unsubscribe of id and reports whether
// it is allowed: a new id beyond maxSubscriptions is not. Re-subscribing
// an id replaces it and unsubscribing an unknown one changes nothing.
func (c *dashConn) track(id string, add bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !add {
		delete(c.subIDs, id)
		return true
	}
	if _, ok := c.subIDs[id]; !ok && len(c.subIDs) >= maxSubscriptions {
		return false
	}
	if c.subIDs == nil {
		c.subIDs = make(map[string]struct{})
	}
	c.subIDs[id] = struct{}{}
	return true
}

type dashEvents struct {
	gws.BuiltinEventHandler
	d *Dashboards
}

func connOf(socket *gws.Conn) *dashConn {
	v, _ := socket.Session().Load(sessionKey)
	c, _ := v.(*dashConn)
	return c
}

func (e *dashEvents) deadline() time.Time { return time.Now().Add(2 * e.d.cfg.PingInterval) }

func (e *dashEvents) OnOpen(socket *gws.Conn) {
	_ = socket.SetDeadline(e.deadline())
	if c := connOf(socket); c != nil {
		e.d.conns.Store(c, struct{}{})
		e.d.count.Add(1)
		if e.d.cfg.ViewerActive != nil && c.viewer.ID != "" && !e.d.cfg.ViewerActive(c.viewer.ID) {
			c.close(telemetry.ClosePolicy, "credential revoked")
		}
	}
}

// Disconnect closes every dashboard socket of viewer id with code (1008
// when its credential is revoked). It does not block.
func (d *Dashboards) Disconnect(viewerID string, code uint16, reason string) {
	d.conns.Range(func(k, _ any) bool {
		if c := k.(*dashConn); c.viewer.ID == viewerID {
			c.close(code, reason)
		}
		return true
	})
	d.disconnectSSE(viewerID) // sse.go
}

func (e *dashEvents) OnClose(socket *gws.Conn, err error) {
	c := connOf(socket)
	if c == nil {
		return
	}
	c.closed.Store(true)
	e.d.log.Debug("dashboard socket closed", "viewer", c.viewer.Name, "error", err)
	if _, loaded := e.d.conns.LoadAndDelete(c); loaded {
		e.d.count.Add(-1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	e.d.hub.Detach(ctx, c)
}

func (e *dashEvents) OnPing(socket *gws.Conn, payload []byte) {
	_ = socket.SetDeadline(e.deadline())
	_ = socket.WritePong(payload)
}

func (e *dashEvents) OnPong(socket *gws.Conn, _ []byte) { _ = socket.SetDeadline(e.deadline()) }

// clientMessage is what a dashboard sends.
type clientMessage struct {
	Op           string            `json:"op"`
	ID           string            `json:"id"`
	Devices      []string          `json:"devices"`
	Measurements []string          `json:"measurements"`
	Fields       []string          `json:"fields"`
	Tags         map[string]string `json:"tags"`
	Presence     PresenceMode      `json:"presence"`
	// Since resumes from a position (resume.go); Persisted asks for
	// persisted messages (persisted.go).
	Since     *int64 `json:"since"`
	Persisted bool   `json:"persisted"`
}

// errorMessage answers a client message: the shared error body, with the
// message type and the subscription it concerns.
type errorMessage struct {
	Type  string              `json:"type"`
	Sub   string              `json:"sub,omitempty"`
	Error telemetry.ErrorBody `json:"error"`
}

func (e *dashEvents) OnMessage(socket *gws.Conn, message *gws.Message) {
	defer message.Close()
	_ = socket.SetDeadline(e.deadline())
	c := connOf(socket)
	if c == nil {
		return
	}
	var m clientMessage
	if err := json.Unmarshal(message.Bytes(), &m); err != nil {
		c.sendJSON(errorMessage{Type: "error", Error: telemetry.ErrorBody{Code: telemetry.CodeInvalidRequest, Message: telemetry.ClipMessage("message is not valid JSON: " + err.Error())}})
		return
	}
	if err := m.validate(); err != nil {
		c.sendJSON(errorMessage{Type: "error", Sub: m.ID, Error: telemetry.ErrorBody{Code: telemetry.CodeInvalidRequest, Message: telemetry.ClipMessage(err.Error())}})
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	switch m.Op {
	case "subscribe":
		if !c.track(m.ID, true) {
			c.sendJSON(errorMessage{Type: "error", Sub: m.ID, Error: telemetry.ErrorBody{Code: "too_many_subscriptions", Message: "at most 64 subscriptions per socket"}})
			return
		}
		e.d.hub.SubscribeWith(ctx, c, m.ID, Filter{
			Devices: m.Devices, Measurements: m.Measurements, Fields: m.Fields, Tags: m.Tags, Scope: c.viewer.Scope,
			Presence: m.Presence,
		}, m.options())
	case "unsubscribe":
		c.track(m.ID, false)
		e.d.hub.Unsubscribe(ctx, c, m.ID)
		c.sendJSON(map[string]string{"type": "unsubscribed", "sub": m.ID})
	}
}

func (m *clientMessage) validate() error {
	if m.Op != "subscribe" && m.Op != "unsubscribe" {
		return errors.New(`op must be "subscribe" or "unsubscribe"`)
	}
	if m.ID == "" || len(m.ID) > 64 {
		return errors.New("id must be 1 to 64 characters")
	}
	if len(m.Devices) > maxFilterItems || len(m.Measurements) > maxFilterItems || len(m.Fields) > maxFilterItems || len(m.Tags) > 32 {
		return errors.New("filter too large")
	}
	if !m.Presence.Valid() {
		return errors.New(`presence must be "", "include" or "only"`)
	}
	return nil
}

// gwsLogger routes gws's internal errors (e.g. recovered panics) to slog.
type gwsLogger struct{ log *slog.Logger }

func (l gwsLogger) Error(v ...any) { l.log.Error("websocket", "detail", v) }
