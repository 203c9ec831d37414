package simulator

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestHistIndexMonotonic(t *testing.T) {
	prev := -1
	for us := int64(0); us < 1<<22; us += 1 + us/97 {
		i := histIndex(us)
		if i < prev {
			t.Fatalf("index(%d) = %d < %d", us, i, prev)
		}
		prev = i
		if v := histValue(i); math.Abs(v-float64(us)) > 0.016*float64(us)+1 {
			t.Fatalf("value of bucket %d (for %d µs) = %.1f: more than 1.6%% off", i, us, v)
		}
	}
	if histIndex(math.MaxInt64) != histBuckets-1 || histIndex(-5) != 0 {
		t.Fatal("out-of-range values must clamp")
	}
}

func TestHistQuantiles(t *testing.T) {
	for _, dist := range []struct {
		name string
		gen  func(r *rand.Rand) time.Duration
	}{
		{"uniform 0-200ms", func(r *rand.Rand) time.Duration { return time.Duration(r.Int64N(int64(200 * time.Millisecond))) }},
		{"lognormal", func(r *rand.Rand) time.Duration {
			return time.Duration(math.Exp(r.NormFloat64()*1.2) * float64(5*time.Millisecond))
		}},
	} {
		t.Run(dist.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, 2))
			var h hist
			var exact []float64
			for range 100000 {
				d := dist.gen(r)
				h.record(d)
				exact = append(exact, float64(d.Microseconds()))
			}
			slices.Sort(exact)
			s := h.summary()
			if s.Count != 100000 || s.Max != exact[len(exact)-1]/1000 {
				t.Fatalf("count %d max %v, want 100000 and %v", s.Count, s.Max, exact[len(exact)-1]/1000)
			}
			for _, q := range []struct {
				p   float64
				got float64
			}{{0.5, s.P50}, {0.9, s.P90}, {0.99, s.P99}} {
				want := exact[int(math.Ceil(q.p*float64(len(exact))))-1] / 1000
				if math.Abs(q.got-want) > 0.02*want+0.002 {
					t.Errorf("p%v = %.3fms, exact %.3fms", q.p*100, q.got, want)
				}
			}
		})
	}
	var empty hist
	if s := empty.summary(); s.Count != 0 || s.P99 != 0 {
		t.Fatalf("empty summary %+v", s)
	}
}
