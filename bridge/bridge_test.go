package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/telemetryd/telemetryd/internal/testsupport"
	"github.com/telemetryd/telemetryd/telemetry"
)

// fakeSink records writes; fail decides the error of each write.
type fakeSink struct {
	mu     sync.Mutex
	writes []string
	fail   func(body string) error
	block  chan struct{} // when set, Write waits for it
}

func (s *fakeSink) Write(ctx context.Context, lines []byte) error {
	if s.block != nil {
		select {
		case <-s.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		if err := s.fail(string(lines)); err != nil {
			return err
		}
	}
	s.writes = append(s.writes, string(lines))
	return nil
}

func (s *fakeSink) stored() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.writes, "")
}

func (s *fakeSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.writes)
}

type recorder struct {
	mu       sync.Mutex
	outcomes map[int]telemetry.Outcome
}

func (r *recorder) done(i int) func(telemetry.Outcome) {
	return func(o telemetry.Outcome) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.outcomes == nil {
			r.outcomes = map[int]telemetry.Outcome{}
		}
		if _, dup := r.outcomes[i]; dup {
			panic(fmt.Sprintf("frame %d completed twice", i))
		}
		r.outcomes[i] = o
	}
}

func (r *recorder) get(i int) (telemetry.Outcome, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	o, ok := r.outcomes[i]
	return o, ok
}

func (r *recorder) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.outcomes)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testsupport.Eventually(t, 10*time.Second, what, cond)
}

func frame(dev string, done func(telemetry.Outcome), values ...float64) *telemetry.Frame {
	f := &telemetry.Frame{Device: telemetry.DeviceID(dev), Done: done, Received: time.Unix(1763820000, 0)}
	for i, v := range values {
		f.Readings = append(f.Readings, telemetry.Reading{
			Measurement: "m",
			Fields:      []telemetry.Field{{Name: "v", Value: telemetry.Float(v)}},
			Time:        int64(1763820000000000000 + i),
		})
	}
	return f
}

func startBridge(t *testing.T, cfg Config, sink Sink, live Publisher) (*Bridge, context.CancelFunc, chan struct{}) {
	t.Helper()
	b := New(cfg, sink, live, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { _ = b.Run(ctx); close(stopped) }()
	t.Cleanup(func() { cancel(); <-stopped })
	return b, cancel, stopped
}

func TestBridgeAcksOnlyAfterWrite(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := &fakeSink{block: make(chan struct{})}
		b, _, _ := startBridge(t, Config{FlushInterval: time.Millisecond}, sink, nil)
		var rec recorder
		rcpt, err := b.Consume(context.Background(), frame("d1", rec.done(0), 1, 2))
		if err != nil || rcpt.Accepted != 2 || len(rcpt.Rejected) != 0 {
			t.Fatalf("Consume = %+v, %v", rcpt, err)
		}
		// The write is held. Once every goroutine of the bubble is blocked,
		// with the fake clock well past FlushInterval, nothing can still be on
		// its way to an ack.
		time.Sleep(time.Second)
		synctest.Wait()
		if rec.len() != 0 {
			t.Fatal("frame acknowledged before its write completed")
		}
		close(sink.block)
		eventually(t, "ack", func() bool { return rec.len() == 1 })
		if o, _ := rec.get(0); o.Err != nil || len(o.Rejected) != 0 {
			t.Fatalf("outcome = %+v", o)
		}
		if got := sink.stored(); strings.Count(got, "\n") != 2 || !strings.Contains(got, "device_id=d1") {
			t.Fatalf("stored %q", got)
		}
	})
}

