package ingest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"

	"github.com/telemetryd/telemetryd/ingest/payload"
	"github.com/telemetryd/telemetryd/telemetry"
)

// Error codes in device error frames. They are part of the device protocol.
const (
	CodeInvalidPayload  = "invalid_payload"
	CodeTooManyReadings = "too_many_readings"
	CodeOverloaded      = "overloaded"
	CodeNotStored       = "not_stored"
	CodeShuttingDown    = telemetry.CodeShuttingDown
	CodeRejected        = "rejected"
	// CodeRateLimited answers a frame over the device's rate; it was not
	// consumed. retry_after_ms says when a token is available again.
	CodeRateLimited = "rate_limited"
	// Upgrade refusals (HTTP JSON errors): 429 when the device already has
	// MaxConnsPerDevice sockets, 503 when the endpoint has MaxConns.
	CodeTooManyConnections = "too_many_connections"
	CodeServerBusy         = "server_busy"
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
	// MaxConnsPerDevice bounds one device's simultaneous sockets (default
	// 4); another upgrade gets HTTP 429 too_many_connections.
	MaxConnsPerDevice int
	// MaxConns bounds all device sockets (default 100000); another upgrade
	// gets HTTP 503 server_busy.
	MaxConns int
	// FrameRate is each device's sustained frames per second over all its
	// sockets (token bucket; default 100, negative: unlimited) and
	// FrameBurst its bucket size (default 2×FrameRate). A frame over the
	// rate is answered rate_limited and not consumed; RateLimitClose
	// consecutive ones (default 10) close the socket with 1013.
	FrameRate      float64
	FrameBurst     int
	RateLimitClose int
	// DedupEntries bounds the accepted frames remembered to recognise a
	// resend (default 65536; negative: off) and DedupWindow how long each
	// is remembered (default 5 min). See wsdedup.go.
	DedupEntries int
	DedupWindow  time.Duration
	// Devices, when set, is asked on every frame whether the device is
	// still active; if not, the socket is closed with 1008 and the frame
	// dropped. (Revocation also closes sockets through Disconnect; this
	// covers a socket that was being opened at that moment.)
	Devices DeviceChecker
}

// DefaultWSConfig is what the zero value of each WSConfig field stands for.
func DefaultWSConfig() WSConfig {
	return WSConfig{
		MaxFrameSize:      256 << 10,
		PingInterval:      30 * time.Second,
		OverloadWait:      5 * time.Second,
		MaxConnsPerDevice: 4,
		MaxConns:          100000,
		FrameRate:         100,
		FrameBurst:        200, // 2×FrameRate
		RateLimitClose:    10,
		DedupEntries:      65536,
		DedupWindow:       5 * time.Minute,
	}
}

func (c WSConfig) withDefaults() WSConfig {
	d := DefaultWSConfig()
	if c.MaxFrameSize <= 0 {
		c.MaxFrameSize = d.MaxFrameSize
	}
	if c.PingInterval <= 0 {
		c.PingInterval = d.PingInterval
	}
	if c.OverloadWait <= 0 {
		c.OverloadWait = d.OverloadWait
	}
	if c.MaxConnsPerDevice <= 0 {
		c.MaxConnsPerDevice = d.MaxConnsPerDevice
	}
	if c.MaxConns <= 0 {
		c.MaxConns = d.MaxConns
	}
	if c.FrameRate == 0 {
		c.FrameRate = d.FrameRate
	}
	if c.FrameBurst <= 0 {
		c.FrameBurst = max(int(2*c.FrameRate), 1)
	}
	if c.RateLimitClose <= 0 {
		c.RateLimitClose = d.RateLimitClose
	}
	if c.DedupEntries == 0 {
		c.DedupEntries = d.DedupEntries
	}
	if c.DedupWindow <= 0 {
		c.DedupWindow = d.DedupWindow
	}
	return c
}

