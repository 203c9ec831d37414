package ingest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"github.com/telemetryd/telemetryd/internal/testsupport"
	"github.com/telemetryd/telemetryd/telemetry"
)

// countConn is the server side of a device socket as accepted: it counts
// write syscalls' worth of Writes and can hold them at a gate.
type countConn struct {
	net.Conn
	writes    atomic.Int64
	mu        sync.Mutex
	gate      chan struct{} // non-nil: Write waits until it is closed
	closed    chan struct{}
	closeOnce sync.Once
}

func (c *countConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	g := c.gate
	c.mu.Unlock()
	if g != nil {
		select {
		case <-g:
		case <-c.closed:
			return 0, net.ErrClosed
		}
	}
	c.writes.Add(1)
	return c.Conn.Write(p)
}

func (c *countConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// hold makes the following Writes wait until the returned func is called.
func (c *countConn) hold() (release func()) {
	g := make(chan struct{})
	c.mu.Lock()
	c.gate = g
	c.mu.Unlock()
	return func() { close(g) }
}

type countListener struct {
	net.Listener
	conns chan *countConn
}

func (l *countListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	cc := &countConn{Conn: c, closed: make(chan struct{})}
	l.conns <- cc
	return cc, nil
}

type oneDevice struct{}

func (oneDevice) AuthenticateDevice(context.Context, string) (telemetry.DeviceID, error) {
	return "dev-1", nil
}

// clientEvent is what the device saw: a text message, or the end of the
// socket (closeCode 0: no close frame).
type clientEvent struct {
	text      string
	closed    bool
	closeCode uint16
	writes    int64 // the server's writes when the device got this
}

type recordingClient struct {
	gws.BuiltinEventHandler
	server *countConn
	events chan clientEvent
}

func (h *recordingClient) OnMessage(_ *gws.Conn, m *gws.Message) {
	h.events <- clientEvent{text: string(m.Bytes()), writes: h.server.writes.Load()}
	m.Close()
}

func (h *recordingClient) OnClose(_ *gws.Conn, err error) {
	ev := clientEvent{closed: true, writes: h.server.writes.Load()}
	var ce *gws.CloseError
	if errors.As(err, &ce) {
		ev.closeCode = ce.Code
	}
	h.events <- ev
}

type wsHarness struct {
	t      *testing.T
	w      *WS
	frames chan *telemetry.Frame
	server *countConn
	client *gws.Conn
	events chan clientEvent
}

func newWSHarness(t *testing.T) *wsHarness {
	t.Helper()
	h := &wsHarness{t: t, frames: make(chan *telemetry.Frame, 1024), events: make(chan clientEvent, 2*maxPendingMsgs)}
	consumer := telemetry.ConsumerFunc(func(_ context.Context, f *telemetry.Frame) (telemetry.Receipt, error) {
		h.frames <- f
		return telemetry.Receipt{Accepted: len(f.Readings)}, nil
	})
	h.w = NewWS(WSConfig{FrameRate: -1}, oneDevice{}, consumer, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countListener{Listener: ln, conns: make(chan *countConn, 1)}
	srv := httptest.NewUnstartedServer(h.w)
	srv.Listener = cl
	srv.Start()
	t.Cleanup(srv.Close)

	rc := &recordingClient{events: h.events}
	dialed := make(chan *countConn, 1)
	go func() { dialed <- <-cl.conns }()
	client, _, err := gws.NewClient(rc, &gws.ClientOption{
		Addr:          "ws://" + ln.Addr().String() + "/v1/ingest",
		RequestHeader: http.Header{"Authorization": {"Bearer t"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	h.server = <-dialed
	rc.server = h.server
	h.client = client
	go client.ReadLoop()
	t.Cleanup(func() { client.NetConn().Close() })
	testsupport.Eventually(t, 5*time.Second, "socket open", func() bool { return h.w.Stats().Connections == 1 })
	return h
}

// send sends frames with these seqs and returns them as the consumer got them.
func (h *wsHarness) send(seqs ...int) []*telemetry.Frame {
	h.t.Helper()
	for _, s := range seqs {
		msg := `{"seq":` + strconv.Itoa(s) + `,"ts":1700000000000,"measurement":"m","metrics":{"v":1}}`
		if err := h.client.WriteString(msg); err != nil {
			h.t.Fatal(err)
		}
	}
	fs := make([]*telemetry.Frame, 0, len(seqs))
	for range seqs {
		select {
		case f := <-h.frames:
			fs = append(fs, f)
		case <-time.After(5 * time.Second):
			h.t.Fatalf("consumer got %d of %d frames", len(fs), len(seqs))
		}
	}
	// The consumer has them; wait for the read loop to be done with each
	// (the first part of its answer), so that what the test does next
	// (Done, a close) comes after, as it does in the service.
	c := h.deviceConn()
	testsupport.Eventually(h.t, 5*time.Second, "the read loop done with the frames", func() bool {
		c.ansMu.Lock()
		defer c.ansMu.Unlock()
		for _, s := range c.answers {
			if !s.preDone {
				return false
			}
		}
		return true
	})
	return fs
}

func (h *wsHarness) next() clientEvent {
	h.t.Helper()
	select {
	case ev := <-h.events:
		return ev
	case <-time.After(5 * time.Second):
		h.t.Fatal("device got nothing")
		return clientEvent{}
	}
}

func (h *wsHarness) deviceConn() *deviceConn {
	var c *deviceConn
	h.w.conns.Range(func(k, _ any) bool { c = k.(*deviceConn); return false })
	return c
}

// TestWSAcksCoalesced: answers completed at once leave in one write, each
// its own frame, in order, with the close frame behind them; a lone ack
// leaves at once on its own.
func TestWSAcksCoalesced(t *testing.T) {
	h := newWSHarness(t)

	// A lone ack on an idle socket: written at once, one write.
	f := h.send(1)
	base := h.server.writes.Load()
	f[0].Done(telemetry.Outcome{})
	if ev := h.next(); ev.text != `{"ack":1}` || ev.writes-base != 1 {
		t.Fatalf("lone ack: got %q after %d writes, want {\"ack\":1} after 1", ev.text, ev.writes-base)
	}

	// A batch completed at once (as the bridge does), then a close. The
	// socket's writes are held while they are queued, so the flush that
	// the first ack started (if it got the first ack alone) and the one
	// behind it are all there may be.
	const n = 100
	seqs := make([]int, n)
	for i := range seqs {
		seqs[i] = i + 2
	}
	frames := h.send(seqs...)
	release := h.server.hold()
	base = h.server.writes.Load()
	type want struct {
		ack  int
		code string // error frame
	}
	var wants []want
	for i, f := range frames {
		seq := seqs[i]
		switch seq % 10 {
		case 5:
			f.Done(telemetry.Outcome{Err: errors.New("influx down")})
			wants = append(wants, want{ack: seq, code: CodeNotStored})
		case 7:
			f.Done(telemetry.Outcome{Rejected: []telemetry.Rejection{{Index: 0, Code: "type_conflict", Message: "x"}}})
			wants = append(wants, want{ack: seq}, want{ack: seq, code: CodeRejected})
		default:
			f.Done(telemetry.Outcome{})
			wants = append(wants, want{ack: seq})
		}
	}
	h.w.Disconnect("dev-1", telemetry.ClosePolicy, "credential revoked")
	release()

	var last clientEvent
	for i, w := range wants {
		ev := h.next()
		if ev.closed {
			t.Fatalf("message %d: socket closed (code %d) before it", i, ev.closeCode)
		}
		if w.code == "" {
			if ev.text != `{"ack":`+strconv.Itoa(w.ack)+`}` {
				t.Fatalf("message %d: got %s, want the ack of %d", i, ev.text, w.ack)
			}
		} else {
			var e errorFrame
			if err := json.Unmarshal([]byte(ev.text), &e); err != nil || e.Error.Code != w.code || e.Error.Seq == nil || *e.Error.Seq != uint64(w.ack) {
				t.Fatalf("message %d: got %s, want error %s for seq %d", i, ev.text, w.code, w.ack)
			}
		}
		last = ev
	}
	if ev := h.next(); !ev.closed || ev.closeCode != telemetry.ClosePolicy {
		t.Fatalf("after the answers: got %+v, want the close frame %d", ev, telemetry.ClosePolicy)
	}
	// len(wants)+1 frames (the close included) reached the device in at most 2 writes.
	if w := last.writes - base; w < 1 || w > 2 {
		t.Fatalf("%d frames took %d writes, want 1 or 2", len(wants)+1, w)
	}
	if got := h.w.Stats().AcksSent; got != 1+n-n/10 {
		t.Fatalf("AcksSent = %d, want %d", got, 1+n-n/10)
	}
}

// TestWSWriteQueueBound: a device that does not read its answers has its
// socket aborted when its queue is full, without blocking whoever queues.
func TestWSWriteQueueBound(t *testing.T) {
	h := newWSHarness(t)
	c := h.deviceConn()
	h.server.hold() // the peer's window never opens

	// The first ack's flush takes it and blocks in the write; then the
	// queue fills up, and one more overflows it.
	c.sendAck(0)
	testsupport.Eventually(t, 5*time.Second, "the flush to take the first ack", func() bool {
		c.outMu.Lock()
		defer c.outMu.Unlock()
		return len(c.pending) == 0
	})
	queued := make(chan struct{})
	go func() {
		defer close(queued)
		for i := range maxPendingMsgs + 1 {
			c.sendAck(uint64(i + 1))
		}
	}()
	select {
	case <-queued:
	case <-time.After(5 * time.Second):
		t.Fatal("queueing blocked on a stalled socket")
	}
	if st := h.w.Stats(); st.WriteQueueFull != 1 {
		t.Fatalf("WriteQueueFull = %d, want 1", st.WriteQueueFull)
	}
	// Aborted: no close frame (it could not be written), the socket ends
	// and its slot is released; nothing more is queued.
	for {
		ev := h.next()
		if ev.closed {
			if ev.closeCode != 0 {
				t.Fatalf("aborted socket sent close code %d", ev.closeCode)
			}
			break
		}
	}
	testsupport.Eventually(t, 5*time.Second, "OnClose", func() bool { return h.w.Stats().Connections == 0 })
	if done := c.close(telemetry.CloseGoingAway, ""); done != nil {
		t.Fatal("close after abort queued a close frame")
	}
	c.sendAck(1)
	c.outMu.Lock()
	defer c.outMu.Unlock()
	if len(c.pending) != 0 {
		t.Fatalf("%d messages queued after the abort", len(c.pending))
	}
}

func TestFrameReaderKeepsBufferedBytes(t *testing.T) {
	httpBuf := bufio.NewReaderSize(strings.NewReader("GET\r\n\r\nframe1"), 16)
	if _, err := httpBuf.ReadString('\n'); err != nil { // the request net/http parsed
		t.Fatal(err)
	}
	if _, err := httpBuf.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	r := frameReader(strings.NewReader("frame2"), httpBuf)
	if b, err := io.ReadAll(r); err != nil || string(b) != "frame1frame2" {
		t.Fatalf("read %q, %v; want the buffered bytes first", b, err)
	}
}

// TestCorkConnNoAckAfterClose: acks are framed by the corkConn, not gws;
// like gws's own frames, none may follow a close frame on the wire, and
// they are whole server text frames.
func TestCorkConnNoAckAfterClose(t *testing.T) {
	var wire bytes.Buffer
	w := &corkConn{Conn: bufConn{&wire}, bufs: newCorkBufs()}
	if _, err := w.Write([]byte("HTTP/1.1 101 Switching Protocols\r\n\r\n")); err != nil { // 'H' has a close opcode's low bits
		t.Fatal(err)
	}
	w.startFraming()
	if !w.gatherAck(7) {
		t.Fatal("ack refused before any close frame")
	}
	want := "\x81\x09{\"ack\":7}"
	if got := strings.TrimPrefix(wire.String(), "HTTP/1.1 101 Switching Protocols\r\n\r\n"); got != want {
		t.Fatalf("ack frame %q, want %q", got, want)
	}
	if _, err := w.Write([]byte{0x88, 0x02, 0x03, 0xe9}); err != nil { // close 1001
		t.Fatal(err)
	}
	n := wire.Len()
	if w.gatherAck(8) || wire.Len() != n {
		t.Fatal("an ack was written after the close frame")
	}
}

// bufConn is a net.Conn that writes into a buffer.
type bufConn struct{ w io.Writer }

func (c bufConn) Write(p []byte) (int, error)    { return c.w.Write(p) }
func (bufConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (bufConn) Close() error                     { return nil }
func (bufConn) LocalAddr() net.Addr              { return nil }
func (bufConn) RemoteAddr() net.Addr             { return nil }
func (bufConn) SetDeadline(time.Time) error      { return nil }
func (bufConn) SetReadDeadline(time.Time) error  { return nil }
func (bufConn) SetWriteDeadline(time.Time) error { return nil }
