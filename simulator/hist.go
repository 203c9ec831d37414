package simulator

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// hist is a lock-free latency histogram in microseconds with log-linear
// buckets: exact below 128 µs, then 64 buckets per power of two (relative
// error under 1.6%). Memory is fixed (about 18 KiB) however long the run.
type hist struct {
	counts [histBuckets]atomic.Uint64
	max    atomic.Int64 // µs
}

const (
	histSub     = 64
	histLinear  = 2 * histSub
	histBuckets = histLinear + 40*histSub
)

func histIndex(us int64) int {
	if us < histLinear {
		return int(max(us, 0))
	}
	shift := bits.Len64(uint64(us)) - 7 // top 7 bits: 64..127
	top := int(us >> shift)
	i := histLinear + (shift-1)*histSub + top - histSub
	return min(i, histBuckets-1)
}

// histValue is the midpoint of bucket i, in µs.
func histValue(i int) float64 {
	if i < histLinear {
		return float64(i)
	}
	shift := (i-histLinear)/histSub + 1
	top := (i-histLinear)%histSub + histSub
	lo := float64(int64(top) << shift)
	return lo + float64(int64(1)<<shift)/2
}

func (h *hist) record(d time.Duration) {
	us := d.Microseconds()
	h.counts[histIndex(us)].Add(1)
	for {
		m := h.max.Load()
		if us <= m || h.max.CompareAndSwap(m, us) {
			return
		}
	}
}

// snapshot copies the counts (for interval percentiles in the progress line).
func (h *hist) snapshot() *[histBuckets]uint64 {
	var s [histBuckets]uint64
	for i := range s {
		s[i] = h.counts[i].Load()
	}
	return &s
}

// quantile of counts (p in [0,1]) in µs; NaN when empty.
func quantile(counts *[histBuckets]uint64, p float64) float64 {
	var total uint64
	for _, c := range counts {
		total += c
	}
	if total == 0 {
		return math.NaN()
	}
	rank := uint64(math.Ceil(p * float64(total)))
	rank = max(rank, 1)
	var cum uint64
	for i, c := range counts {
		if cum += c; cum >= rank {
			return histValue(i)
		}
	}
	return histValue(histBuckets - 1)
}

// Latency summarizes one latency histogram, in milliseconds.
type Latency struct {
	Count uint64  `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

func (h *hist) summary() Latency {
	s := h.snapshot()
	var l Latency
	for _, c := range s {
		l.Count += c
	}
	if l.Count == 0 {
		return l
	}
	ms := func(us float64) float64 { return math.Round(us) / 1000 }
	l.P50, l.P90, l.P99 = ms(quantile(s, 0.5)), ms(quantile(s, 0.9)), ms(quantile(s, 0.99))
	l.Max = float64(h.max.Load()) / 1000
	// A bucket midpoint may exceed the exact maximum; never report p > max.
	l.P50, l.P90, l.P99 = min(l.P50, l.Max), min(l.P90, l.Max), min(l.P99, l.Max)
	return l
}
