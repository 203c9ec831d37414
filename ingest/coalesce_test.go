package ingest

import (
	"bytes"
	"errors"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/telemetryd/telemetryd/internal/testsupport"
)

// gatedConn records writes; while gate is non-nil each write first waits on it.
type gatedConn struct {
	net.Conn
	gate chan struct{}
	err  error

	mu     sync.Mutex
	writes int
	out    bytes.Buffer
}

func (c *gatedConn) Write(b []byte) (int, error) {
	if c.gate != nil {
		<-c.gate
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
	if c.err != nil {
		return 0, c.err
	}
	return c.out.Write(b)
}

func (c *gatedConn) stats() (int, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes, c.out.String()
}

func TestCoalescingWriterBatchesWritesInOrder(t *testing.T) {
	c := &gatedConn{gate: make(chan struct{})}
	w := newCoalescingWriter(c)
	var want bytes.Buffer
	for i := range 100 {
		p := []byte{0x40, 2, 0, byte(i)} // a PUBACK
		want.Write(p)
		if n, err := w.Write(p); n != 4 || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	close(c.gate) // the first flush was stuck; everything else queued behind it
	testsupport.Eventually(t, 5*time.Second, "all bytes", func() bool { _, out := c.stats(); return len(out) == want.Len() })
	writes, out := c.stats()
	if out != want.String() {
		t.Fatal("bytes reordered or corrupted")
	}
	if writes > 2 {
		t.Errorf("100 writes took %d syscalls, want at most 2", writes)
	}
	w.close(time.Second)
	if _, err := w.Write([]byte{1}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after close = %v, want net.ErrClosed", err)
	}
}

func TestCoalescingWriterCloseFlushesPending(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := &gatedConn{gate: make(chan struct{})}
		w := newCoalescingWriter(c)
		_, _ = w.Write([]byte("puback"))
		_, _ = w.Write([]byte("disconnect"))
		go func() {
			synctest.Wait() // close is waiting for the flusher, stuck on the gate
			close(c.gate)
		}()
		w.close(5 * time.Second)
		if _, out := c.stats(); out != "pubackdisconnect" {
			t.Fatalf("after close the connection got %q", out)
		}
	})
}

func TestCoalescingWriterErrorIsSticky(t *testing.T) {
	broken := errors.New("broken pipe")
	c := &gatedConn{err: broken}
	w := newCoalescingWriter(c)
	defer w.close(time.Second)
	_, _ = w.Write([]byte("x"))
	testsupport.Eventually(t, 5*time.Second, "the flush error", func() bool { _, err := w.Write([]byte("y")); return errors.Is(err, broken) })
}

func TestCoalescingWriterBoundsItsBuffer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) { testCoalescingWriterBoundsItsBuffer(t) })
}

func testCoalescingWriterBoundsItsBuffer(t *testing.T) {
	c := &gatedConn{gate: make(chan struct{})}
	w := newCoalescingWriter(c)
	defer w.close(time.Second)
	chunk := make([]byte, maxCoalesced/2)
	_, _ = w.Write(chunk) // taken by the flusher, stuck on the gate
	synctest.Wait()
	w.mu.Lock()
	taken := len(w.buf) == 0
	w.mu.Unlock()
	if !taken {
		t.Fatal("the flusher did not take the first chunk")
	}
	_, _ = w.Write(chunk)
	_, _ = w.Write(chunk) // exactly full
	blocked := make(chan struct{})
	go func() { _, _ = w.Write(chunk); close(blocked) }()
	synctest.Wait() // every goroutine blocked: the Write has waited, or returned
	select {
	case <-blocked:
		t.Fatal("Write past the bound did not wait")
	default:
	}
	close(c.gate)
	<-blocked
	testsupport.Eventually(t, 5*time.Second, "everything written", func() bool { _, out := c.stats(); return len(out) == 4*len(chunk) })
}
