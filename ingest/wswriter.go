package ingest

import (
	"io"
	"net"
	"sync"
	"time"

	"github.com/lxzan/gws"
)

// Outgoing messages of a device socket: acks, error frames, pings and the
// close frame all go through deviceConn.enqueue, so they leave in the order
// they were queued, each as its own WebSocket frame.
//
// Why: the bridge completes a whole batch of frames at once, so a socket
// typically owes many acks at the same instant, and one write(2) per ack
// (gws's WriteAsync) was a large share of the service's CPU. Instead, a
// socket has a pending list and at most one flush task on gws's serial
// write queue (conn.Async). The flush task takes everything pending and
// writes it through gws (WriteMessage: gws frames it, checks that the
// socket is open and handles a write error as always) with the socket's
// corkConn corked, so the frames are gathered in memory; the write of the
// last frame carries them all to the kernel in one syscall. Acks, nearly
// every message, skip gws: the corkConn frames them itself
// (corkConn.gatherAck), keeping gws's rule that nothing follows a close
// frame, and a failed write closes the connection as gws would. There is no
// timer: a message queued on an idle socket starts a flush at once, and a
// lone message is written as before (one WriteMessage, uncorked). Messages
// queued while a flush is writing go out together in the next one.
//
// Bound and policy: at most maxPendingMsgs messages or maxPendingBytes
// bytes wait in a socket's pending list (what the running flush has taken
// is not counted). The list only grows while a write is blocked, i.e. while
// the device does not read its answers; one more message then aborts the
// socket: the pending messages are dropped, the TCP connection is closed
// without a close frame (it could not be written) and the read loop ends
// (OnClose releases the socket). Whoever queued — the bridge's completion
// callback, the read loop, Disconnect, the ping loop — is never blocked.
// Dropped acks are those of stored frames, which the device resends after
// reconnecting as it does after any lost connection. gws's own write queue
// holds at most one task per socket (the flush), so it is bounded too.
const (
	maxPendingMsgs  = 4096
	maxPendingBytes = 4 << 20
	// corkMax bounds what a corked writer gathers before it writes anyway.
	corkMax = 64 << 10
	// keepPending is the largest pending list kept for reuse between
	// flushes; bigger ones are left to the GC so idle sockets stay small.
	keepPending = 64
)

// outMsg is one WebSocket message waiting to be written.
type outMsg struct {
	op      gws.Opcode
	payload []byte
	done    chan struct{} // close frames: closed once written (or dropped)
	// ack: the message is {"ack":seq}, framed by the writer straight into
	// the socket's gathered bytes (corkConn.gatherAck): nothing allocated.
	ack bool
	seq uint64
}

// ackSize bounds an ack's payload, for the pending list's byte bound.
const ackSize = len(`{"ack":18446744073709551615}`)

func (m *outMsg) size() int {
	if m.ack {
		return ackSize
	}
	return len(m.payload)
}

// enqueue queues m behind the socket's other outgoing messages and makes sure
// a flush is scheduled. It never blocks on the network.
func (c *deviceConn) enqueue(m outMsg) {
	c.outMu.Lock()
	if c.aborted {
		c.outMu.Unlock()
		if m.done != nil {
			close(m.done)
		}
		return
	}
	if len(c.pending) >= maxPendingMsgs || c.pendingBytes+m.size() > maxPendingBytes {
		dropped := append(c.pending, m)
		c.pending, c.pendingBytes, c.aborted = nil, 0, true
		c.outMu.Unlock()
		c.abort(dropped)
		return
	}
	c.pending = append(c.pending, m)
	c.pendingBytes += m.size()
	start := !c.flushing
	c.flushing = true
	c.outMu.Unlock()
	if start {
		c.conn.Async(c.flushFn)
	}
}

