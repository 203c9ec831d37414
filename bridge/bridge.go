package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/telemetryd/telemetryd/telemetry"
)

// Sink durably stores a batch of line protocol (ns precision, one point per
// line). Write may block up to ctx's deadline; lines is reused once it
// returns, so it must not be kept. An error wrapping
// telemetry.ErrPermanent means the batch, as it is, will never be accepted;
// any other error is transient.
type Sink interface {
	Write(ctx context.Context, lines []byte) error
}

// ChildAuthorizer decides whether a gateway may report for another device.
type ChildAuthorizer interface {
	MayReportFor(gateway, device telemetry.DeviceID) bool
}

// LabelSource supplies the operator-assigned labels of a device, stored as
// tags on every reading. The returned slice must not be modified.
type LabelSource interface {
	Labels(device telemetry.DeviceID) []telemetry.Tag
}

// DeadLetterer keeps lines the storage refused for good, so that nothing is
// dropped without a record. line is reused once DeadLetter returns.
type DeadLetterer interface {
	DeadLetter(line []byte, reason string)
}

// Publisher receives normalized readings for live fan-out. Publish must not
// block and must not modify the readings.
type Publisher interface {
	Publish(rs []telemetry.Reading)
}

// DurableNotifier learns, after each published frame is completed, which of
// its readings are durable (written, or fsynced to the spool) and which
// storage refused: the persisted watermark of the live stream. rs are the
// readings as they were published (neither modified nor kept after the
// call); refused index rs; err is set when none of them was stored. It is
// called from the completion goroutine, in completion order, and must not
// block.
type DurableNotifier interface {
	Durable(rs []telemetry.Reading, refused []telemetry.Rejection, err error)
}

// Config tunes the bridge. The zero value of each field means its default.
type Config struct {
	Limits Limits
	// Units converts declared units to canonical ones (units.go).
	Units UnitConfig
	// Types guards field types against InfluxDB type conflicts (typeguard.go).
	Types TypeGuardConfig
	// QueueFrames bounds the frames waiting for the writer (default 8192).
	// When full, Consume blocks (back-pressure to devices) until its ctx ends.
	QueueFrames int
	// MaxBatchLines is the most lines per storage write (default 5000).
	MaxBatchLines int
	// LargeFrameLines marks a frame of at least that many lines (an HTTP
	// write of a client's batch; default 1000, at most MaxBatchLines) as
	// large: it goes to a free writer at once, with whatever lingers
	// before it, instead of waiting FlushInterval, and a free writer takes
	// it alone. Large frames then reach InfluxDB as concurrent writes, as
	// their clients sent them, rather than merged into one behind a linger.
	// Small frames batch as FlushInterval says.
	LargeFrameLines int
	// FlushInterval is how long a batch's first frame waits for more
	// before the batch goes to a free writer (default 5ms). While every
	// writer is busy the batch grows instead, up to MaxBatchLines: batch
	// sizes follow InfluxDB's speed (see Run).
	FlushInterval time.Duration
	// Writers is how many batches may be written at once (default 4).
	// Completions (acks) still follow the order frames arrived in.
	Writers int
	// RetryMin and RetryMax bound the backoff between failed writes (default 100ms, 5s).
	RetryMin, RetryMax time.Duration
	// DrainTimeout bounds the final flush at shutdown (default 20s).
	DrainTimeout time.Duration
	// Children authorizes gateways; nil rejects every reading for another device.
	Children ChildAuthorizer
	// Labels adds registry labels as tags; nil adds none.
	Labels LabelSource
	// DeadLetters records lines the storage refused for good; nil only logs them.
	DeadLetters DeadLetterer
	// Durable is told when published readings become durable; nil: nobody.
	Durable DurableNotifier
}