// WSStats are the endpoint's counters.
type WSStats struct {
	Connections                                  int64
	Upgrades, Unauthorized, OriginRejected       uint64
	Frames, InvalidFrames, Overloaded            uint64
	ReadingsAccepted, ReadingsRejected, AcksSent uint64
	// Limits: upgrades refused (429 per device, 503 in total), frames
	// refused rate_limited, sockets closed 1013 for the rate, 1009 for an
	// oversized frame, 1008 for a device no longer active.
	DeviceConnLimited, TotalConnLimited uint64
	RateLimited, RateLimitClosed        uint64
	TooBig, InactiveClosed              uint64
	// WriteQueueFull counts sockets aborted because their device did not
	// read its answers (the outgoing queue reached its bound; see
	// maxPendingMsgs).
	WriteQueueFull uint64
	// Resent counts frames recognised as resends of accepted frames and
	// answered without being stored again (wsdedup.go).
	Resent uint64
}

// WS is the device WebSocket endpoint. It is an http.Handler for
// GET /v1/ingest; Run keeps its sockets alive with pings.
type WS struct {
	cfg      WSConfig
	auth     Authenticator
	next     telemetry.Consumer
	log      *slog.Logger
	upgrader *gws.Upgrader
	corkBufs *sync.Pool // gathering buffers of the sockets' corkConns (wswriter.go)
	decoders sync.Pool

	conns    sync.Map // *deviceConn → struct{}
	draining atomic.Bool

	slotMu   sync.Mutex
	slots    map[telemetry.DeviceID]*deviceSlot // devices with sockets or a refilling bucket
	reserved int                                // sockets upgraded or being upgraded

	connections                                  atomic.Int64
	upgrades, unauthorized, originRejected       atomic.Uint64
	frames, invalidFrames, overloaded            atomic.Uint64
	readingsAccepted, readingsRejected, acksSent atomic.Uint64
	deviceConnLimited, totalConnLimited          atomic.Uint64
	rateLimited, rateLimitClosed                 atomic.Uint64
	tooBig, inactiveClosed                       atomic.Uint64
	writeQueueFull                               atomic.Uint64
	resent                                       atomic.Uint64
	dedup                                        *dedup // nil: off
}

// NewWS returns the endpoint. auth may not be nil.
func NewWS(cfg WSConfig, auth Authenticator, next telemetry.Consumer, log *slog.Logger) *WS {
	cfg = cfg.withDefaults()
	w := &WS{cfg: cfg, auth: auth, next: next, log: log, slots: make(map[telemetry.DeviceID]*deviceSlot)}
	w.decoders.New = func() any { return payload.NewDecoder(cfg.Limits) }
	w.corkBufs = newCorkBufs()
	if cfg.DedupEntries > 0 {
		w.dedup = newDedup(cfg.DedupEntries, cfg.DedupWindow)
	}
	w.upgrader = gws.NewUpgrader(&wsEvents{w: w}, &gws.ServerOption{
		ReadMaxPayloadSize: cfg.MaxFrameSize,
		CheckUtf8Enabled:   true,
		Recovery:           gws.Recovery,
		Logger:             gwsLogger{log},
		NewSession:         func() gws.SessionStorage { return &connSession{} },
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
		DeviceConnLimited: w.deviceConnLimited.Load(), TotalConnLimited: w.totalConnLimited.Load(),
		RateLimited: w.rateLimited.Load(), RateLimitClosed: w.rateLimitClosed.Load(),
		TooBig: w.tooBig.Load(), InactiveClosed: w.inactiveClosed.Load(),
		WriteQueueFull: w.writeQueueFull.Load(), Resent: w.resent.Load(),
	}
}

func (w *WS) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if w.draining.Load() {
		telemetry.RefuseShuttingDown(rw)
		return
	}
	if w.cfg.CheckOrigin != nil && !w.cfg.CheckOrigin(r) {
		w.originRejected.Add(1)
		telemetry.RefuseOrigin(rw)
		return
	}
	id, err := w.auth.AuthenticateDevice(r.Context(), telemetry.BearerToken(r))
	if err != nil {
		w.unauthorized.Add(1)
		w.log.Debug("device authentication failed", "remote", r.RemoteAddr) // never the token
		telemetry.RefuseUnauthorized(rw, "device")
		return
	}
	// Limits are checked before the upgrade, so a refusal is a plain HTTP
	// answer the device can read.
	slot, status, code := w.acquire(id)
	if slot == nil {
		w.log.Debug("device connection refused", "device", id, "code", code, "remote", r.RemoteAddr)
		telemetry.WriteHTTPError(rw, status, code, "too many connections; retry later")
		return
	}
	// Hijacked here rather than by gws's Upgrade so that gws writes through
	// a corkConn (see wswriter.go); the handshake itself is gws's.
	raw, brw, err := http.NewResponseController(rw).Hijack()
	if err != nil {
		w.release(id, slot)
		return
	}
	out := &corkConn{Conn: raw, bufs: w.corkBufs}
	socket, err := w.upgrader.UpgradeFromConn(out, frameReader(raw, brw.Reader), r)
	if err != nil {
		w.release(id, slot)
		return // gws has answered the client and closed the connection
	}
	out.startFraming()
	w.upgrades.Add(1)
	c := &deviceConn{w: w, conn: socket, out: out, raw: raw, id: id, slot: slot}
	if w.dedup != nil {
		c.dedupSum = w.dedup.deviceSum(id)
	}
	c.flushFn = c.flush
	socket.Session().Store(sessionKey, c)
	go socket.ReadLoop() // OnClose releases the slot
}