// flush runs on gws's write queue: it writes the pending messages, and
// those queued meanwhile, until none is left.
func (c *deviceConn) flush() {
	for {
		c.outMu.Lock()
		batch := c.pending
		if len(batch) == 0 {
			c.flushing = false
			c.outMu.Unlock()
			return
		}
		// Two lists take turns, so that a busy socket queues into a
		// list already grown instead of growing a new one per flush.
		c.pending, c.pendingBytes = c.spare, 0
		c.spare = nil
		c.outMu.Unlock()

		c.writeBatch(batch)
		clear(batch)
		if cap(batch) <= keepPending {
			c.spare = batch[:0]
		}
	}
}

// writeBatch writes msgs with one syscall (more if they exceed corkMax).
func (c *deviceConn) writeBatch(msgs []outMsg) {
	last := len(msgs) - 1
	if last > 0 {
		c.out.cork()
	}
	for i := range msgs {
		m := &msgs[i]
		if i == last && last > 0 {
			// The gathered frames go out with this one's write, and
			// gws sees that write's error as it would see its own.
			c.out.uncork()
		}
		if m.ack {
			if !c.out.gatherAck(m.seq) {
				break // a close frame went out, or the stream broke
			}
			continue
		}
		_ = c.conn.WriteMessage(m.op, m.payload)
	}
	if last > 0 {
		// Frames left gathered if the last WriteMessage failed before
		// writing (the socket closed meanwhile); normally nothing.
		c.out.flush()
	}
	if c.out.broken() {
		// gws sees its own write errors; one of an ack it does not see,
		// so the connection is closed here: the read loop ends and
		// OnClose releases the socket, as gws would have done.
		_ = c.raw.Close()
	}
	for _, m := range msgs {
		if m.done != nil {
			close(m.done)
		}
	}
}

// overflow aborts the socket because one of its bounded answer lists is
// full (the answer order, wsanswers.go): the same policy as a full
// outgoing queue.
func (c *deviceConn) overflow() {
	c.outMu.Lock()
	if c.aborted {
		c.outMu.Unlock()
		return
	}
	dropped := c.pending
	c.pending, c.pendingBytes, c.aborted = nil, 0, true
	c.outMu.Unlock()
	c.abort(dropped)
}

// abort closes a socket whose device does not read its answers (the pending
// list is full): see the bound above.
func (c *deviceConn) abort(dropped []outMsg) {
	c.closed.Store(true)
	c.w.writeQueueFull.Add(1)
	c.w.log.Warn("device is not reading its answers; closing the socket", "device", c.id, "pending", len(dropped))
	for _, m := range dropped {
		if m.done != nil {
			close(m.done)
		}
	}
	// The raw connection, not c.out: a write blocked on the dead peer holds
	// c.out's lock, and closing the connection is what frees it.
	_ = c.raw.Close()
}

// corkConn is a device socket's net.Conn as gws sees it. While corked, what
// gws writes is gathered in memory (up to corkMax) instead of written; the
// next write once uncorked carries everything gathered in one syscall. gws
// writes under its connection lock, so whole frames are gathered, and every
// writer (the flush task, the read loop's pongs and close frames) goes
// through here, so the bytes keep the order of the writes.
type corkConn struct {
	net.Conn

	mu     sync.Mutex
	corked bool
	bufs   *sync.Pool // of *[]byte, shared by the WS's sockets
	buf    *[]byte    // gathered frames; from bufs, nil when empty
	err    error      // a failed write: the frame stream is broken, later writes fail too
	// framing: the handshake is written; from now on every Write is one
	// whole frame of gws's. closeSent: one of them was a close frame, so
	// gatherAck adds no data frame behind it (gws's rule for its own).
	framing, closeSent bool
}

// newCorkBufs is the pool of gathering buffers a WS's sockets share: only
// a socket in the middle of a flush holds one.
func newCorkBufs() *sync.Pool {
	return &sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}
}

func (w *corkConn) cork() {
	w.mu.Lock()
	w.corked = true
	w.mu.Unlock()
}

