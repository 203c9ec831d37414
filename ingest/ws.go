package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"

	"github.com/telemetryd/telemetryd/ingest/payload"
	"github.com/telemetryd/telemetryd/telemetry"
)

// WebSocket close codes used on device sockets (RFC 6455 §7.4.1).
const (
	CloseGoingAway   = 1001
	CloseUnsupported = 1003
	ClosePolicy      = 1008
	CloseTooBig      = 1009
	CloseInternal    = 1011
	CloseTryLater    = 1013
)

// Error codes in device error frames. They are part of the device protocol.
const (
	CodeInvalidPayload  = "invalid_payload"
	CodeTooManyReadings = "too_many_readings"
	CodeOverloaded      = "overloaded"
	CodeNotStored       = "not_stored"
	CodeShuttingDown    = "shutting_down"
	CodeRejected        = "rejected"
)

// Authenticator verifies a device token and returns the device (or gateway)
// it belongs to. Implementations must be safe for concurrent use, answer
// from memory (it runs on every upgrade), and return an error wrapping
// telemetry.ErrUnauthorized for an unknown or revoked token.
type Authenticator interface {
	AuthenticateDevice(ctx context.Context, token string) (telemetry.DeviceID, error)
}

// WSConfig tunes the device WebSocket endpoint. The zero value of each field
// means its default.
type WSConfig struct {
	// MaxFrameSize in bytes (default 256 KiB); larger frames close the socket with 1009.
	MaxFrameSize int
	// Limits for the payload decoder.
	Limits payload.Limits
	// PingInterval between server pings; a socket silent for two intervals is closed (default 30s).
	PingInterval time.Duration
	// OverloadWait is how long a frame may wait for room in the pipeline
	// before the device is told "overloaded" (default 5s).
	OverloadWait time.Duration
	// CheckOrigin vets the Origin header; nil allows all.
	CheckOrigin func(r *http.Request) bool
}

func (c WSConfig) withDefaults() WSConfig {
	if c.MaxFrameSize <= 0 {
		c.MaxFrameSize = 256 << 10
	}
	if c.PingInterval <= 0 {
		c.PingInterval = 30 * time.Second
	}
	if c.OverloadWait <= 0 {
		c.OverloadWait = 5 * time.Second
	}
	return c
}

// WSStats are the endpoint's counters.
type WSStats struct {
	Connections                                  int64
	Upgrades, Unauthorized, OriginRejected       uint64
	Frames, InvalidFrames, Overloaded            uint64
	ReadingsAccepted, ReadingsRejected, AcksSent uint64
}

// WS is the device WebSocket endpoint. It is an http.Handler for
// GET /v1/ingest; Run keeps its sockets alive with pings.
type WS struct {
	cfg      WSConfig
	auth     Authenticator
	next     telemetry.Consumer
	log      *slog.Logger
	upgrader *gws.Upgrader
	decoders sync.Pool

	conns    sync.Map // *deviceConn → struct{}
	draining atomic.Bool

	connections                                  atomic.Int64
	upgrades, unauthorized, originRejected       atomic.Uint64
	frames, invalidFrames, overloaded            atomic.Uint64
	readingsAccepted, readingsRejected, acksSent atomic.Uint64
}

// NewWS returns the endpoint. auth may not be nil.
func NewWS(cfg WSConfig, auth Authenticator, next telemetry.Consumer, log *slog.Logger) *WS {
	cfg = cfg.withDefaults()
	w := &WS{cfg: cfg, auth: auth, next: next, log: log}
	w.decoders.New = func() any { return payload.NewDecoder(cfg.Limits) }
	w.upgrader = gws.NewUpgrader(&wsEvents{w: w}, &gws.ServerOption{
		ReadMaxPayloadSize: cfg.MaxFrameSize,
		CheckUtf8Enabled:   true,
		Recovery:           gws.Recovery,
		Logger:             gwsLogger{log},
	})
	return w
}

// Stats returns the endpoint's counters.
func (w *WS) Stats() WSStats {
	return WSStats{
		Connections: w.connections.Load(), Upgrades: w.upgrades.Load(), Unauthorized: w.unauthorized.Load(),
		OriginRejected: w.originRejected.Load(), Frames: w.frames.Load(), InvalidFrames: w.invalidFrames.Load(),
		Overloaded: w.overloaded.Load(), ReadingsAccepted: w.readingsAccepted.Load(),
		ReadingsRejected: w.readingsRejected.Load(), AcksSent: w.acksSent.Load(),
	}
}

