package telemetry

import (
	"slices"
	"sync"
	"testing"
	"time"
)

func TestHistogramBuckets(t *testing.T) {
	h := NewHistogram(10*time.Millisecond, time.Millisecond, time.Second, time.Millisecond)
	for _, d := range []time.Duration{0, time.Millisecond, time.Millisecond + 1, 10 * time.Millisecond, time.Second, time.Minute} {
		h.Observe(d)
	}
	s := h.Snapshot()
	if want := []time.Duration{time.Millisecond, 10 * time.Millisecond, time.Second}; !slices.Equal(s.Bounds, want) {
		t.Fatalf("bounds %v, want %v (sorted, deduplicated)", s.Bounds, want)
	}
	// Bounds are inclusive: 1ms counts in the first bucket, 1ms+1ns in the second.
	if want := []uint64{2, 2, 1, 1}; !slices.Equal(s.Counts, want) {
		t.Fatalf("counts %v, want %v", s.Counts, want)
	}
	if s.Count != 6 {
		t.Fatalf("count %d, want 6", s.Count)
	}
	if want := 2*time.Millisecond + 1 + 10*time.Millisecond + time.Second + time.Minute; s.Sum != want {
		t.Fatalf("sum %v, want %v", s.Sum, want)
	}
}

func TestHistogramDefaultBoundsAndConcurrency(t *testing.T) {
	h := NewHistogram()
	if got := len(h.Snapshot().Bounds); got != len(DefaultLatencyBounds()) {
		t.Fatalf("%d default bounds", got)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 1000 {
				h.Observe(time.Duration(g*i) * time.Microsecond)
			}
		})
	}
	wg.Wait()
	if s := h.Snapshot(); s.Count != 4000 {
		t.Fatalf("count %d after 4000 observations", s.Count)
	}
}

func TestHistogramObserveDoesNotAllocate(t *testing.T) {
	h := NewHistogram()
	if n := testing.AllocsPerRun(100, func() { h.Observe(3 * time.Millisecond) }); n != 0 {
		t.Fatalf("Observe allocates %v times", n)
	}
}

func BenchmarkHistogramObserve(b *testing.B) {
	h := NewHistogram()
	b.RunParallel(func(pb *testing.PB) {
		d := time.Duration(0)
		for pb.Next() {
			h.Observe(d)
			d += 7 * time.Microsecond
		}
	})
}