// frameReader is the reader gws reads frames from: the hijacked connection
// raw, behind whatever net/http had already buffered from it (a client that
// sent a frame right behind its upgrade request).
func frameReader(raw io.Reader, buffered *bufio.Reader) *bufio.Reader {
	src := raw
	if n := buffered.Buffered(); n > 0 {
		b, _ := buffered.Peek(n)
		src = io.MultiReader(bytes.NewReader(bytes.Clone(b)), raw)
	}
	return bufio.NewReaderSize(src, 4<<10) // gws's default ReadBufferSize
}

// deviceSlot is a device's share of the limits: its open sockets and its
// frame-rate bucket, shared by all its sockets.
type deviceSlot struct {
	conns int // guarded by WS.slotMu

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

// acquire reserves a socket for id, or says why not (HTTP status, code).
func (w *WS) acquire(id telemetry.DeviceID) (*deviceSlot, int, string) {
	w.slotMu.Lock()
	defer w.slotMu.Unlock()
	if w.reserved >= w.cfg.MaxConns {
		w.totalConnLimited.Add(1)
		return nil, http.StatusServiceUnavailable, CodeServerBusy
	}
	s := w.slots[id]
	if s == nil {
		s = &deviceSlot{tokens: float64(w.cfg.FrameBurst), last: time.Now()}
		w.slots[id] = s
	}
	if s.conns >= w.cfg.MaxConnsPerDevice {
		w.deviceConnLimited.Add(1)
		return nil, http.StatusTooManyRequests, CodeTooManyConnections
	}
	s.conns++
	w.reserved++
	return s, 0, ""
}

func (w *WS) release(id telemetry.DeviceID, s *deviceSlot) {
	w.slotMu.Lock()
	defer w.slotMu.Unlock()
	s.conns--
	w.reserved--
	if s.conns == 0 && s.idle(time.Now(), w.cfg) {
		delete(w.slots, id)
	}
}

// idle reports whether the bucket has refilled, so that forgetting the slot
// changes nothing (a reconnect must not buy a fresh burst).
func (s *deviceSlot) idle(now time.Time, cfg WSConfig) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return cfg.FrameRate < 0 || s.tokens+now.Sub(s.last).Seconds()*cfg.FrameRate >= float64(cfg.FrameBurst)
}

// take removes a token from the bucket, or says how long until one is there.
func (s *deviceSlot) take(now time.Time, cfg WSConfig) (bool, time.Duration) {
	if cfg.FrameRate < 0 {
		return true, 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens = min(float64(cfg.FrameBurst), s.tokens+now.Sub(s.last).Seconds()*cfg.FrameRate)
	s.last = now
	if s.tokens >= 1 {
		s.tokens--
		return true, 0
	}
	return false, time.Duration((1 - s.tokens) / cfg.FrameRate * float64(time.Second))
}

// sweepSlots forgets devices without sockets whose bucket has refilled.
func (w *WS) sweepSlots() {
	now := time.Now()
	w.slotMu.Lock()
	defer w.slotMu.Unlock()
	for id, s := range w.slots {
		if s.conns == 0 && s.idle(now, w.cfg) {
			delete(w.slots, id)
		}
	}
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
// It returns once the close frames are written (or after a few seconds),
// so that a process exiting right after still tells its devices.
func (w *WS) Close() {
	w.draining.Store(true)
	var wg sync.WaitGroup
	w.conns.Range(func(k, _ any) bool {
		if done := k.(*deviceConn).close(telemetry.CloseGoingAway, "server shutting down"); done != nil {
			wg.Add(1)
			go func() { defer wg.Done(); <-done }()
		}
		return true
	})
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(3 * time.Second):
	}
}

// Run pings every socket each PingInterval until ctx is done.
func (w *WS) Run(ctx context.Context) error {
	t := time.NewTicker(w.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			w.conns.Range(func(k, _ any) bool {
				k.(*deviceConn).enqueue(outMsg{op: gws.OpcodePing})
				return true
			})
			w.sweepSlots()
		case <-ctx.Done():
			return nil
		}
	}
}