// DefaultConfig is what the zero value of each Config field stands for.
func DefaultConfig() Config {
	return Config{
		Limits:          DefaultLimits(),
		QueueFrames:     8192,
		MaxBatchLines:   5000,
		LargeFrameLines: 1000,
		FlushInterval:   5 * time.Millisecond,
		Writers:         4,
		RetryMin:        100 * time.Millisecond,
		RetryMax:        5 * time.Second,
		DrainTimeout:    20 * time.Second,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	c.Limits = c.Limits.withDefaults()
	if c.QueueFrames <= 0 {
		c.QueueFrames = d.QueueFrames
	}
	if c.MaxBatchLines <= 0 {
		c.MaxBatchLines = d.MaxBatchLines
	}
	if c.LargeFrameLines <= 0 {
		c.LargeFrameLines = d.LargeFrameLines
	}
	c.LargeFrameLines = min(c.LargeFrameLines, c.MaxBatchLines)
	if c.Writers <= 0 {
		c.Writers = d.Writers
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = d.FlushInterval
	}
	if c.RetryMin <= 0 {
		c.RetryMin = d.RetryMin
	}
	if c.RetryMax <= 0 {
		c.RetryMax = d.RetryMax
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = d.DrainTimeout
	}
	return c
}

// Stats are the bridge's counters since start.
type Stats struct {
	FramesAccepted, ReadingsAccepted, ReadingsRejected uint64
	ReadingsWritten, ReadingsStorageRejected           uint64
	WriteBatches, WriteErrors, WriteRetries            uint64
	QueueFrames                                        int
	DetailStats
}

// entry is one accepted frame on its way to storage. Entries are recycled
// (Bridge.entries, an entryCache) with their buffers: Consume encodes straight into
// lines, and Run recycles the entry once its frame is completed, when
// nothing refers to it any more (Sink and DeadLetterer keep no slice of
// lines after they return).
type entry struct {
	lines []byte  // the frame's accepted readings, encoded once
	index []int32 // frame index of the reading on each line
	done  func(telemetry.Outcome)
	at    time.Time
	// published are the readings handed to the Publisher, kept until
	// completion for Config.Durable only.
	published []telemetry.Reading
	// outcome is set by a writer and delivered through done by Run.
	outcome telemetry.Outcome
	// inline is where lines and index start out, so that a new entry (the
	// cache is empty at start and while many frames queue) costs one
	// allocation for a small frame, not three.
	inline struct {
		lines [256]byte
		index [4]int32
	}
}

func newEntry() *entry {
	e := new(entry)
	e.lines, e.index = e.inline.lines[:0], e.inline.index[:0]
	return e
}

// Bridge normalizes frames, publishes them live and writes them to a Sink.
type Bridge struct {
	cfg      Config
	limits   Limits
	sink     Sink
	live     Publisher
	children ChildAuthorizer
	labels   LabelSource
	log      *slog.Logger

	queue    *frameQueue   // queue.go
	stopping chan struct{} // closed when Run begins to shut down
	closing  atomic.Bool   // set with stopping: Consume's early out (the queue has the final say)

	entries entryCache // recycled by Run once completed

	inflightMu sync.Mutex
	inflightAt []int64 // first receive time of each batch being written, oldest first

	readingsRejected                         atomic.Uint64
	readingsWritten, readingsStorageRejected atomic.Uint64
	writeBatches, writeErrors, writeRetries  atomic.Uint64

	detail // counters.go: metrics detail, unit rules, type guard
}

// New returns a Bridge writing to sink and publishing to live (which may be
// nil). Call Run to start its writer.
func New(cfg Config, sink Sink, live Publisher, log *slog.Logger) *Bridge {
	cfg = cfg.withDefaults()
	b := &Bridge{
		cfg:      cfg,
		limits:   cfg.Limits,
		sink:     sink,
		live:     live,
		children: cfg.Children,
		labels:   cfg.Labels,
		log:      log,
		queue:    newFrameQueue(cfg.QueueFrames, cfg.MaxBatchLines, cfg.LargeFrameLines),
		stopping: make(chan struct{}),
	}
	b.initDetail()
	return b
}

// Stats returns a snapshot of the counters.
func (b *Bridge) Stats() Stats {
	q := b.queue.stats()
	return Stats{
		FramesAccepted:          q.framesAccepted,
		ReadingsAccepted:        q.readingsAccepted,
		ReadingsRejected:        b.readingsRejected.Load(),
		ReadingsWritten:         b.readingsWritten.Load(),
		ReadingsStorageRejected: b.readingsStorageRejected.Load(),
		WriteBatches:            b.writeBatches.Load(),
		WriteErrors:             b.writeErrors.Load(),
		WriteRetries:            b.writeRetries.Load(),
		DetailStats:             b.detailStats(q.capacity),
		QueueFrames:             q.frames,
	}
}

// Consume implements telemetry.Consumer: it normalizes f's readings, queues
// the accepted ones for storage and publishes them live. Readings the decoder
// already rejected (f.Invalid) are reported, not normalized.
func (b *Bridge) Consume(ctx context.Context, f *telemetry.Frame) (telemetry.Receipt, error) {
	invalid := f.Invalid
	if b.closing.Load() {
		return telemetry.Receipt{}, fmt.Errorf("bridge: %w", telemetry.ErrClosed)
	}
	received := f.Received
	if received.IsZero() {
		received = time.Now()
	}
	e := b.entries.get()
	enc := lineEncoder{buf: e.lines[:0]}
	index := e.index[:0]

	var rcpt telemetry.Receipt
	var arena tagArena
	// Accepted readings are compacted to the front of f.Readings (the
	// consumer owns it): no new slice per frame.
	accepted := f.Readings[:0]
	next, skip := 0, 0 // cursors into invalid and f.Skipped
	for i := range f.Readings {
		if skip < len(f.Skipped) && f.Skipped[skip] == i {
			skip++
			continue
		}
		if next < len(invalid) && invalid[next].Index == i {
			rcpt.Rejected = append(rcpt.Rejected, invalid[next])
			next++
			continue
		}
		r := &f.Readings[i]
		arena.rest = len(f.Readings) - i
		if rej := b.normalize(r, f.Device, received, &arena); rej != nil {
			rcpt.Rejected = append(rcpt.Rejected, telemetry.Rejection{Index: i, Code: rej.code, Message: rej.msg})
			continue
		}
		if err := appendLine(&enc, r); err != nil {
			rcpt.Rejected = append(rcpt.Rejected, telemetry.Rejection{Index: i, Code: CodeInvalidValue, Message: err.Error()})
			continue
		}
		if len(index) == 0 && i+1 < len(f.Readings) {
			// Size the buffers for the rest of the frame from its first
			// line, rather than grow them a doubling at a time.
			rest := len(f.Readings) - i
			need := len(enc.buf)*rest + len(enc.buf)/2
			if need > maxPooledLines && need > cap(enc.buf) {
				if spare := b.entries.getLines(need); spare != nil {
					enc.buf = append(spare, enc.buf...)
				}
			}
			enc.buf = slices.Grow(enc.buf, need-len(enc.buf))
			index = slices.Grow(index, rest)
		}
		index = append(index, int32(i))
		if len(accepted) == i {
			// Nothing rejected so far: r is already in place. (Copying a
			// Reading onto itself is not free: it has pointers, so each
			// copy runs the GC's write barriers while it marks.)
			accepted = accepted[:i+1]
		} else {
			accepted = append(accepted, *r) // behind i: copies down in place
		}
	}
	rcpt.Accepted = len(accepted)
	if len(rcpt.Rejected) > 0 { // an atomic add less for the common frame
		b.readingsRejected.Add(uint64(len(rcpt.Rejected)))
		for _, rj := range rcpt.Rejected {
			b.rejects.add(rj.Code, 1)
		}
	}
	e.lines, e.index = enc.buf, index
	if len(accepted) == 0 {
		b.recycle(e)
		if f.Done != nil {
			f.Done(telemetry.Outcome{})
		}
		return rcpt, nil
	}
	e.done, e.at = f.Done, received
	if b.cfg.Durable != nil && b.live != nil {
		e.published = accepted
	}
	// Only a full queue looks at ctx.Done, so a caller's lazily armed
	// deadline costs nothing in the common case. Once queued, e is the
	// writers' (and soon the cache's): not used below.
	for {
		full, closed := b.queue.push(e, len(accepted))
		if closed {
			b.recycle(e)
			return telemetry.Receipt{}, fmt.Errorf("bridge: %w", telemetry.ErrClosed)
		}
		if full == nil {
			break
		}
		select {
		case <-full:
		case <-b.stopping:
		case <-ctx.Done():
			b.recycle(e)
			return telemetry.Receipt{}, fmt.Errorf("bridge: write queue full: %w", telemetry.ErrOverloaded)
		}
	}
	// Live is live: dashboards get the readings now, not after the flush.
	if b.live != nil {
		b.live.Publish(accepted)
	}
	return rcpt, nil
}

// Run is the writer: it batches queued frames and writes them to the sink
// until ctx is cancelled. Then it stops accepting frames (Consume returns
// ErrClosed), drains the queue, flushes within Config.DrainTimeout, and
// returns. Frames it could not store by then are completed with an error
// (and so never acknowledged).
func (b *Bridge) Run(ctx context.Context) error {
	// Batches are written by Writers goroutines at once (so encoding and
	// compressing the next batch overlaps InfluxDB storing the last one),
	// but completed strictly in the order they were formed, so that acks
	// leave in the order frames arrived.
	//
	// A batch goes to a writer that is free once its first frame has
	// waited FlushInterval, or at once when it is full or holds a large
	// frame (LargeFrameLines). While every writer
	// is busy the batch keeps growing, up to MaxBatchLines: batches are as
	// small as a quick ack needs while InfluxDB keeps up, and as large as
	// its write time makes them when it does not, where a fixed size would
	// cost either latency or throughput.
	toWrite := make(chan *batch, b.cfg.Writers)
	inOrder := make(chan *batch, b.cfg.Writers+1)
	// free holds a token per writer not writing: flush takes one, a
	// writer puts it back when its batch is done.
	free := make(chan struct{}, b.cfg.Writers)
	for range b.cfg.Writers {
		free <- struct{}{}
	}
	// Writers retry until writeCtx ends: never during normal operation, and
	// at shutdown when the drain deadline passes.
	writeCtx, cancelWrites := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWrites()
	var writers sync.WaitGroup
	for range b.cfg.Writers {
		writers.Go(func() {
			var body []byte
			for bt := range toWrite {
				body = b.writeBatch(writeCtx, bt.entries, body)
				close(bt.done)
				free <- struct{}{}
			}
		})
	}
	// spare returns completed batches' entry slices to Run, so that a
	// batch does not grow a new one a doubling at a time.
	spare := make(chan []*entry, b.cfg.Writers+1)
	completed := make(chan struct{})
	go func() {
		defer close(completed)
		for bt := range inOrder {
			<-bt.done
			for _, e := range bt.entries {
				b.notifyDurable(e)
				complete(e, e.outcome)
				b.entries.reset(e)
			}
			b.entries.putAll(bt.entries)
			clear(bt.entries)
			select {
			case spare <- bt.entries[:0]:
			default:
			}
			b.inflightMu.Lock()
			b.inflightAt = b.inflightAt[1:]
			b.inflightMu.Unlock()
		}
	}()

	var (
		pending  []*entry
		lines    int
		large    bool // pending holds a large frame
		lingered bool // pending's first frame has waited FlushInterval
		timer    = time.NewTimer(time.Hour)
	)
	timer.Stop()
	// take moves queued frames to pending, up to a full batch; while a
	// writer is free, it stops after a large frame (which goes at once, on
	// its own). A batch's first frame starts its linger.
	take := func() {
		writerFree := len(free) > 0
		if large && writerFree {
			return // pending goes alone, now
		}
		first := len(pending) == 0
		var got bool
		pending, lines, got = b.queue.take(pending, lines, b.cfg.MaxBatchLines, writerFree)
		large = large || got
		if first && len(pending) > 0 {
			timer.Reset(b.cfg.FlushInterval)
			b.oldest.Store(pending[0].at.UnixNano())
		}
	}
	// flush hands pending to a writer; the caller holds a free token.
	flush := func() {
		timer.Stop()
		lingered, large = false, false
		if len(pending) == 0 {
			free <- struct{}{} // unused
			return
		}
		if len(free) == 0 {
			// The last free writer: every other one is busy, so the
			// batch takes what queued meanwhile, up to MaxBatchLines.
			pending, lines, _ = b.queue.take(pending, lines, b.cfg.MaxBatchLines, false)
		}
		bt := &batch{entries: pending, done: make(chan struct{})}
		b.inflightMu.Lock()
		b.inflightAt = append(b.inflightAt, pending[0].at.UnixNano())
		b.inflightMu.Unlock()
		inOrder <- bt
		toWrite <- bt
		select {
		case pending = <-spare:
		default:
			pending = nil
		}
		lines = 0
		b.queue.flushed()
		b.oldest.Store(0)
	}
loop:
	for {
		// The queue is looked at for a batch's first frame, then again
		// only once it has lingered: in between, frames wait in the
		// queue without waking this goroutine for each one, unless they
		// make a full batch or one is large (the queue wakes Run then).
		// A full batch leaves them there until a writer takes it: Consume
		// feels the queue fill.
		var writer <-chan struct{}
		if lingered || large || lines >= b.cfg.MaxBatchLines {
			writer = free
		}
		select {
		case <-b.queue.wake:
			if ql, qlarge := b.queue.queued(); len(pending) == 0 || lingered || qlarge || lines+ql >= b.cfg.MaxBatchLines {
				take()
			}
		case <-writer:
			flush()
			take()
		case <-timer.C:
			lingered = true
			take()
		case <-ctx.Done():
			break loop
		}
	}
	timer.Stop()
	b.queue.close() // no Consume can queue a frame after this
	b.closing.Store(true)
	close(b.stopping)

	drainDeadline := time.AfterFunc(b.cfg.DrainTimeout, cancelWrites)
	defer drainDeadline.Stop()
	for {
		pending, lines, _ = b.queue.take(pending, lines, b.cfg.MaxBatchLines, false)
		if lines < b.cfg.MaxBatchLines {
			break
		}
		<-free
		flush()
	}
	<-free
	flush()
	close(toWrite)
	writers.Wait()
	close(inOrder)
	<-completed
	return nil
}

// oldestUnwritten is the receive time (Unix ns) of the oldest frame
// accepted but not yet completed, 0 when there is none.
func (b *Bridge) oldestUnwritten() int64 {
	b.inflightMu.Lock()
	defer b.inflightMu.Unlock()
	if len(b.inflightAt) > 0 {
		return b.inflightAt[0]
	}
	return b.oldest.Load()
}

// batch is one storage write: its entries are completed together, after
// every earlier batch.
type batch struct {
	entries []*entry
	done    chan struct{} // closed when every entry has its outcome
}

// writeBatch writes the entries as one request, retrying transient errors
// until ctx ends, and records every entry's outcome (Run completes them in
// order). It returns body for reuse.
func (b *Bridge) writeBatch(ctx context.Context, es []*entry, body []byte) []byte {
	body = body[:0]
	n := 0
	for _, e := range es {
		body = append(body, e.lines...)
		n += len(e.index)
	}
	err := b.writeRetrying(ctx, body)
	switch {
	case err == nil:
		b.readingsWritten.Add(uint64(n))
		for _, e := range es {
			e.outcome = telemetry.Outcome{}
		}
	case errors.Is(err, telemetry.ErrPermanent):
		b.isolate(ctx, es)
	default:
		b.log.Error("storage write abandoned; frames stay unacknowledged", "readings", n, "error", err)
		for _, e := range es {
			e.outcome = telemetry.Outcome{Err: err}
		}
	}
	return body
}

// isolate handles a batch the storage refused permanently: it writes frames
// on their own, and within a refused frame the lines on their own, so that
// only the offending readings are reported and every other one is stored.
// Rewriting a line that the storage already took from a partial write is
// harmless: the same series and timestamp overwrite themselves.
func (b *Bridge) isolate(ctx context.Context, es []*entry) {
	for _, e := range es {
		err := b.writeRetrying(ctx, e.lines)
		if err == nil {
			b.readingsWritten.Add(uint64(len(e.index)))
			e.outcome = telemetry.Outcome{}
			continue
		}
		if !errors.Is(err, telemetry.ErrPermanent) {
			e.outcome = telemetry.Outcome{Err: err}
			continue
		}
		var out telemetry.Outcome
		lines := splitLines(e.lines)
		for i, line := range lines {
			err := b.writeRetrying(ctx, line)
			switch {
			case err == nil:
				b.readingsWritten.Add(1)
			case errors.Is(err, telemetry.ErrPermanent):
				b.readingsStorageRejected.Add(1)
				b.rejects.add(CodeStorageRejected, 1)
				out.Rejected = append(out.Rejected, telemetry.Rejection{
					Index: int(e.index[i]), Code: CodeStorageRejected, Message: err.Error(),
				})
				b.log.Warn("storage rejected a reading", "line", string(line), "error", err)
				if b.cfg.DeadLetters != nil {
					b.cfg.DeadLetters.DeadLetter(line, err.Error())
				}
			default:
				out.Err = err
			}
		}
		e.outcome = out
	}
}

func splitLines(b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		i := 0
		for i < len(b) && b[i] != '\n' {
			i++
		}
		if i < len(b) {
			i++ // keep the newline
		}
		out = append(out, b[:i])
		b = b[i:]
	}
	return out
}

