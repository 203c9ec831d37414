package telemetry

import (
	"slices"
	"sync/atomic"
	"time"
)

// Histogram counts durations in fixed buckets. Observe is lock-free and does
// not allocate, so it can sit on a hot path; Snapshot is for metrics
// scrapes. The zero Histogram is not usable: create one with NewHistogram.
type Histogram struct {
	bounds []time.Duration // sorted inclusive upper bounds; immutable
	counts []atomic.Uint64 // len(bounds)+1: the last bucket is +Inf
	sum    atomic.Int64    // nanoseconds
}

// DefaultLatencyBounds are bucket bounds suited to network request latency:
// 1ms to 30s, roughly ×2.5 apart. It returns a new slice on every call.
func DefaultLatencyBounds() []time.Duration {
	return []time.Duration{
		time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
		10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
		100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
		time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second, 30 * time.Second,
	}
}

// NewHistogram returns a histogram with the given bucket upper bounds
// (sorted and de-duplicated here), or DefaultLatencyBounds when none are given.
func NewHistogram(bounds ...time.Duration) *Histogram {
	if len(bounds) == 0 {
		bounds = DefaultLatencyBounds()
	}
	bounds = slices.Compact(slices.Sorted(slices.Values(bounds)))
	return &Histogram{bounds: bounds, counts: make([]atomic.Uint64, len(bounds)+1)}
}

// Observe records one duration.
func (h *Histogram) Observe(d time.Duration) {
	i, _ := slices.BinarySearch(h.bounds, d) // first bound >= d: bounds are inclusive
	h.counts[i].Add(1)
	h.sum.Add(int64(d))
}

// HistogramSnapshot is a histogram's state at one instant.
type HistogramSnapshot struct {
	// Bounds are the buckets' inclusive upper bounds.
	Bounds []time.Duration
	// Counts[i] is the number of observations in bucket i (not cumulative);
	// Counts[len(Bounds)] counts those above the last bound.
	Counts []uint64
	// Count is the total number of observations (the sum of Counts).
	Count uint64
	// Sum is the sum of all observed durations.
	Sum time.Duration
}

// Snapshot copies the current counts. Observations racing with it may be
// counted in Sum but not yet in Counts (or the reverse); Count always
// equals the sum of Counts.
func (h *Histogram) Snapshot() HistogramSnapshot {
	s := HistogramSnapshot{Bounds: slices.Clone(h.bounds), Counts: make([]uint64, len(h.counts))}
	for i := range h.counts {
		s.Counts[i] = h.counts[i].Load()
		s.Count += s.Counts[i]
	}
	s.Sum = time.Duration(h.sum.Load())
	return s
}
