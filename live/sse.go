package live

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/telemetryd/telemetryd/telemetry"
)

// sseRetry is the reconnection delay suggested to EventSource clients.
const sseRetry = 2 * time.Second

// sseWriteTimeout bounds one write to an SSE stream: a peer that stops
// reading is cut off instead of holding its handler forever.
const sseWriteTimeout = 10 * time.Second

// SSE returns the handler of GET /v1/live/sse: the same subscription as a
// /v1/live WebSocket, for networks whose proxies block WebSockets, carried
// as Server-Sent Events. The subscription comes from the query string:
//
//	devices=a,b  measurements=m1,m2  fields=f1,f2  tag=site=plant-3 (repeatable)
//	presence=include|only  sub=<id> (default "live")
//
// Every message is the same JSON as on the WebSocket, sent as one
// "event: <type>" (snapshot, readings, presence) and one "data:" line. The
// stream starts with a retry hint, carries a comment as heartbeat every
// PingInterval, and is flushed after every message.
//
// It shares the Dashboards' configuration: origin check, viewer
// authentication (the token goes in ?token=, since EventSource cannot set
// headers), the viewer's scope, and MaxPending: a stream that falls further
// behind is ended (EventSource then reconnects and its new snapshot brings
// it up to date). Streams end when Run ends.
func (d *Dashboards) SSE() http.Handler { return sseHandler{d} }

type sseHandler struct{ d *Dashboards }

// sseClient is one stream; it implements Client. Send is called by the Hub
// only; the handler goroutine owns the response.
type sseClient struct {
	viewerID string
	queue    chan []byte
	bytes    atomic.Int64 // of the frames in queue
	maxBytes int64
	gone     chan struct{} // closed when the Hub gives up on the client, or on Disconnect
	once     sync.Once
}

func (c *sseClient) end() { c.once.Do(func() { close(c.gone) }) }

// disconnectSSE ends every SSE stream of viewer id (see Disconnect).
func (d *Dashboards) disconnectSSE(viewerID string) {
	d.sseConns.Range(func(k, _ any) bool {
		if c := k.(*sseClient); c.viewerID == viewerID {
			c.end()
		}
		return true
	})
}

// Send implements Client: it queues frame unless the queue holds
// MaxPending frames or would pass MaxPendingBytes (a frame always fits an
// empty queue), like a socket's.
func (c *sseClient) Send(frame []byte) bool {
	select {
	case <-c.gone:
		return false
	default:
	}
	size := int64(len(frame))
	if b := c.bytes.Add(size); b > c.maxBytes && b > size {
		c.bytes.Add(-size)
		return false
	}
	select {
	case c.queue <- frame:
		return true
	default:
		c.bytes.Add(-size)
		return false
	}
}

// Room implements Client: the queue is at most half full.
func (c *sseClient) Room() bool {
	select {
	case <-c.gone:
		return false
	default:
	}
	return len(c.queue) <= cap(c.queue)/2 && c.bytes.Load() <= c.maxBytes/2
}

// Drop implements Client: the stream ends (SlowDisconnect).
func (c *sseClient) Drop() { c.end() }