// retryAfter is implemented by sink errors that carry a server's Retry-After.
type retryAfter interface{ RetryAfterDelay() time.Duration }

// writeRetrying writes body, retrying transient failures with exponential
// backoff (honouring a Retry-After) until it succeeds, fails permanently, or
// ctx ends.
func (b *Bridge) writeRetrying(ctx context.Context, body []byte) error {
	delay := b.cfg.RetryMin
	for attempt := 0; ; attempt++ {
		b.writeBatches.Add(1)
		start := time.Now()
		err := b.sink.Write(ctx, body)
		b.writeLatency.Observe(time.Since(start))
		if err == nil || errors.Is(err, telemetry.ErrPermanent) {
			return err
		}
		b.writeErrors.Add(1)
		if ctx.Err() != nil {
			return fmt.Errorf("bridge: storage write: %w (gave up: %w)", err, ctx.Err())
		}
		wait := delay
		var ra retryAfter
		if errors.As(err, &ra) && ra.RetryAfterDelay() > wait {
			wait = ra.RetryAfterDelay()
		}
		if attempt == 0 || attempt%10 == 0 {
			b.log.Warn("storage write failed; retrying", "attempt", attempt+1, "retry_in", wait, "error", err)
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return fmt.Errorf("bridge: storage write: %w (gave up: %w)", err, ctx.Err())
		}
		b.writeRetries.Add(1)
		delay = min(delay*2, b.cfg.RetryMax)
	}
}

