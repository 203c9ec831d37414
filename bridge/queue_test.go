package bridge

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/telemetryd/telemetryd/telemetry"
)

// linesEntry is a queued frame of n lines, told apart by at.
func linesEntry(n int, at int64) *entry {
	e := newEntry()
	e.index = make([]int32, n)
	e.at = time.Unix(0, at)
	return e
}

// woken reports whether q has a wake for Run, and consumes it.
func woken(q *frameQueue) bool {
	select {
	case <-q.wake:
		return true
	default:
		return false
	}
}

// TestFrameQueueWakes: Run is woken for a frame in an empty queue and when
// the queue and its pending batch come to a full batch, not for each frame.
func TestFrameQueueWakes(t *testing.T) {
	tests := []struct {
		name     string
		runLines int   // Run's pending batch
		queued   []int // lines of frames already queued (their wakes consumed)
		push     int   // lines of the frame pushed
		want     bool
	}{
		{"first frame", 0, nil, 1, true},
		{"first frame while a batch lingers", 3, nil, 1, true},
		{"second frame", 0, []int{1}, 1, false},
		{"makes a full batch with the queue", 0, []int{4, 4}, 2, true},
		{"makes a full batch with the pending batch", 6, []int{2}, 2, true},
		{"past a full batch already", 0, []int{6, 6}, 1, false},
		{"one short of a full batch", 0, []int{4, 4}, 1, false},
		{"a large frame", 0, []int{1}, 8, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := newFrameQueue(16, 10, 8)
			q.runLines = tt.runLines
			for i, n := range tt.queued {
				if full, closed := q.push(linesEntry(n, int64(i)), n); full != nil || closed {
					t.Fatal("queue refused a frame")
				}
			}
			woken(q)
			if full, closed := q.push(linesEntry(tt.push, 99), tt.push); full != nil || closed {
				t.Fatal("queue refused a frame")
			}
			if got := woken(q); got != tt.want {
				t.Fatalf("woken = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestFrameQueueOrderAndBatches: frames leave in the order they came, across
// the ring's end, a batch's worth at a time; the counters follow.
func TestFrameQueueOrderAndBatches(t *testing.T) {
	q := newFrameQueue(4, 5, 5)
	next, want := int64(0), int64(0)
	push := func(lines int) {
		t.Helper()
		if full, closed := q.push(linesEntry(lines, next), lines); full != nil || closed {
			t.Fatalf("frame %d refused", next)
		}
		next++
	}
	takeBatch := func(wantFrames int) {
		t.Helper()
		pending, lines, _ := q.take(nil, 0, q.batchLines, false)
		if len(pending) != wantFrames {
			t.Fatalf("took %d frames, want %d", len(pending), wantFrames)
		}
		for _, e := range pending {
			if e.at.UnixNano() != want {
				t.Fatalf("took frame %d, want %d", e.at.UnixNano(), want)
			}
			want++
			lines -= len(e.index)
		}
		if lines != 0 {
			t.Fatal("take's line count disagrees with its frames")
		}
	}
	for range 3 {
		push(2)
	}
	takeBatch(3) // 6 lines: a batch stops once it holds 5 or more
	for range 4 {
		push(1) // wraps around the ring's end
	}
	takeBatch(4)
	push(3)
	push(3)
	takeBatch(2)
	if st := q.stats(); st.frames != 0 || st.framesAccepted != 9 || st.readingsAccepted != 16 || st.capacity != 4 {
		t.Fatalf("stats = %+v", st)
	}
}

// TestFrameQueueFullAndClosed: a full queue hands out a channel that take
// closes once there is room; a closed one refuses frames but keeps its
// queued ones for Run.
func TestFrameQueueFullAndClosed(t *testing.T) {
	q := newFrameQueue(2, 100, 100)
	q.push(linesEntry(1, 0), 1)
	q.push(linesEntry(1, 1), 1)
	full, closed := q.push(linesEntry(1, 2), 1)
	if full == nil || closed {
		t.Fatal("a full queue took a frame")
	}
	select {
	case <-full:
		t.Fatal("room signalled before any was made")
	default:
	}
	if pending, _, _ := q.take(nil, 0, q.batchLines, false); len(pending) != 2 {
		t.Fatalf("took %d frames, want 2", len(pending))
	}
	select {
	case <-full:
	default:
		t.Fatal("take made room without saying so")
	}
	q.push(linesEntry(1, 3), 1)
	q.close()
	if full, closed := q.push(linesEntry(1, 4), 1); full != nil || !closed {
		t.Fatal("a closed queue took a frame")
	}
	if pending, _, _ := q.take(nil, 0, q.batchLines, false); len(pending) != 1 || pending[0].at.UnixNano() != 3 {
		t.Fatal("closing dropped a queued frame")
	}
}

// TestBridgeConsumeWaitsForRoom: a Consume that finds the queue full waits,
// and goes on once the writer takes frames; one still waiting at shutdown
// is told the bridge is closed.
func TestBridgeConsumeWaitsForRoom(t *testing.T) {
	cfg := Config{QueueFrames: 1, MaxBatchLines: 1, Writers: 1, FlushInterval: time.Millisecond, DrainTimeout: 10 * time.Millisecond}
	// fill starts four Consume calls: one frame for the writer, one for
	// Run's pending batch, one queued, and one waiting for room.
	fill := func(t *testing.T, b *Bridge) chan error {
		errs := make(chan error, 4)
		for range 4 {
			go func() {
				_, err := b.Consume(context.Background(), frame("d1", nil, 1))
				errs <- err
			}()
		}
		eventually(t, "three frames taken", func() bool { return b.Stats().FramesAccepted == 3 })
		for range 3 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		return errs
	}

	t.Run("room made", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			sink := &fakeSink{block: make(chan struct{})}
			release := sync.OnceFunc(func() { close(sink.block) })
			t.Cleanup(release)
			b, _, _ := startBridge(t, cfg, sink, nil)
			errs := fill(t, b)
			synctest.Wait() // every goroutine blocked: Consume waits, or has returned
			select {
			case err := <-errs:
				t.Fatalf("Consume returned %v with the queue full", err)
			default:
			}
			release()
			select {
			case err := <-errs:
				if err != nil {
					t.Fatalf("Consume = %v after the writer made room", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Consume still waiting after the writer made room")
			}
		})
	})
	t.Run("shutdown", func(t *testing.T) {
		sink := &fakeSink{block: make(chan struct{})}
		b, cancel, stopped := startBridge(t, cfg, sink, nil)
		errs := fill(t, b)
		cancel()
		select {
		case err := <-errs:
			if !errors.Is(err, telemetry.ErrClosed) {
				t.Fatalf("waiting Consume at shutdown = %v, want ErrClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Consume still waiting after shutdown")
		}
		<-stopped
	})
}

// TestFrameQueueTakeStopsAfterALargeFrame: with stopAfterLarge a take ends
// after the first large frame (the small ones before it go with it), and
// reports it; without, it fills the batch.
func TestFrameQueueTakeStopsAfterALargeFrame(t *testing.T) {
	q := newFrameQueue(8, 100, 10)
	for i, n := range []int{1, 10, 10, 2} {
		q.push(linesEntry(n, int64(i)), n)
	}
	if _, large := q.queued(); !large {
		t.Fatal("a large frame queued, not reported")
	}
	pending, lines, large := q.take(nil, 0, 100, true)
	if len(pending) != 2 || lines != 11 || !large {
		t.Fatalf("took %d frames (%d lines, large %v), want the small one and the first large one", len(pending), lines, large)
	}
	pending, lines, large = q.take(nil, 0, 100, false)
	if len(pending) != 2 || lines != 12 || !large {
		t.Fatalf("took %d frames (%d lines, large %v), want the rest", len(pending), lines, large)
	}
	if _, large := q.queued(); large {
		t.Fatal("no large frame left, one reported")
	}
}
