package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
)

// dialer opens client WebSockets, spreading source addresses over
// 127.0.0.2.. when many connections would exhaust one address's ports.
type dialer struct {
	sources []net.IP
	next    atomic.Uint64
}

func newDialer(conns int) *dialer {
	d := &dialer{}
	// ~28 000 ephemeral ports per source address; TIME_WAIT of earlier
	// phases counts against it too.
	if n := conns/15000 + 1; n > 1 {
		for i := range n {
			d.sources = append(d.sources, net.IPv4(127, 0, 0, byte(2+i)))
		}
	}
	return d
}

// dial connects to url (ws://…) with a bearer token and starts the read
// loop. The handler gets every event.
func (d *dialer) dial(url, token string, h gws.Event) (*gws.Conn, error) {
	header := http.Header{}
	if token != "" {
		header.Set("Authorization", "Bearer "+token)
	}
	var local net.Addr
	if len(d.sources) > 0 {
		local = &net.TCPAddr{IP: d.sources[d.next.Add(1)%uint64(len(d.sources))]}
	}
	conn, resp, err := gws.NewClient(h, &gws.ClientOption{
		Addr:             url,
		RequestHeader:    header,
		ReadBufferSize:   1024, // the harness holds many sockets; frames are small
		HandshakeTimeout: 15 * time.Second,
		NewDialer: func() (gws.Dialer, error) {
			return &net.Dialer{Timeout: 15 * time.Second, LocalAddr: local}, nil
		},
	})
	if err != nil {
		if resp != nil && resp.Body != nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
			resp.Body.Close()
			return nil, fmt.Errorf("%s: %w (%s %s)", url, err, resp.Status, bytes.TrimSpace(b))
		}
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	go conn.ReadLoop()
	return conn, nil
}

// dialMany opens n connections with parallel handshakes; open(i) dials the
// i-th. It stops at the first error.
func dialMany(ctx context.Context, n, parallel int, open func(i int) error) error {
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range min(parallel, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := open(i); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					next.Store(int64(n)) // stop the others
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// answers are what device clients got back, shared by a scenario's
// connections.
type answers struct {
	sent, acked atomic.Int64
	skipped     atomic.Int64 // open loop: frame due while the window was full
	ackLatency  hist

	mu     sync.Mutex
	errors map[string]int64 // error frames by code
}

func newAnswers() *answers { return &answers{errors: map[string]int64{}} }

func (a *answers) addError(code string) {
	a.mu.Lock()
	a.errors[code]++
	a.mu.Unlock()
}

func (a *answers) errorCounts() map[string]int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]int64, len(a.errors))
	for k, v := range a.errors {
		out[k] = v
	}
	return out
}

func (a *answers) refused() int64 {
	var n int64
	for code, v := range a.errorCounts() {
		if code != "rejected" {
			n += v
		}
	}
	return n
}

// deviceConn is one device WebSocket that sends frames with a window of
// unanswered frames and counts the answers ({"ack":seq} or an error frame).
type deviceConn struct {
	gws.BuiltinEventHandler
	a      *answers
	conn   *gws.Conn
	window chan struct{} // one token per unanswered frame
	sentAt []atomic.Int64
	closed chan struct{}
	once   sync.Once
	err    error
}

func newDeviceConn(a *answers, window int) *deviceConn {
	return &deviceConn{a: a, window: make(chan struct{}, window), sentAt: make([]atomic.Int64, window), closed: make(chan struct{})}
}

func (c *deviceConn) release() {
	select {
	case <-c.window:
	default:
	}
}

func (c *deviceConn) OnMessage(_ *gws.Conn, m *gws.Message) {
	b := m.Bytes()
	switch {
	case bytes.HasPrefix(b, []byte(`{"ack":`)):
		if seq, _, ok := scanInt(b, `{"ack":`, 0); ok {
			if t := c.sentAt[seq%int64(len(c.sentAt))].Load(); t != 0 {
				c.a.ackLatency.record(time.Duration(time.Now().UnixNano() - t))
			}
		}
		c.a.acked.Add(1)
		c.release()
	case bytes.HasPrefix(b, []byte(`{"error":`)):
		code := errorCode(b)
		c.a.addError(code)
		if code != "rejected" { // "rejected" (some readings) is followed by the ack
			c.release()
		}
	}
	m.Close()
}

func (c *deviceConn) OnClose(_ *gws.Conn, err error) {
	c.once.Do(func() {
		c.err = err
		close(c.closed)
	})
}

