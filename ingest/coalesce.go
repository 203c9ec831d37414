package ingest

import (
	"net"
	"sync"
	"time"
)

// maxCoalesced bounds the bytes a coalescingWriter holds: past it, Write
// waits for the flusher (backpressure on paho's writer goroutine, which
// already waits on a slow socket today).
const maxCoalesced = 64 << 10

// coalescingWriter batches a connection's small writes into few syscalls.
// paho writes every packet — a 4-byte PUBACK per message at QoS 1 — with
// its own write, one syscall each; here Write only appends to a buffer and
// wakes a flusher goroutine, which writes whatever has accumulated by the
// time it runs. Under load, everything paho wrote during one syscall goes
// out with the next; when idle, a packet leaves after one goroutine
// hand-off, with no timer.
//
// Write reports the error of an earlier flush (the connection is then
// broken and paho reconnects); the bytes of a Write that returned nil may
// still be lost with the connection, like bytes in a kernel send buffer.
// Ordering is kept: bytes go out in Write order.
type coalescingWriter struct {
	conn net.Conn
	wake chan struct{} // cap 1: a flush is due

	mu      sync.Mutex
	drained *sync.Cond // signalled after every flush
	buf     []byte     // pending bytes
	err     error      // the first flush error; sticky
	closed  bool
	done    chan struct{} // closed when the flusher has stopped
}

func newCoalescingWriter(conn net.Conn) *coalescingWriter {
	w := &coalescingWriter{conn: conn, wake: make(chan struct{}, 1), done: make(chan struct{})}
	w.drained = sync.NewCond(&w.mu)
	go w.flushLoop()
	return w
}

func (w *coalescingWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.err == nil && !w.closed && len(w.buf) > 0 && len(w.buf)+len(b) > maxCoalesced {
		w.drained.Wait()
	}
	switch {
	case w.err != nil:
		return 0, w.err
	case w.closed:
		return 0, net.ErrClosed
	}
	w.buf = append(w.buf, b...)
	select {
	case w.wake <- struct{}{}:
	default: // a wake-up is already pending; it will take these bytes too
	}
	return len(b), nil
}

// close fails later Writes and waits, at most linger, for the flusher to
// write what is pending: paho closes the connection right after writing
// DISCONNECT, and the PUBACKs before it must reach the broker, or it
// redelivers those messages.
func (w *coalescingWriter) close(linger time.Duration) {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.wake)
	}
	w.drained.Broadcast()
	w.mu.Unlock()
	select {
	case <-w.done:
	case <-time.After(linger):
		// A peer that stopped reading: closing the connection (the caller's
		// next step) fails the stuck write and ends the flusher.
	}
}

func (w *coalescingWriter) flushLoop() {
	defer close(w.done)
	var spare []byte
	for range w.wake {
		for {
			w.mu.Lock()
			if len(w.buf) == 0 || w.err != nil {
				w.drained.Broadcast()
				w.mu.Unlock()
				break
			}
			out := w.buf
			w.buf, spare = spare[:0], nil
			w.mu.Unlock()

			_, err := w.conn.Write(out)

			w.mu.Lock()
			if err != nil && w.err == nil {
				w.err = err
			}
			if cap(out) <= maxCoalesced*2 {
				spare = out // reuse; an outsized buffer is left to the GC
			}
			w.drained.Broadcast()
			w.mu.Unlock()
		}
	}
}