func (h sseHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	d := h.d
	viewer, ok := d.admit(w, r)
	if !ok {
		return
	}
	id, filter, err := parseSSEFilter(r)
	if err != nil {
		telemetry.WriteHTTPError(w, http.StatusBadRequest, telemetry.CodeInvalidRequest, err.Error())
		return
	}
	filter.Scope = viewer.Scope
	opts, err := sseOptions(r) // sseresume.go
	if err != nil {
		telemetry.WriteHTTPError(w, http.StatusBadRequest, telemetry.CodeInvalidRequest, err.Error())
		return
	}

	rc := http.NewResponseController(w)
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	write := func(b []byte) error {
		_ = rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout))
		if _, err := w.Write(b); err != nil {
			return err
		}
		return rc.Flush()
	}
	if err := write([]byte("retry: " + strconv.FormatInt(sseRetry.Milliseconds(), 10) + "\n\n")); err != nil {
		return
	}

	c := &sseClient{viewerID: viewer.ID, queue: make(chan []byte, d.cfg.MaxPending), maxBytes: int64(d.cfg.MaxPendingBytes), gone: make(chan struct{})}
	d.sseCount.Add(1)
	defer d.sseCount.Add(-1)
	d.sseConns.Store(c, struct{}{})
	defer d.sseConns.Delete(c)
	// A revocation may race the request: check once registered, so that a
	// later Disconnect finds the stream.
	if d.cfg.ViewerActive != nil && viewer.ID != "" && !d.cfg.ViewerActive(viewer.ID) {
		return
	}
	d.hub.SubscribeWith(r.Context(), c, id, filter, opts)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		d.hub.Detach(ctx, c)
	}()

	heartbeat := time.NewTicker(d.cfg.PingInterval)
	defer heartbeat.Stop()
	var buf []byte
	for {
		select {
		case frame := <-c.queue:
			taken := int64(len(frame))
			buf = appendSSEEvent(buf[:0], frame)
			// Send what else is waiting in the same write and flush.
		more:
			for len(buf) < 64<<10 {
				select {
				case f := <-c.queue:
					taken += int64(len(f))
					buf = appendSSEEvent(buf, f)
				default:
					break more
				}
			}
			err := write(buf)
			c.bytes.Add(-taken)
			if err != nil {
				return
			}
		case <-heartbeat.C:
			if err := write([]byte(": ping\n\n")); err != nil {
				return
			}
		case <-c.gone:
			d.log.Info("sse stream ended: too slow, or the viewer was disconnected", "viewer", viewer.Name)
			return
		case <-d.shutdown:
			return
		case <-r.Context().Done():
			return
		}
	}
}

// appendSSEEvent appends one event: "event: <type>" from the message's
// leading {"type":"…"} and the message as data. Messages are compact JSON
// with no raw newline; one would still be framed correctly, as several
// data lines.
func appendSSEEvent(dst, msg []byte) []byte {
	if typ, ok := messageType(msg); ok {
		dst = append(dst, "event: "...)
		dst = append(dst, typ...)
		dst = append(dst, '\n')
	}
	if pos, ok := messagePos(msg); ok { // sseresume.go
		dst = append(dst, "id: "...)
		dst = append(dst, pos...)
		dst = append(dst, '\n')
	}
	for {
		line, rest, found := bytes.Cut(msg, []byte{'\n'})
		dst = append(dst, "data: "...)
		dst = append(dst, bytes.TrimSuffix(line, []byte{'\r'})...)
		dst = append(dst, '\n')
		if !found {
			break
		}
		msg = rest
	}
	return append(dst, '\n')
}

// messageType reads the type of a message the Hub encoded, which always
// starts with {"type":"<word>".
func messageType(msg []byte) ([]byte, bool) {
	const head = `{"type":"`
	if !bytes.HasPrefix(msg, []byte(head)) {
		return nil, false
	}
	rest := msg[len(head):]
	end := bytes.IndexByte(rest, '"')
	if end <= 0 || end > 32 {
		return nil, false
	}
	for _, c := range rest[:end] {
		if (c < 'a' || c > 'z') && c != '_' {
			return nil, false
		}
	}
	return rest[:end], true
}

// parseSSEFilter reads a subscription from the query string, with the limits
// of a WebSocket subscribe message.
func parseSSEFilter(r *http.Request) (string, Filter, error) {
	q := r.URL.Query()
	list := func(name string) []string {
		var out []string
		for _, v := range q[name] {
			for s := range strings.SplitSeq(v, ",") {
				if s = strings.TrimSpace(s); s != "" {
					out = append(out, s)
				}
			}
		}
		return out
	}
	m := clientMessage{
		Op:           "subscribe",
		ID:           q.Get("sub"),
		Devices:      list("devices"),
		Measurements: list("measurements"),
		Fields:       list("fields"),
		Presence:     PresenceMode(q.Get("presence")),
	}
	if m.ID == "" {
		m.ID = "live"
	}
	for _, kv := range q["tag"] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" || v == "" {
			return "", Filter{}, errors.New(`tag must be "key=value"`)
		}
		if m.Tags == nil {
			m.Tags = map[string]string{}
		}
		m.Tags[k] = v
	}
	if err := m.validate(); err != nil {
		return "", Filter{}, err
	}
	return m.ID, Filter{Devices: m.Devices, Measurements: m.Measurements, Fields: m.Fields, Tags: m.Tags, Presence: m.Presence}, nil
}

// Interface guard: SSE streams are Hub clients like sockets.
var _ Client = (*sseClient)(nil)