func (c *deviceConn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// outstanding is the number of unanswered frames.
func (c *deviceConn) outstanding() int { return len(c.window) }

// send writes frame seq once the window has room (closed loop).
func (c *deviceConn) send(ctx context.Context, seq int64, frame []byte) error {
	select {
	case c.window <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.closed:
		return errClosed
	}
	return c.write(seq, frame)
}

// trySend writes frame seq if the window has room (open loop) and reports
// whether it did.
func (c *deviceConn) trySend(seq int64, frame []byte) (bool, error) {
	select {
	case c.window <- struct{}{}:
	default:
		return false, nil
	}
	return true, c.write(seq, frame)
}

func (c *deviceConn) write(seq int64, frame []byte) error {
	if seq >= 0 {
		c.sentAt[seq%int64(len(c.sentAt))].Store(time.Now().UnixNano())
	}
	if err := c.conn.WriteMessage(gws.OpcodeText, frame); err != nil {
		c.release()
		return err
	}
	c.a.sent.Add(1)
	return nil
}

var errClosed = errors.New("connection closed")

// closeNow drops the TCP connection without a close handshake.
func closeNow(c *gws.Conn) {
	if c != nil {
		_ = c.NetConn().Close()
	}
}

// liveConn is a dashboard WebSocket (/v1/live, or the raw broadcaster):
// it subscribes and counts the readings it receives (deliveries; the
// service may coalesce several readings into one frame) and the frames;
// with record set it reports, per reading, the arrival time and now − the
// reading's "ts" (device time).
type liveConn struct {
	gws.BuiltinEventHandler
	deliveries *atomic.Int64
	frames     atomic.Int64
	bytes      atomic.Int64 // of readings frames
	record     func(now int64, lat time.Duration)
	snapshot   chan struct{}
	once       sync.Once
	closed     atomic.Bool
	gone       chan struct{} // closed by OnClose
	goneOnce   sync.Once
}

func newLiveConn(deliveries *atomic.Int64, record func(now int64, lat time.Duration)) *liveConn {
	return &liveConn{deliveries: deliveries, record: record, snapshot: make(chan struct{}), gone: make(chan struct{})}
}

func (c *liveConn) OnMessage(_ *gws.Conn, m *gws.Message) {
	b := m.Bytes()
	switch {
	case bytes.HasPrefix(b, []byte(`{"type":"readings"`)):
		c.frames.Add(1)
		c.bytes.Add(int64(len(b)))
		c.deliveries.Add(int64(max(bytes.Count(b, []byte(`,"ts":`)), 1)))
		if c.record != nil {
			now := time.Now().UnixNano()
			for i := 0; ; {
				ts, next, ok := scanInt(b, `"ts":`, i)
				if !ok {
					break
				}
				c.record(now, time.Duration(now-ts))
				i = next
			}
		}
	case bytes.HasPrefix(b, []byte(`{"type":"snapshot"`)):
		c.once.Do(func() { close(c.snapshot) })
	}
	m.Close()
}

func (c *liveConn) OnClose(*gws.Conn, error) {
	c.closed.Store(true)
	c.goneOnce.Do(func() { close(c.gone) })
}

// keepLive holds a dashboard subscribed to devices on url until ctx ends,
// reconnecting (and counting it) whenever the server drops it — as a
// browser dashboard would. It returns once the first subscription is in
// place; the returned channel is closed when it has stopped.
func keepLive(ctx context.Context, d *dialer, url, token string, devices []string, record func(int64, time.Duration), drops *atomic.Int64) (<-chan struct{}, error) {
	var deliveries atomic.Int64
	open := func() (*liveConn, *gws.Conn, error) {
		lc := newLiveConn(&deliveries, record)
		conn, err := d.dial(url, token, lc)
		if err != nil {
			return nil, nil, err
		}
		if err := lc.subscribe(ctx, conn, devices); err != nil {
			closeNow(conn)
			return nil, nil, err
		}
		return lc, conn, nil
	}
	lc, conn, err := open()
	if err != nil {
		return nil, err
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-ctx.Done():
				closeNow(conn)
				return
			case <-lc.gone:
			}
			drops.Add(1)
			for {
				if lc, conn, err = open(); err == nil || ctx.Err() != nil {
					break
				}
				sleepCtx(ctx, 50*time.Millisecond)
			}
			if ctx.Err() != nil {
				if conn != nil {
					closeNow(conn)
				}
				return
			}
		}
	}()
	return stopped, nil
}

// subscribe sends a subscription for devices (all when empty) and waits
// for its snapshot.
func (c *liveConn) subscribe(ctx context.Context, conn *gws.Conn, devices []string) error {
	msg := []byte(`{"op":"subscribe","id":"s"`)
	if len(devices) > 0 {
		msg = append(msg, `,"devices":[`...)
		for i, d := range devices {
			if i > 0 {
				msg = append(msg, ',')
			}
			msg = append(msg, '"')
			msg = append(msg, d...)
			msg = append(msg, '"')
		}
		msg = append(msg, ']')
	}
	msg = append(msg, '}')
	if err := conn.WriteMessage(gws.OpcodeText, msg); err != nil {
		return err
	}
	select {
	case <-c.snapshot:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(30 * time.Second):
		return errors.New("no snapshot within 30s of subscribing")
	}
}

// echoConn measures round trips to the raw echo endpoint: each frame
// carries its send time as "ts".
type echoConn struct {
	gws.BuiltinEventHandler
	record func(now int64, lat time.Duration)
}

func (c *echoConn) OnMessage(_ *gws.Conn, m *gws.Message) {
	now := time.Now().UnixNano()
	if ts, _, ok := scanInt(m.Bytes(), `"ts":`, 0); ok {
		c.record(now, time.Duration(now-ts))
	}
	m.Close()
}