// Recycled entries keep buffers up to these capacities. The bound matters
// while frames wait in the queue: each holds its entry's buffer, however
// much of it the frame uses, so a large one is left to the collector.
const (
	maxPooledLines = 2 << 10 // bytes: a few typical lines
	maxPooledIndex = 256
)

// recycle returns e to the cache. The caller must hold the only reference.
func (b *Bridge) recycle(e *entry) {
	b.entries.reset(e)
	b.entries.put(e)
}

// reset readies e for reuse; a large lines buffer goes to the cache's
// spare buffers rather than stay with e.
func (c *entryCache) reset(e *entry) {
	lines, index := e.lines[:0], e.index[:0]
	if cap(lines) > maxPooledLines {
		c.putLines(lines)
		lines = e.inline.lines[:0]
	}
	if cap(index) > maxPooledIndex {
		index = e.inline.index[:0]
	}
	e.lines, e.index, e.done, e.at, e.outcome, e.published = lines, index, nil, time.Time{}, telemetry.Outcome{}, nil
}

// entryCache recycles entries: Run returns a completed batch's entries at
// once, under one lock, and Consume takes one at a time. Not a sync.Pool:
// its per-P caches fill on the P completing batches and drain only slowly
// to the Ps consuming, so entries were allocated anyway. The price is one
// more lock per frame beside the queue's own. At most maxFreeEntries
// (about 3 MiB) are kept; the rest are left to the collector.
//
// It also keeps a few large lines buffers apart from the entries (at most
// maxSpareLines, each at most maxSpareLineBytes; others are left to the
// collector), for frames of many readings (an HTTP write of a client's
// batch): without them each such frame allocates and zeroes a buffer of
// its size.
type entryCache struct {
	mu    sync.Mutex
	free  []*entry // at most maxFreeEntries
	lines [][]byte // spare large buffers, at most maxSpareLines
}

