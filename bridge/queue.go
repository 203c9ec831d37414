package bridge

import "sync"

// frameQueue holds accepted frames between Consume and Run: a ring of at
// most QueueFrames entries behind one mutex. Consume pushes one entry per
// frame; Run takes as many as fit in its batch under one lock.
//
// Not a buffered channel guarded by an RWMutex against shutdown: with
// Consume running on every core, the channel's lock (taken by Run once per
// frame too) and the RWMutex's reader count bounced between cores. Here a
// frame costs Consume one lock, and Run one lock per batch. (That lock's
// cache line still moves between the cores that consume; sharding it waits
// for a many-core machine to show the need.)
//
// Run is woken through wake (capacity 1, so wakes coalesce) only when it
// may have something to do: a frame lands in an empty queue, the queue
// and Run's pending batch come to a full batch, or a large frame
// (LargeFrameLines) lands. A wake is a hint: Run
// looks at the queue again, and a stale one costs a look.
//
// When the ring is full, Consume waits on space, which Run closes the next
// time it takes frames: back-pressure to devices, as before.
type frameQueue struct {
	wake chan struct{}

	mu         sync.Mutex
	ring       []*entry
	head, n    int
	lines      int // lines of the queued frames
	batchLines int // MaxBatchLines
	largeLines int // LargeFrameLines
	large      int // large frames queued
	runLines   int // lines in Run's pending batch
	closed     bool
	space      chan struct{} // made by a Consume that found the ring full, closed by take

	// Counted here, under mu, rather than with atomics that every core
	// would bounce between them.
	framesAccepted, readingsAccepted uint64
}

func newFrameQueue(frames, batchLines, largeLines int) *frameQueue {
	return &frameQueue{
		wake:       make(chan struct{}, 1),
		ring:       make([]*entry, frames),
		batchLines: batchLines,
		largeLines: largeLines,
	}
}

// push queues e, a frame of readings accepted readings. When the ring is
// full it queues nothing and returns a channel that is closed once there
// may be room; closed reports a queue that accepts nothing more.
func (q *frameQueue) push(e *entry, readings int) (full <-chan struct{}, closed bool) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil, true
	}
	if q.n == len(q.ring) {
		if q.space == nil {
			q.space = make(chan struct{})
		}
		full = q.space
		q.mu.Unlock()
		return full, false
	}
	i := q.head + q.n
	if i >= len(q.ring) {
		i -= len(q.ring)
	}
	q.ring[i] = e
	q.n++
	before := q.lines + q.runLines
	q.lines += len(e.index)
	large := len(e.index) >= q.largeLines
	if large {
		q.large++
	}
	wake := q.n == 1 || large || before < q.batchLines && before+len(e.index) >= q.batchLines
	q.framesAccepted++
	q.readingsAccepted += uint64(readings)
	q.mu.Unlock()
	if wake {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
	return nil, false
}

// take moves queued frames to pending, oldest first, while pending holds
// fewer than limit lines (at most MaxBatchLines); lines is pending's line
// count, updated. With stopAfterLarge it stops after a large frame; large
// reports whether it took one. Run is the only caller.
func (q *frameQueue) take(pending []*entry, lines, limit int, stopAfterLarge bool) (_ []*entry, _ int, large bool) {
	limit = min(limit, q.batchLines)
	q.mu.Lock()
	for q.n > 0 && lines < limit {
		e := q.ring[q.head]
		q.ring[q.head] = nil
		q.head++
		if q.head == len(q.ring) {
			q.head = 0
		}
		q.n--
		q.lines -= len(e.index)
		lines += len(e.index)
		pending = append(pending, e)
		if len(e.index) >= q.largeLines {
			q.large--
			large = true
			if stopAfterLarge {
				break
			}
		}
	}
	q.runLines = lines
	if q.space != nil && q.n < len(q.ring) {
		close(q.space)
		q.space = nil
	}
	q.mu.Unlock()
	return pending, lines, large
}

// queued reports the lines waiting in the queue, and whether a large
// frame is among them.
func (q *frameQueue) queued() (lines int, large bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.lines, q.large > 0
}

// flushed tells the queue that Run's pending batch went to a writer.
func (q *frameQueue) flushed() {
	q.mu.Lock()
	q.runLines = 0
	q.mu.Unlock()
}

// close makes every later push fail; frames already queued stay for Run
// to drain.
func (q *frameQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
}

// queueStats is what the queue counts.
type queueStats struct {
	frames, capacity                 int
	framesAccepted, readingsAccepted uint64
}

func (q *frameQueue) stats() queueStats {
	q.mu.Lock()
	defer q.mu.Unlock()
	return queueStats{frames: q.n, capacity: len(q.ring), framesAccepted: q.framesAccepted, readingsAccepted: q.readingsAccepted}
}