// DeviceToken returns the credential from "Authorization: Bearer …" or, for
// constrained clients, "?token=".
func DeviceToken(r *http.Request) string {
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return r.URL.Query().Get("token")
}

func (w *WS) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if w.draining.Load() {
		writeHTTPError(rw, http.StatusServiceUnavailable, CodeShuttingDown, "server is shutting down")
		return
	}
	if w.cfg.CheckOrigin != nil && !w.cfg.CheckOrigin(r) {
		w.originRejected.Add(1)
		writeHTTPError(rw, http.StatusForbidden, "origin_not_allowed", "origin not allowed")
		return
	}
	id, err := w.auth.AuthenticateDevice(r.Context(), DeviceToken(r))
	if err != nil {
		w.unauthorized.Add(1)
		writeHTTPError(rw, http.StatusUnauthorized, "unauthorized", "a valid device token is required")
		return
	}
	socket, err := w.upgrader.Upgrade(rw, r)
	if err != nil {
		return // gws has answered the client
	}
	w.upgrades.Add(1)
	socket.Session().Store(sessionKey, &deviceConn{w: w, conn: socket, id: id})
	go socket.ReadLoop()
}

// Disconnect closes every open socket of device id with code (e.g. 1008
// when its credential is revoked).
func (w *WS) Disconnect(id telemetry.DeviceID, code uint16, reason string) {
	w.conns.Range(func(k, _ any) bool {
		if c := k.(*deviceConn); c.id == id {
			c.close(code, reason)
		}
		return true
	})
}

// Drain stops accepting new sockets and frames; frames already accepted are
// still acknowledged. Call Close once the consumer has flushed.
func (w *WS) Drain() { w.draining.Store(true) }

// Close closes every device socket with 1001 (going away).
func (w *WS) Close() {
	w.draining.Store(true)
	w.conns.Range(func(k, _ any) bool {
		k.(*deviceConn).close(CloseGoingAway, "server shutting down")
		return true
	})
}

// Run pings every socket each PingInterval until ctx is done.
func (w *WS) Run(ctx context.Context) error {
	t := time.NewTicker(w.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			w.conns.Range(func(k, _ any) bool {
				k.(*deviceConn).conn.WriteAsync(gws.OpcodePing, nil, nil)
				return true
			})
		case <-ctx.Done():
			return nil
		}
	}
}

const sessionKey = "c"

type deviceConn struct {
	w          *WS
	conn       *gws.Conn
	id         telemetry.DeviceID
	closed     atomic.Bool
	overloaded int // consecutive overloaded frames; read loop only
}

func (c *deviceConn) close(code uint16, reason string) {
	if c.closed.Swap(true) {
		return
	}
	go func() {
		_ = c.conn.SetDeadline(time.Now().Add(2 * time.Second))
		_ = c.conn.WriteClose(code, []byte(reason))
	}()
}

func (c *deviceConn) send(b []byte) {
	c.conn.WriteAsync(gws.OpcodeText, b, nil)
}

// errorFrame is {"error":{...}} as sent to devices.
type errorFrame struct {
	Error errorFrameBody `json:"error"`
}

type errorFrameBody struct {
	Seq          *uint64               `json:"seq,omitempty"`
	Code         string                `json:"code"`
	Message      string                `json:"message"`
	RetryAfterMS int64                 `json:"retry_after_ms,omitempty"`
	Rejected     []telemetry.Rejection `json:"rejected,omitempty"`
}

func (c *deviceConn) sendError(seq *uint64, code, msg string, retryAfter time.Duration, rejected []telemetry.Rejection) {
	b, err := json.Marshal(errorFrame{Error: errorFrameBody{
		Seq: seq, Code: code, Message: msg, RetryAfterMS: retryAfter.Milliseconds(), Rejected: rejected,
	}})
	if err == nil {
		c.send(b)
	}
}

