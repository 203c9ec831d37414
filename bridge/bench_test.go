package bridge

// Micro-benchmarks of the bridge's hot path, one stage at a time, with
// allocations reported: normalize, line-protocol encode and Consume of a
// 100-reading frame (the live side's are in live/bench_test.go).
// The end-to-end figures are bench/'s (make bench, docs/performance.md).

import (
	"context"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/internal/testsupport"
	"github.com/telemetryd/telemetryd/telemetry"
)

// benchReading is testsupport.BenchReading: the harness's reading shape.
func benchReading(dev string, ts int64) telemetry.Reading { return testsupport.BenchReading(dev, ts) }

func benchBridge(cfg Config) *Bridge {
	return New(cfg, nil, nil, slog.New(slog.DiscardHandler))
}

// benchRegistry answers like the device registry: every child belongs to
// its gateway, and every device has two labels.
type benchRegistry struct{ labels []telemetry.Tag }

func (benchRegistry) MayReportFor(_, _ telemetry.DeviceID) bool { return true }

func (r benchRegistry) Labels(telemetry.DeviceID) []telemetry.Tag { return r.labels }

func BenchmarkNormalize(b *testing.B) {
	br := benchBridge(Config{})
	tmpl := benchReading("", 1763820000123000000)
	now := time.Unix(0, tmpl.Time)
	b.ReportAllocs()
	for b.Loop() {
		r := tmpl // normalize rewrites Device and Tags, not the template's arrays
		if rej := br.normalize(&r, "dev-1", now, new(tagArena)); rej != nil {
			b.Fatal(rej)
		}
	}
}

// BenchmarkNormalizeGatewayChild adds the registry work of a gateway frame:
// the child check and two labels merged into the tags.
func BenchmarkNormalizeGatewayChild(b *testing.B) {
	reg := benchRegistry{labels: []telemetry.Tag{{Key: "building", Value: "b7"}, {Key: "floor", Value: "3"}}}
	br := benchBridge(Config{Children: reg, Labels: reg})
	tmpl := benchReading("child-17", 1763820000123000000)
	now := time.Unix(0, tmpl.Time)
	b.ReportAllocs()
	for b.Loop() {
		r := tmpl
		if rej := br.normalize(&r, "gw-1", now, new(tagArena)); rej != nil {
			b.Fatal(rej)
		}
	}
}

// BenchmarkAppendLine is the line-protocol encode of one normalized reading.
func BenchmarkAppendLine(b *testing.B) {
	br := benchBridge(Config{})
	r := benchReading("", 1763820000123000000)
	if rej := br.normalize(&r, "dev-1", time.Unix(0, r.Time), new(tagArena)); rej != nil {
		b.Fatal(rej)
	}
	enc := new(lineEncoder)
	if err := appendLine(enc, &r); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(enc.Bytes())))
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if n++; n%1024 == 0 {
			enc.Reset() // keep the buffer at a batch's size, as Consume does
		}
		if err := appendLine(enc, &r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConsumeSingle is Consume of a one-reading device frame, P7's
// bridge side: the writer runs (Run, recycling entries) into a sink that
// discards.
func BenchmarkConsumeSingle(b *testing.B) {
	br := New(Config{QueueFrames: 1 << 16}, discardSink{}, nil, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = br.Run(ctx) }()
	defer func() { cancel(); <-done }()
	tmpl := benchReading("", 1763820000123000000)
	rs := make([]telemetry.Reading, 1)
	now := time.Unix(0, tmpl.Time)
	b.ReportAllocs()
	for b.Loop() {
		rs[0] = tmpl // Consume replaces Tags and Device, not the template's arrays
		rcpt, err := br.Consume(ctx, &telemetry.Frame{Device: "dev-1", Readings: rs, Received: now})
		if err != nil || rcpt.Accepted != 1 {
			b.Fatal(err, rcpt.Rejected)
		}
	}
}

type discardSink struct{}

func (discardSink) Write(context.Context, []byte) error { return nil }

// BenchmarkConsumeBatch100 is Consume of a gateway frame of 100 readings
// for 100 children (normalize, encode, queue; the queue is drained).
func BenchmarkConsumeBatch100(b *testing.B) {
	reg := benchRegistry{}
	br := New(Config{QueueFrames: 1 << 16, Children: reg, Labels: reg}, nil, nil, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go discardQueued(ctx, br)
	tmpl := make([]telemetry.Reading, 100)
	for i := range tmpl {
		tmpl[i] = benchReading("child-"+strconv.Itoa(i), 1763820000123000000+int64(i))
	}
	rs := make([]telemetry.Reading, len(tmpl))
	now := time.Unix(0, tmpl[0].Time)
	b.ReportAllocs()
	for b.Loop() {
		copy(rs, tmpl)
		rcpt, err := br.Consume(ctx, &telemetry.Frame{Device: "gw-1", Readings: rs, Received: now})
		if err != nil || rcpt.Accepted != len(rs) {
			b.Fatal(err, rcpt.Rejected)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(rs)), "ns/reading")
}

// discardQueued empties br's queue whenever it wakes its writer, until ctx
// ends: Consume measured without Run's batching and writing.
func discardQueued(ctx context.Context, br *Bridge) {
	var pending []*entry
	for {
		select {
		case <-br.queue.wake:
			for {
				pending, _, _ = br.queue.take(pending[:0], 0, br.cfg.MaxBatchLines, false)
				if len(pending) == 0 {
					break
				}
			}
		case <-ctx.Done():
			return
		}
	}
}