// uncork ends gathering; the next Write (or flush) writes what was gathered.
func (w *corkConn) uncork() {
	w.mu.Lock()
	w.corked = false
	w.mu.Unlock()
}

// flush writes what is gathered, if anything.
func (w *corkConn) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.corked = false
	if w.buf != nil && w.err == nil {
		_ = w.writeGathered()
	}
}

// startFraming marks the end of the handshake (see framing).
func (w *corkConn) startFraming() {
	w.mu.Lock()
	w.framing = true
	w.mu.Unlock()
}

// broken reports a failed write that nobody else will act on: after a
// close frame, gws closes the connection itself (lingering first, Close),
// and a write failing then — against the half-closed socket — must not cut
// that linger short with a hard close.
func (w *corkConn) broken() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err != nil && !w.closeSent
}

// gatherAck adds the frame of {"ack":seq} (a server text frame: FIN, not
// masked, a 7-bit length) to what is gathered, and writes it at once when
// not corked. gws is bypassed for acks — nearly every message — as its
// per-message framing (lock, pooled buffer, UTF-8 check of an ASCII
// payload, a boxed payload) was most of the ack path's cost. It reports
// false when nothing may be written: the stream is broken or a close
// frame went out.
func (w *corkConn) gatherAck(seq uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil || w.closeSent {
		return false
	}
	if w.buf == nil {
		w.buf = w.bufs.Get().(*[]byte)
	}
	b := append(*w.buf, 0x80|byte(gws.OpcodeText), 0)
	n := len(b)
	b = appendAck(b, seq)
	b[n-1] = byte(len(b) - n) // ≤ ackSize < 126
	*w.buf = b
	if !w.corked || len(b) >= corkMax {
		return w.writeGathered() == nil
	}
	return true
}

func (w *corkConn) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return 0, w.err
	}
	if w.framing && len(p) > 0 && gws.Opcode(p[0]&0x0f) == gws.OpcodeCloseConnection {
		w.closeSent = true
	}
	if w.buf == nil && !w.corked {
		n, err := w.Conn.Write(p)
		w.err = err
		return n, err
	}
	if w.buf == nil {
		w.buf = w.bufs.Get().(*[]byte)
	}
	*w.buf = append(*w.buf, p...)
	if w.corked && len(*w.buf) < corkMax {
		return len(p), nil
	}
	if err := w.writeGathered(); err != nil {
		return 0, err
	}
	return len(p), nil
}

// writeGathered writes w.buf and releases it. w.mu is held.
func (w *corkConn) writeGathered() error {
	_, w.err = w.Conn.Write(*w.buf)
	if cap(*w.buf) <= 4*corkMax {
		*w.buf = (*w.buf)[:0]
		w.bufs.Put(w.buf)
	}
	w.buf = nil
	return w.err
}

// Linger bounds: after the close frame, what a closing socket still reads
// and discards from its device, and for how long.
const (
	lingerTime  = 5 * time.Second
	lingerBytes = 16 << 20
)

// Close writes what is gathered (gws writes its close frame, then closes),
// lingers, then closes the connection.
func (w *corkConn) Close() error {
	w.flush()
	w.linger()
	return w.Conn.Close()
}

// linger half-closes the connection behind the close frame, then reads and
// discards what the device still sends until it closes its side, up to
// lingerBytes or lingerTime. Why: closing a socket with unread data makes
// the kernel send a reset, and a device still writing (a 4 MiB frame over
// MaxFrameSize, written in one call) then loses the close frame it had not
// read yet and sees the connection dropped (1006) instead of its 1009.
// Connections that cannot half-close (test wrappers) are closed at once.
func (w *corkConn) linger() {
	cw, ok := w.Conn.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	_ = w.Conn.SetReadDeadline(time.Now().Add(lingerTime))
	_, _ = io.CopyN(io.Discard, w.Conn, lingerBytes)
}