func (c *deviceConn) sendAck(seq uint64) {
	b := make([]byte, 0, 32)
	b = append(b, `{"ack":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, '}')
	c.send(b)
	c.w.acksSent.Add(1)
}

type wsEvents struct {
	gws.BuiltinEventHandler
	w *WS
}

func connOf(socket *gws.Conn) *deviceConn {
	v, _ := socket.Session().Load(sessionKey)
	c, _ := v.(*deviceConn)
	return c
}

func (e *wsEvents) deadline() time.Time { return time.Now().Add(2 * e.w.cfg.PingInterval) }

func (e *wsEvents) OnOpen(socket *gws.Conn) {
	_ = socket.SetDeadline(e.deadline())
	if c := connOf(socket); c != nil {
		e.w.conns.Store(c, struct{}{})
		e.w.connections.Add(1)
	}
}

func (e *wsEvents) OnClose(socket *gws.Conn, _ error) {
	if c := connOf(socket); c != nil {
		c.closed.Store(true)
		if _, ok := e.w.conns.LoadAndDelete(c); ok {
			e.w.connections.Add(-1)
		}
	}
}

func (e *wsEvents) OnPing(socket *gws.Conn, payload []byte) {
	_ = socket.SetDeadline(e.deadline())
	_ = socket.WritePong(payload)
}

func (e *wsEvents) OnPong(socket *gws.Conn, _ []byte) { _ = socket.SetDeadline(e.deadline()) }

func (e *wsEvents) OnMessage(socket *gws.Conn, message *gws.Message) {
	w := e.w
	_ = socket.SetDeadline(e.deadline())
	c := connOf(socket)
	if c == nil || c.closed.Load() {
		message.Close()
		return
	}
	if message.Opcode != gws.OpcodeText {
		message.Close()
		c.close(CloseUnsupported, "send JSON in text frames")
		return
	}
	received := time.Now()
	w.frames.Add(1)
	dec := w.decoders.Get().(*payload.Decoder)
	msg, err := dec.Decode(message.Bytes(), received)
	w.decoders.Put(dec)
	message.Close() // the decoder copied what it keeps
	var seq *uint64
	if msg.HasSeq {
		seq = &msg.Seq
	}
	if err != nil {
		w.invalidFrames.Add(1)
		code := CodeInvalidPayload
		if errors.Is(err, payload.ErrTooManyReadings) {
			code = CodeTooManyReadings
		}
		c.sendError(seq, code, err.Error(), 0, nil)
		return
	}
	if w.draining.Load() {
		c.sendError(seq, CodeShuttingDown, "server is shutting down; resend after reconnecting", 0, nil)
		return
	}
	f := &telemetry.Frame{
		Device:   c.id,
		Readings: msg.Readings,
		Invalid:  msg.Invalid,
		Skipped:  msg.Skipped,
		Received: received,
	}
	if seq != nil {
		s := *seq
		f.Done = func(o telemetry.Outcome) { c.finish(s, o) }
	}
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.OverloadWait)
	rcpt, err := w.next.Consume(ctx, f)
	cancel()
	switch {
	case errors.Is(err, telemetry.ErrOverloaded):
		w.overloaded.Add(1)
		c.overloaded++
		c.sendError(seq, CodeOverloaded, "the service is overloaded; resend later", time.Second, nil)
		if c.overloaded >= 3 {
			c.close(CloseTryLater, "overloaded")
		}
		return
	case errors.Is(err, telemetry.ErrClosed):
		c.sendError(seq, CodeShuttingDown, "server is shutting down; resend after reconnecting", 0, nil)
		return
	case err != nil:
		w.log.Error("consume failed", "device", c.id, "error", err)
		c.close(CloseInternal, "internal error")
		return
	}
	c.overloaded = 0
	w.readingsAccepted.Add(uint64(rcpt.Accepted))
	w.readingsRejected.Add(uint64(len(rcpt.Rejected)))
	if len(rcpt.Rejected) > 0 {
		c.sendError(seq, CodeRejected, strconv.Itoa(len(rcpt.Rejected))+" reading(s) rejected", 0, rcpt.Rejected)
	}
}

// finish answers a frame once the pipeline is done with it.
func (c *deviceConn) finish(seq uint64, o telemetry.Outcome) {
	if o.Err != nil {
		c.sendError(&seq, CodeNotStored, "readings were not stored; resend them", time.Second, nil)
		return
	}
	c.sendAck(seq)
	if len(o.Rejected) > 0 {
		c.sendError(&seq, CodeRejected, strconv.Itoa(len(o.Rejected))+" reading(s) refused by storage", 0, o.Rejected)
	}
}

func writeHTTPError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(errorFrame{Error: errorFrameBody{Code: code, Message: msg}})
}

// gwsLogger routes gws's internal errors (e.g. recovered panics) to slog.
type gwsLogger struct{ log *slog.Logger }

func (l gwsLogger) Error(v ...any) { l.log.Error("websocket", "detail", v) }