const (
	maxFreeEntries    = 8192
	maxSpareLines     = 16
	maxSpareLineBytes = 1 << 20
)

// getLines returns a spare buffer of at least n bytes' capacity, or nil.
func (c *entryCache) getLines(n int) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, b := range c.lines {
		if cap(b) >= n {
			last := len(c.lines) - 1
			c.lines[i] = c.lines[last]
			c.lines[last] = nil
			c.lines = c.lines[:last]
			return b
		}
	}
	return nil
}

// putLines keeps b as a spare, room and size permitting.
func (c *entryCache) putLines(b []byte) {
	if cap(b) > maxSpareLineBytes {
		return
	}
	c.mu.Lock()
	if len(c.lines) < maxSpareLines {
		c.lines = append(c.lines, b[:0])
	}
	c.mu.Unlock()
}

// get returns a free entry, or a new one.
func (c *entryCache) get() *entry {
	c.mu.Lock()
	n := len(c.free)
	if n == 0 {
		c.mu.Unlock()
		return newEntry()
	}
	e := c.free[n-1]
	c.free[n-1] = nil
	c.free = c.free[:n-1]
	c.mu.Unlock()
	return e
}

// put keeps e, reset, unless the cache is full.
func (c *entryCache) put(e *entry) {
	c.mu.Lock()
	if len(c.free) < maxFreeEntries {
		c.free = append(c.free, e)
	}
	c.mu.Unlock()
}

// putAll keeps es, reset, as far as the cache has room.
func (c *entryCache) putAll(es []*entry) {
	c.mu.Lock()
	room := maxFreeEntries - len(c.free)
	c.free = append(c.free, es[:min(len(es), room)]...)
	c.mu.Unlock()
}

// notifyDurable tells Config.Durable about a completed entry, with storage's
// refusals indexed into the published readings (the entry's lines, in order).
func (b *Bridge) notifyDurable(e *entry) {
	if b.cfg.Durable == nil || len(e.published) == 0 {
		return
	}
	var refused []telemetry.Rejection
	for _, rj := range e.outcome.Rejected {
		if i, ok := slices.BinarySearch(e.index, int32(rj.Index)); ok {
			rj.Index = i
			refused = append(refused, rj)
		}
	}
	b.cfg.Durable.Durable(e.published, refused, e.outcome.Err)
}

func complete(e *entry, o telemetry.Outcome) {
	if e.done != nil {
		e.done(o)
	}
}