func TestBridgeBatchesUpToMaxLines(t *testing.T) {
	sink := &fakeSink{}
	b, _, _ := startBridge(t, Config{MaxBatchLines: 10, FlushInterval: time.Hour}, sink, nil)
	var rec recorder
	for i := range 5 {
		if _, err := b.Consume(context.Background(), frame("d1", rec.done(i), 1, 2)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "5 acks", func() bool { return rec.len() == 5 })
	if sink.count() != 1 {
		t.Fatalf("%d writes, want one batch of 10 lines", sink.count())
	}
}

// TestBridgeFullBatchDoesNotLinger: frames that arrive while a batch
// lingers wait in the queue, but once they make a full batch it is written
// at once, FlushInterval or not.
func TestBridgeFullBatchDoesNotLinger(t *testing.T) {
	sink := &fakeSink{}
	b, _, _ := startBridge(t, Config{MaxBatchLines: 10, FlushInterval: time.Hour}, sink, nil)
	var rec recorder
	if _, err := b.Consume(context.Background(), frame("d1", rec.done(0), 1, 2)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "first frame pending", func() bool { return b.Stats().QueueFrames == 0 })
	for i := 1; i < 5; i++ {
		if _, err := b.Consume(context.Background(), frame("d1", rec.done(i), 1, 2)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "5 acks", func() bool { return rec.len() == 5 })
	if sink.count() != 1 {
		t.Fatalf("%d writes, want one batch of 10 lines", sink.count())
	}
}

// enteredSink counts the writes under way and holds each until release
// is closed.
type enteredSink struct {
	entered atomic.Int32
	release chan struct{}
}

func (s *enteredSink) Write(ctx context.Context, lines []byte) error {
	s.entered.Add(1)
	select {
	case <-s.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestBridgeLargeFramesGoToFreeWritersAtOnce: frames of LargeFrameLines
// lines each (HTTP writes of a client's batch) are written as they come,
// one concurrent write each, instead of lingering to be merged into one.
func TestBridgeLargeFramesGoToFreeWritersAtOnce(t *testing.T) {
	sink := &enteredSink{release: make(chan struct{})}
	b, _, _ := startBridge(t, Config{Writers: 4, MaxBatchLines: 100, LargeFrameLines: 3, FlushInterval: time.Hour}, sink, nil)
	release := sync.OnceFunc(func() { close(sink.release) })
	t.Cleanup(release)
	var rec recorder
	for i := range 4 {
		if _, err := b.Consume(context.Background(), frame("d1", rec.done(i), 1, 2, 3)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "4 writes under way at once", func() bool { return sink.entered.Load() == 4 })
	// A small frame lingers (an hour here), writers free or not.
	if _, err := b.Consume(context.Background(), frame("d1", rec.done(4), 1, 2)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the short frame taken from the queue", func() bool { return b.Stats().QueueFrames == 0 })
	release()
	eventually(t, "the 4 large frames acknowledged", func() bool { return rec.len() == 4 })
	if n := sink.entered.Load(); n != 4 {
		t.Fatalf("%d writes, want the short frame left lingering", n)
	}
}

// TestBridgeBatchesGrowWhileWritersAreBusy: a batch goes to a free writer
// after FlushInterval; while none is free, frames gather into one batch.
func TestBridgeBatchesGrowWhileWritersAreBusy(t *testing.T) {
	sink := &fakeSink{block: make(chan struct{})}
	b, _, _ := startBridge(t, Config{Writers: 1, MaxBatchLines: 1000, FlushInterval: time.Millisecond}, sink, nil)
	release := sync.OnceFunc(func() { close(sink.block) })
	t.Cleanup(release) // before the bridge stops, should the test fail early
	var rec recorder
	if _, err := b.Consume(context.Background(), frame("d1", rec.done(0), 1)); err != nil {
		t.Fatal(err)
	}
	// The first frame's batch is with the only writer once it is no
	// longer queued or pending (oldestUnwritten moves to the in-flight list).
	eventually(t, "first batch taken", func() bool {
		b.inflightMu.Lock()
		defer b.inflightMu.Unlock()
		return len(b.inflightAt) == 1
	})
	for i := 1; i < 10; i++ {
		if _, err := b.Consume(context.Background(), frame("d1", rec.done(i), 1)); err != nil {
			t.Fatal(err)
		}
		// Longer than FlushInterval: a timer alone would cut a batch here.
		time.Sleep(3 * time.Millisecond)
	}
	eventually(t, "queue drained into the pending batch", func() bool { return b.Stats().QueueFrames == 0 })
	release()
	eventually(t, "10 acks", func() bool { return rec.len() == 10 })
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.writes) != 2 || strings.Count(sink.writes[1], "\n") != 9 {
		t.Fatalf("writes %q, want the first frame, then the other nine in one batch", sink.writes)
	}
}

func TestBridgeReportsRejectedReadingsAndAcksTheRest(t *testing.T) {
	sink := &fakeSink{}
	b, _, _ := startBridge(t, Config{FlushInterval: time.Millisecond}, sink, nil)
	var rec recorder
	f := frame("d1", rec.done(0), 1, 2, 3)
	f.Readings[1].Measurement = "bad name"
	f.Readings = append(f.Readings, telemetry.Reading{}) // decoder placeholder
	f.Invalid = []telemetry.Rejection{{Index: 3, Code: "invalid_value", Message: "null"}}
	rcpt, err := b.Consume(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	if rcpt.Accepted != 2 || len(rcpt.Rejected) != 2 || rcpt.Rejected[0].Index != 1 || rcpt.Rejected[0].Code != CodeInvalidName || rcpt.Rejected[1].Index != 3 {
		t.Fatalf("receipt = %+v", rcpt)
	}
	eventually(t, "ack", func() bool { return rec.len() == 1 })
}

func TestBridgeAllRejectedCompletesAtOnce(t *testing.T) {
	b := testBridge(Config{})
	var rec recorder
	f := frame("d1", rec.done(0), 1)
	f.Readings[0].Measurement = ""
	rcpt, err := b.Consume(context.Background(), f)
	if err != nil || rcpt.Accepted != 0 {
		t.Fatal(rcpt, err)
	}
	if _, ok := rec.get(0); !ok {
		t.Fatal("a frame with nothing accepted must complete immediately")
	}
}

func TestBridgeRetriesTransientErrors(t *testing.T) {
	var mu sync.Mutex
	failures := 3
	sink := &fakeSink{fail: func(string) error {
		mu.Lock()
		defer mu.Unlock()
		if failures > 0 {
			failures--
			return errors.New("connection refused")
		}
		return nil
	}}
	b, _, _ := startBridge(t, Config{FlushInterval: time.Millisecond, RetryMin: time.Millisecond, RetryMax: 2 * time.Millisecond}, sink, nil)
	var rec recorder
	if _, err := b.Consume(context.Background(), frame("d1", rec.done(0), 1)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ack after retries", func() bool { return rec.len() == 1 })
	if o, _ := rec.get(0); o.Err != nil {
		t.Fatal(o.Err)
	}
	if s := b.Stats(); s.WriteRetries != 3 || s.ReadingsWritten != 1 {
		t.Fatalf("stats = %+v", s)
	}
}

// permanentErr mimics storage's classification of a 400.
type permanentErr struct{ msg string }

func (e permanentErr) Error() string { return e.msg }
func (e permanentErr) Unwrap() error { return telemetry.ErrPermanent }

func TestBridgeIsolatesPermanentlyRejectedLines(t *testing.T) {
	sink := &fakeSink{fail: func(body string) error {
		if strings.Contains(body, "v=666") {
			return permanentErr{"partial write: field type conflict"}
		}
		return nil
	}}
	b, _, _ := startBridge(t, Config{FlushInterval: 5 * time.Millisecond, MaxBatchLines: 100}, sink, nil)
	var rec recorder
	for i, vals := range [][]float64{{1, 2}, {3, 666, 4}, {5}} {
		if _, err := b.Consume(context.Background(), frame("d1", rec.done(i), vals...)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "3 outcomes", func() bool { return rec.len() == 3 })
	o, _ := rec.get(1)
	if o.Err != nil || len(o.Rejected) != 1 || o.Rejected[0].Index != 1 || o.Rejected[0].Code != CodeStorageRejected ||
		!strings.Contains(o.Rejected[0].Message, "type conflict") {
		t.Fatalf("outcome of the frame with the bad line = %+v", o)
	}
	for _, i := range []int{0, 2} {
		if o, _ := rec.get(i); o.Err != nil || len(o.Rejected) != 0 {
			t.Fatalf("frame %d outcome = %+v", i, o)
		}
	}
	stored := sink.stored()
	for _, v := range []string{"v=1 ", "v=2 ", "v=3 ", "v=4 ", "v=5 "} {
		if !strings.Contains(stored, v) {
			t.Errorf("good line %q not stored", v)
		}
	}
}

func TestBridgeOverloadedWhenQueueFull(t *testing.T) {
	sink := &fakeSink{block: make(chan struct{})}
	defer close(sink.block)
	b, _, _ := startBridge(t, Config{QueueFrames: 1, MaxBatchLines: 1, FlushInterval: time.Millisecond}, sink, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	var err error
	for i := 0; i < 50 && err == nil; i++ { // the writers and their hand-off hold a few
		_, err = b.Consume(ctx, frame("d1", nil, 1))
	}
	if !errors.Is(err, telemetry.ErrOverloaded) {
		t.Fatalf("err = %v, want ErrOverloaded", err)
	}
}

func TestBridgeDrainsOnShutdown(t *testing.T) {
	sink := &fakeSink{}
	b, cancel, stopped := startBridge(t, Config{FlushInterval: time.Hour}, sink, nil)
	var rec recorder
	for i := range 3 {
		if _, err := b.Consume(context.Background(), frame("d1", rec.done(i), float64(i))); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	<-stopped
	if rec.len() != 3 || strings.Count(sink.stored(), "\n") != 3 {
		t.Fatalf("after drain: %d outcomes, stored %q", rec.len(), sink.stored())
	}
	if _, err := b.Consume(context.Background(), frame("d1", nil, 1)); !errors.Is(err, telemetry.ErrClosed) {
		t.Fatalf("Consume after shutdown = %v, want ErrClosed", err)
	}
}

type publishRecorder struct {
	mu sync.Mutex
	rs []telemetry.Reading
}

func (p *publishRecorder) Publish(rs []telemetry.Reading) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rs = append(p.rs, rs...)
}

func TestBridgePublishesLiveBeforeTheWrite(t *testing.T) {
	sink := &fakeSink{block: make(chan struct{})}
	defer close(sink.block)
	live := &publishRecorder{}
	b, _, _ := startBridge(t, Config{}, sink, live)
	f := frame("d1", nil, 7)
	f.Readings = append(f.Readings, telemetry.Reading{Measurement: "bad name", Fields: f.Readings[0].Fields})
	if _, err := b.Consume(context.Background(), f); err != nil {
		t.Fatal(err)
	}
	live.mu.Lock()
	defer live.mu.Unlock()
	if len(live.rs) != 1 || live.rs[0].Fields[0].Value.AsFloat() != 7 {
		t.Fatalf("published %+v; want only the accepted reading, before any write", live.rs)
	}
}

func BenchmarkConsume(b *testing.B) {
	sink := &fakeSink{}
	br := New(Config{QueueFrames: 1 << 20}, sink, nil, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go discardQueued(ctx, br)
	b.ReportAllocs()
	for b.Loop() {
		f := &telemetry.Frame{Device: "dev-1", Received: time.Now(), Readings: []telemetry.Reading{{
			Measurement: "environment",
			Tags:        []telemetry.Tag{tg("site", "plant-3")},
			Fields: []telemetry.Field{
				{Name: "temperature", Value: telemetry.Float(21.4)}, {Name: "humidity", Value: telemetry.Float(40.1)},
				{Name: "door_open", Value: telemetry.Bool(false)}, {Name: "status", Value: telemetry.String("ok")},
			},
			Time: 1763820000123000000,
		}}}
		if _, err := br.Consume(ctx, f); err != nil {
			b.Fatal(err)
		}
	}
}

func TestBridgeIgnoresSkippedSlots(t *testing.T) {
	b := testBridge(Config{})
	f := frame("d1", nil, 1)
	f.Readings = append([]telemetry.Reading{{}}, f.Readings...) // slot 0: a SenML base-only record
	f.Skipped = []int{0}
	rcpt, err := b.Consume(context.Background(), f)
	if err != nil || rcpt.Accepted != 1 || len(rcpt.Rejected) != 0 {
		t.Fatalf("receipt = %+v, %v", rcpt, err)
	}
}

// gatedSink holds writes whose body contains hold until release is closed.
type gatedSink struct {
	fakeSink
	hold    string
	release chan struct{}
}

func (s *gatedSink) Write(ctx context.Context, lines []byte) error {
	if strings.Contains(string(lines), s.hold) {
		<-s.release
	}
	return s.fakeSink.Write(ctx, lines)
}

func TestBridgeCompletesInArrivalOrderWithParallelWriters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := &gatedSink{hold: "v=1 ", release: make(chan struct{})}
		b, _, _ := startBridge(t, Config{Writers: 2, MaxBatchLines: 1, FlushInterval: time.Hour}, sink, nil)
		var rec recorder
		for i, v := range []float64{1, 2} {
			if _, err := b.Consume(context.Background(), frame("d1", rec.done(i), v)); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, "the second batch written", func() bool { return strings.Contains(sink.stored(), "v=2 ") })
		// Every goroutine of the bubble blocked: the second frame's ack, were
		// it not held behind the first, would have been sent by now.
		synctest.Wait()
		if rec.len() != 0 {
			t.Fatal("a later frame was acknowledged before an earlier one")
		}
		close(sink.release)
		eventually(t, "both acknowledged", func() bool { return rec.len() == 2 })
	})
}

func TestEntryCache(t *testing.T) {
	var c entryCache
	e := c.get()
	if len(e.lines) != 0 || cap(e.lines) != len(e.inline.lines) || cap(e.index) != len(e.inline.index) {
		t.Fatalf("a new entry: lines %d/%d, index %d/%d", len(e.lines), cap(e.lines), len(e.index), cap(e.index))
	}
	es := make([]*entry, maxFreeEntries+10)
	for i := range es {
		es[i] = newEntry()
	}
	c.putAll(es[:1])
	if got := c.get(); got != es[0] {
		t.Fatal("get did not return the entry put back")
	}
	c.putAll(es)
	if len(c.free) != maxFreeEntries {
		t.Fatalf("%d entries kept, want the bound %d", len(c.free), maxFreeEntries)
	}
	if got := c.get(); got != es[maxFreeEntries-1] {
		t.Fatal("want the last entry kept")
	}
}

// TestEntryCacheSpareLines: a large frame's lines buffer is kept apart
// when its entry is reset and serves the next large frame; too many or too
// large ones are left to the collector.
func TestEntryCacheSpareLines(t *testing.T) {
	var c entryCache
	e := c.get()
	e.lines = make([]byte, 10, 64<<10)
	big := &e.lines[:1][0]
	c.reset(e)
	if cap(e.lines) != len(e.inline.lines) {
		t.Fatal("a reset entry kept its large buffer")
	}
	if got := c.getLines(100 << 10); got != nil {
		t.Fatal("a spare smaller than asked for was handed out")
	}
	got := c.getLines(32 << 10)
	if got == nil || len(got) != 0 || &got[:1][0] != big {
		t.Fatal("the spare buffer was not handed out, empty")
	}
	c.putLines(make([]byte, 0, maxSpareLineBytes+1))
	for range maxSpareLines + 5 {
		c.putLines(make([]byte, 0, 8<<10))
	}
	if len(c.lines) != maxSpareLines {
		t.Fatalf("%d spares kept, want the bound %d", len(c.lines), maxSpareLines)
	}
	for _, b := range c.lines {
		if cap(b) > maxSpareLineBytes {
			t.Fatal("an oversized buffer was kept")
		}
	}
}

// TestBridgeReusesLargeFrameBuffers: consecutive large frames encode into
// the same spare buffer once the first is completed, and their lines are
// still right.
func TestBridgeReusesLargeFrameBuffers(t *testing.T) {
	sink := &fakeSink{}
	b, _, _ := startBridge(t, Config{FlushInterval: time.Millisecond}, sink, nil)
	values := make([]float64, 200)
	for i := range values {
		values[i] = float64(i)
	}
	var rec recorder
	for i := range 3 {
		if _, err := b.Consume(context.Background(), frame("d1", rec.done(i), values...)); err != nil {
			t.Fatal(err)
		}
		eventually(t, "frame acknowledged", func() bool { return rec.len() == i+1 })
	}
	b.entries.mu.Lock()
	spares := len(b.entries.lines)
	b.entries.mu.Unlock()
	if spares != 1 {
		t.Fatalf("%d spare buffers, want the one the three frames shared", spares)
	}
	if got := strings.Count(sink.stored(), "\n"); got != 600 {
		t.Fatalf("%d lines stored, want 600", got)
	}
	if !strings.Contains(sink.stored(), "v=199 ") {
		t.Fatal("a frame's last line is missing")
	}
}

// TestDefaultConfigIsTheZeroValue: DefaultConfig, which cmd's flags
// default to, is what the zero Config means.
func TestDefaultConfigIsTheZeroValue(t *testing.T) {
	if got, want := (Config{}).withDefaults(), DefaultConfig(); !reflect.DeepEqual(got, want) {
		t.Fatalf("zero Config means %+v, DefaultConfig is %+v", got, want)
	}
}