const sessionKey = "c"

type deviceConn struct {
	w          *WS
	conn       *gws.Conn
	out        *corkConn // what conn writes to
	raw        net.Conn  // the hijacked connection under out
	id         telemetry.DeviceID
	dedupSum   uint64 // the device's part of its frames' dedup keys
	closed     atomic.Bool
	slot       *deviceSlot
	overloaded int // consecutive overloaded frames; read loop only
	limited    int // consecutive rate-limited frames; read loop only
	// deadlineRenewed is when extendDeadline last moved the deadline; read loop only.
	deadlineRenewed time.Time

	// Outgoing messages (wswriter.go), guarded by outMu.
	outMu        sync.Mutex
	pending      []outMsg
	pendingBytes int
	flushing     bool // a flush is scheduled or running
	aborted      bool // the pending list overflowed; nothing more is sent
	flushFn      func()
	spare        []outMsg // the other pending list; flush only (gws's write queue)

	// Answers waiting for earlier frames' (wsanswers.go), guarded by ansMu.
	ansMu   sync.Mutex
	answers []*answerSlot
}

// close sends a close frame behind the frames already queued (acks first);
// the returned channel is closed once it is written (nil if the socket was
// already closing). It never blocks the caller.
//
// The TCP connection is not closed here: the read loop keeps reading (and
// ignoring frames) until the device answers the close or the 2 s deadline
// passes. Closing at once would make the kernel answer frames still in
// flight with a reset, which can destroy the close frame before the device
// reads it — the device would then see no close code at all.
func (c *deviceConn) close(code uint16, reason string) <-chan struct{} {
	if c.closed.Swap(true) {
		return nil
	}
	done := make(chan struct{})
	// The deadline frees a write stuck on a dead peer and ends the wait for
	// the device's answer.
	_ = c.conn.SetDeadline(time.Now().Add(2 * time.Second))
	payload := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(reason)), code)
	payload = append(payload, reason...)
	c.enqueue(outMsg{op: gws.OpcodeCloseConnection, payload: payload, done: done})
	return done
}

