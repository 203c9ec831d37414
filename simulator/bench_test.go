package simulator

import (
	"math/rand/v2"
	"testing"
	"time"
)

// BenchmarkGenerateAndEncode is the simulator's own cost per reading:
// the signal step plus the wire encoding (it must never be the bottleneck
// of a load test).
func BenchmarkGenerateAndEncode(b *testing.B) {
	for _, p := range profiles {
		b.Run(p, func(b *testing.B) {
			g := newGenerator(p, 0, rand.New(rand.NewPCG(1, 1)))
			src := &source{id: "dev"}
			rs := make([]reading, 1)
			var buf []field
			ts := time.Now()
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				ts = ts.Add(time.Second)
				buf = g.next(buf[:0], ts, 1)
				rs[0] = reading{src: src, simSeq: uint32(i), ts: ts.UnixNano(), measurement: g.measurement(), fields: buf}
				encodeFrame(uint64(i), rs, "20261122T160014-9d2e20", 0, false)
			}
		})
	}
}
