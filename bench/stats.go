package main

import (
	"cmp"
	"math"
	"math/bits"
	"slices"
	"sync/atomic"
	"time"
)

// hist is a lock-free latency histogram: log2 buckets of 1 µs .. ~37 h,
// each split into histSub linear sub-buckets (≤ 1/histSub relative error).
// Record may be called from any goroutine.
type hist struct {
	counts [histOctaves * histSub]atomic.Int64
	n      atomic.Int64
	sum    atomic.Int64 // ns
	max    atomic.Int64 // ns
}

const (
	histSub     = 32
	histOctaves = 38
)

func histIndex(ns int64) int {
	us := uint64(max(ns/1000, 1))
	oct := bits.Len64(us) - 1 // us in [2^oct, 2^(oct+1))
	if oct >= histOctaves {
		return len(hist{}.counts) - 1
	}
	var sub uint64
	if oct >= 5 {
		sub = (us >> (oct - 5)) & (histSub - 1)
	} else {
		sub = (us << (5 - oct)) & (histSub - 1)
	}
	return oct*histSub + int(sub)
}

// histUpper is the upper bound (ns) of bucket i.
func histUpper(i int) int64 {
	oct, sub := i/histSub, i%histSub
	lo := math.Ldexp(1, oct)
	return int64(lo*(1+float64(sub+1)/histSub)) * 1000
}

func (h *hist) record(d time.Duration) {
	ns := int64(d)
	if ns < 0 {
		ns = 0
	}
	h.counts[histIndex(ns)].Add(1)
	h.n.Add(1)
	h.sum.Add(ns)
	for {
		m := h.max.Load()
		if ns <= m || h.max.CompareAndSwap(m, ns) {
			break
		}
	}
}

// quantile returns the q-quantile (0..1) as an upper bucket bound.
func (h *hist) quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(n)))
	var seen int64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			return time.Duration(min(histUpper(i), h.max.Load()))
		}
	}
	return time.Duration(h.max.Load())
}

func (h *hist) count() int64 { return h.n.Load() }

// latencySummary is what the report shows of a histogram.
type latencySummary struct {
	Count  int64   `json:"count"`
	P50ms  float64 `json:"p50_ms"`
	P90ms  float64 `json:"p90_ms"`
	P99ms  float64 `json:"p99_ms"`
	P999ms float64 `json:"p999_ms"`
	MaxMs  float64 `json:"max_ms"`
	MeanMs float64 `json:"mean_ms"`
}

func (h *hist) summary() latencySummary {
	n := h.n.Load()
	s := latencySummary{Count: n, P50ms: ms(h.quantile(.5)), P90ms: ms(h.quantile(.9)), P99ms: ms(h.quantile(.99)),
		P999ms: ms(h.quantile(.999)), MaxMs: ms(time.Duration(h.max.Load()))}
	if n > 0 {
		s.MeanMs = ms(time.Duration(h.sum.Load() / n))
	}
	return s
}

func ms(d time.Duration) float64 { return round3(float64(d) / 1e6) }

func round2(x float64) float64 { return math.Round(x*100) / 100 }
func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// window measures a counter's rate between two points in time.
type window struct {
	t0 time.Time
	n0 int64
}

func startWindow(n int64) window { return window{t0: time.Now(), n0: n} }

// rate is (n−n0)/elapsed per second.
func (w window) rate(n int64) float64 {
	el := time.Since(w.t0).Seconds()
	if el <= 0 {
		return 0
	}
	return float64(n-w.n0) / el
}

// sleepCtx sleeps d or until ctx is done; it reports whether d elapsed.
func sleepCtx(ctx interface{ Done() <-chan struct{} }, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// pacer releases events at a fixed rate from its start; callers that fall
// behind catch up without sleeping (open loop).
type pacer struct {
	start    time.Time
	interval float64 // ns per event
}

func newPacer(rate float64) *pacer {
	return &pacer{start: time.Now(), interval: 1e9 / max(rate, 1e-9)}
}

// wait blocks until event i is due (or ctx is done); false if ctx ended.
func (p *pacer) wait(ctx interface{ Done() <-chan struct{} }, i int64) bool {
	due := p.start.Add(time.Duration(float64(i) * p.interval))
	if d := time.Until(due); d > 200*time.Microsecond {
		return sleepCtx(ctx, d)
	}
	select {
	case <-ctx.Done():
		return false
	default:
		return true
	}
}

func maxOf[T cmp.Ordered](xs []T) T {
	var m T
	for i, x := range xs {
		if i == 0 || x > m {
			m = x
		}
	}
	return m
}

// secondLargest returns the second-largest of xs (the largest when xs has
// one element, 0 when none).
func secondLargest(xs []float64) float64 {
	if len(xs) < 2 {
		return maxOf(xs)
	}
	s := slices.Sorted(slices.Values(xs))
	return s[len(s)-2]
}