// send queues a text message behind those already queued.
func (c *deviceConn) send(b []byte) {
	c.enqueue(outMsg{op: gws.OpcodeText, payload: b})
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

// errorMsg is an error frame; its messages are clipped to
// telemetry.MaxMessageLen (a parser error can repeat the input).
func errorMsg(seq *uint64, code, msg string, retryAfter time.Duration, rejected []telemetry.Rejection) []byte {
	b, err := json.Marshal(errorFrame{Error: errorFrameBody{
		Seq: seq, Code: code, Message: telemetry.ClipMessage(msg), RetryAfterMS: retryAfter.Milliseconds(),
		Rejected: telemetry.ClipRejections(rejected),
	}})
	if err != nil {
		return nil
	}
	return b
}

// appendAck appends {"ack":seq}, the answer to a stored frame.
func appendAck(b []byte, seq uint64) []byte {
	b = append(b, `{"ack":`...)
	b = strconv.AppendUint(b, seq, 10)
	return append(b, '}')
}

// sendAck queues {"ack":seq} behind the messages already queued; the
// writer formats it (wswriter.go).
func (c *deviceConn) sendAck(seq uint64) {
	c.w.acksSent.Add(1)
	c.enqueue(outMsg{op: gws.OpcodeText, ack: true, seq: seq})
}

type wsEvents struct {
	gws.BuiltinEventHandler
	w *WS
}

func connOf(socket *gws.Conn) *deviceConn {
	if s, ok := socket.Session().(*connSession); ok {
		return s.c.Load()
	}
	return nil
}

// connSession is a socket's gws session: it holds only the socket's
// deviceConn (under sessionKey). gws's default session is a map behind a
// mutex, and every frame looks its deviceConn up; this is one atomic load.
type connSession struct{ c atomic.Pointer[deviceConn] }

func (s *connSession) Len() int {
	if s.c.Load() == nil {
		return 0
	}
	return 1
}

func (s *connSession) Load(key string) (any, bool) {
	if c := s.c.Load(); key == sessionKey && c != nil {
		return c, true
	}
	return nil, false
}

func (s *connSession) Delete(key string) {
	if key == sessionKey {
		s.c.Store(nil)
	}
}

// Store keeps value only under sessionKey, and only a *deviceConn: nothing
// else is stored in a device socket's session.
func (s *connSession) Store(key string, value any) {
	if c, ok := value.(*deviceConn); ok && key == sessionKey {
		s.c.Store(c)
	}
}

func (s *connSession) Range(f func(key string, value any) bool) {
	if c := s.c.Load(); c != nil {
		f(sessionKey, c)
	}
}

func (e *wsEvents) deadline() time.Time { return time.Now().Add(2 * e.w.cfg.PingInterval) }

func (e *wsEvents) OnOpen(socket *gws.Conn) {
	_ = socket.SetDeadline(e.deadline())
	if c := connOf(socket); c != nil {
		e.w.conns.Store(c, struct{}{})
		e.w.connections.Add(1)
		e.checkActive(c)
	}
}

// checkActive closes c with 1008 if its device is no longer active.
func (e *wsEvents) checkActive(c *deviceConn) bool {
	if e.w.cfg.Devices == nil || e.w.cfg.Devices.Active(c.id) {
		return true
	}
	if !c.closed.Load() {
		e.w.inactiveClosed.Add(1)
	}
	c.close(telemetry.ClosePolicy, "credential revoked")
	return false
}

func (e *wsEvents) OnClose(socket *gws.Conn, err error) {
	// gws reports a frame over ReadMaxPayloadSize as its 1009 status code.
	var sc interface{ Uint16() uint16 }
	if errors.As(err, &sc) && sc.Uint16() == telemetry.CloseTooBig {
		e.w.tooBig.Add(1)
	}
	if c := connOf(socket); c != nil {
		c.closed.Store(true)
		if _, ok := e.w.conns.LoadAndDelete(c); ok {
			e.w.connections.Add(-1)
		}
		e.w.release(c.id, c.slot)
	}
}

func (e *wsEvents) OnPing(socket *gws.Conn, payload []byte) {
	e.extendDeadline(socket, connOf(socket), time.Now())
	_ = socket.WritePong(payload)
}

func (e *wsEvents) OnPong(socket *gws.Conn, _ []byte) {
	e.extendDeadline(socket, connOf(socket), time.Now())
}

// extendDeadline pushes the socket's deadline to two ping intervals from
// now, as every frame from the device proves it alive. Read loop only. It
// is renewed only once an eighth of the interval has passed since the last
// renewal — per frame, resetting the netpoller's timer was a measurable
// share of a small frame's cost — so a silent socket is closed after 1.875
// to 2 intervals. A closing socket keeps its short close deadline.
func (e *wsEvents) extendDeadline(socket *gws.Conn, c *deviceConn, now time.Time) {
	switch {
	case c == nil:
		_ = socket.SetDeadline(now.Add(2 * e.w.cfg.PingInterval))
	case c.closed.Load() || now.Sub(c.deadlineRenewed) < e.w.cfg.PingInterval/8:
	default:
		c.deadlineRenewed = now
		_ = socket.SetDeadline(now.Add(2 * e.w.cfg.PingInterval))
	}
}

func (e *wsEvents) OnMessage(socket *gws.Conn, message *gws.Message) {
	w := e.w
	received := time.Now()
	c := connOf(socket)
	e.extendDeadline(socket, c, received)
	if c == nil || c.closed.Load() {
		message.Close()
		return
	}
	// Text frames carry JSON or line protocol, binary frames CBOR (its
	// detection, payload.IsCBOR, is what the decoder goes by).
	if message.Opcode != gws.OpcodeText && (message.Opcode != gws.OpcodeBinary || !payload.IsCBOR(message.Bytes())) {
		message.Close()
		c.close(telemetry.CloseUnsupported, "send JSON or line protocol in text frames, CBOR in binary frames")
		return
	}
	if !e.checkActive(c) {
		message.Close()
		return
	}
	w.frames.Add(1)
	allowed, wait := c.slot.take(received, w.cfg)
	dec := w.decoders.Get().(*payload.Decoder)
	msg, err := dec.Decode(message.Bytes(), received)
	w.decoders.Put(dec)
	var dk dedupKey
	dedupe := err == nil && msg.HasSeq && w.dedup != nil
	if dedupe {
		dk = w.dedup.key(c.dedupSum, msg.Seq, message.Bytes())
	}
	message.Close() // the decoder copied what it keeps
	// Decoded first only to name the frame (seq) in the answer.
	if !allowed {
		w.rateLimited.Add(1)
		c.limited++
		c.send(errorMsg(answerSeq(msg), CodeRateLimited, "frame rate limit exceeded; resend later", max(wait, time.Millisecond), nil)) // back-pressure: at once (wsanswers.go)
		if c.limited >= w.cfg.RateLimitClose {
			w.rateLimitClosed.Add(1)
			w.log.Info("device over its frame rate; closing", "device", c.id)
			c.close(telemetry.CloseTryLater, "rate limit exceeded")
		}
		return
	}
	c.limited = 0
	if err != nil {
		w.invalidFrames.Add(1)
		code := CodeInvalidPayload
		if errors.Is(err, payload.ErrTooManyReadings) {
			code = CodeTooManyReadings
		}
		c.answerNow(errorMsg(answerSeq(msg), code, err.Error(), 0, nil))
		return
	}
	if w.draining.Load() {
		c.send(errorMsg(answerSeq(msg), CodeShuttingDown, "server is shutting down; resend after reconnecting", 0, nil))
		return
	}
	wf := &wsFrame{
		frame: telemetry.Frame{
			Device:   c.id,
			Readings: msg.Readings,
			Invalid:  msg.Invalid,
			Skipped:  msg.Skipped,
			Received: received,
		},
		wait: waitBound{d: w.cfg.OverloadWait},
		conn: c,
		seq:  msg.Seq,
	}
	if msg.HasSeq {
		wf.frame.Done = wf.finish
	}
	c.reserve(&wf.slot, msg.HasSeq)
	if dedupe {
		verdict, ticket, answer := w.dedup.check(dk, received, wf)
		switch verdict {
		case dedupStored:
			w.resent.Add(1)
			c.resendFinal(&wf.slot, wf.seq, answer)
			return
		case dedupWaiting:
			w.resent.Add(1)
			c.answerPre(&wf.slot)
			return
		}
		wf.dedup, wf.ticket = w.dedup, ticket
	}
	rcpt, err := w.next.Consume(&wf.wait, &wf.frame)
	if wf.dedup != nil {
		if err != nil {
			wf.dedup.done(wf.ticket, false, nil) // nothing of it was accepted
		} else if len(rcpt.Rejected) > 0 {
			wf.dedup.rejected(wf.ticket, rcpt.Rejected)
		}
	}
	wf.wait.stop()
	// wf lives on until the ack (Done is its method); the readings' memory
	// need not: the pipeline has encoded them and publishes its own slice.
	wf.frame.Readings, wf.frame.Invalid, wf.frame.Skipped = nil, nil, nil
	switch {
	case errors.Is(err, telemetry.ErrOverloaded):
		w.overloaded.Add(1)
		c.overloaded++
		c.answerFinal(&wf.slot)
		c.send(errorMsg(answerSeq(msg), CodeOverloaded, "the service is overloaded; resend later", time.Second, nil))
		if c.overloaded >= 3 {
			c.close(telemetry.CloseTryLater, "overloaded")
		}
		return
	case errors.Is(err, telemetry.ErrClosed):
		c.answerFinal(&wf.slot)
		c.send(errorMsg(answerSeq(msg), CodeShuttingDown, "server is shutting down; resend after reconnecting", 0, nil))
		return
	case err != nil:
		w.log.Error("consume failed", "device", c.id, "error", err)
		c.answerFinal(&wf.slot)
		c.close(telemetry.CloseInternal, "internal error")
		return
	}
	c.overloaded = 0
	w.readingsAccepted.Add(uint64(rcpt.Accepted))
	w.readingsRejected.Add(uint64(len(rcpt.Rejected)))
	if len(rcpt.Rejected) > 0 {
		c.answerPre(&wf.slot, errorMsg(answerSeq(msg), CodeRejected, strconv.Itoa(len(rcpt.Rejected))+" reading(s) rejected", 0, rcpt.Rejected))
	} else {
		c.answerPre(&wf.slot)
	}
}

// wsFrame is a device frame on its way through the pipeline: the frame,
// the context it is consumed under and what its answer needs, in one
// allocation.
type wsFrame struct {
	frame  telemetry.Frame
	wait   waitBound
	conn   *deviceConn
	seq    uint64
	slot   answerSlot // its place in the socket's answer order
	dedup  *dedup     // non-nil: remembered under ticket (wsdedup.go)
	ticket uint64
}

func (wf *wsFrame) finish(o telemetry.Outcome) {
	if wf.dedup != nil {
		wf.dedup.done(wf.ticket, o.Err == nil, o.Rejected)
	}
	wf.conn.finish(&wf.slot, wf.seq, o)
}

// resendDone answers wf, a resend that waited for its original's outcome.
func (wf *wsFrame) resendDone(stored bool, a dedupAnswer) {
	wf.conn.finishResend(&wf.slot, wf.seq, stored, a)
}

// finishResend answers a resend that waited for its original's outcome
// as the original was answered.
func (c *deviceConn) finishResend(s *answerSlot, seq uint64, stored bool, a dedupAnswer) {
	if !stored {
		c.answerPost(s, notStoredMsg(seq))
		return
	}
	var post [][]byte
	if len(a.rejected) > 0 {
		post = append(post, rejectedMsg(seq, a.rejected))
	}
	if len(a.refused) > 0 {
		post = append(post, storageRejectedMsg(seq, a.refused))
	}
	c.ackPost(s, seq, post...)
}

// resendFinal answers a resend of a stored frame as its original was
// answered: the rejections of its validation, its ack, storage's refusals.
func (c *deviceConn) resendFinal(s *answerSlot, seq uint64, a dedupAnswer) {
	var pre, post [][]byte
	if len(a.rejected) > 0 {
		pre = append(pre, rejectedMsg(seq, a.rejected))
	}
	if len(a.refused) > 0 {
		post = append(post, storageRejectedMsg(seq, a.refused))
	}
	c.ackFinal(s, seq, pre, post)
}

// rejectedMsg is the error frame naming the readings validation refused.
func rejectedMsg(seq uint64, rejected []telemetry.Rejection) []byte {
	return errorMsg(&seq, CodeRejected, strconv.Itoa(len(rejected))+" reading(s) rejected", 0, rejected)
}

// notStoredMsg is the error frame of a frame whose readings failed in
// storage. (seq is copied here so that only this path pays for its
// escape to the heap.)
func notStoredMsg(seq uint64) []byte {
	return errorMsg(&seq, CodeNotStored, "readings were not stored; resend them", time.Second, nil)
}

// answerSeq is the seq an answer to m names: nil when m has none. Only
// answers need it as a pointer, so only they pay for its allocation.
func answerSeq(m payload.Message) *uint64 {
	if !m.HasSeq {
		return nil
	}
	seq := m.Seq
	return &seq
}

// finish answers a frame once the pipeline is done with it, behind the
// answers of earlier frames.
func (c *deviceConn) finish(s *answerSlot, seq uint64, o telemetry.Outcome) {
	if o.Err != nil {
		c.answerPost(s, notStoredMsg(seq))
		return
	}
	if len(o.Rejected) > 0 {
		c.ackPost(s, seq, storageRejectedMsg(seq, o.Rejected))
		return
	}
	c.ackPost(s, seq)
}

// storageRejectedMsg is the error frame naming the readings storage refused.
func storageRejectedMsg(seq uint64, rejected []telemetry.Rejection) []byte {
	return errorMsg(&seq, CodeRejected, strconv.Itoa(len(rejected))+" reading(s) refused by storage", 0, rejected)
}

// gwsLogger routes gws's internal errors (e.g. recovered panics) to slog.
type gwsLogger struct{ log *slog.Logger }

func (l gwsLogger) Error(v ...any) { l.log.Error("websocket", "detail", v) }
