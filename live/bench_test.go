package live

// Micro-benchmarks of the live side's hot path, with allocations reported:
// dashboard frame encode and a coalesced hub fan-out. The end-to-end
// figures are bench/'s (make bench, docs/performance.md).

import (
	"log/slog"
	"strconv"
	"testing"

	"github.com/telemetryd/telemetryd/internal/testsupport"
	"github.com/telemetryd/telemetryd/telemetry"
)

// benchReading is testsupport.BenchReading: the harness's reading shape.
func benchReading(dev string, ts int64) telemetry.Reading { return testsupport.BenchReading(dev, ts) }

// BenchmarkEncodeFrame is the dashboard JSON of one reading, then of 100
// (a coalesced batch), for an unfiltered subscription: once per broadcast.
func BenchmarkEncodeFrame(b *testing.B) {
	for _, n := range []int{1, 100} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			sub := &subscription{id: "s"}
			rs := make([]telemetry.Reading, n)
			for i := range rs {
				rs[i] = benchReading("dev-"+strconv.Itoa(i), 1763820000123000000+int64(i))
				rs[i].Tags = append(rs[i].Tags, telemetry.Tag{Key: telemetry.DeviceIDTag, Value: string(rs[i].Device)})
			}
			var buf []byte
			b.ReportAllocs()
			for b.Loop() {
				buf = encodeFrame(buf[:0], "readings", sub, rs, 1, int64(len(rs)))
			}
			b.SetBytes(int64(len(buf)))
		})
	}
}

// BenchmarkHubFanOut1000Batch16 is one coalesced fan-out of 16 readings to
// 1 000 unfiltered subscribers (one encode, 1 000 sends).
func BenchmarkHubFanOut1000Batch16(b *testing.B) {
	h := NewHub(HubConfig{}, slog.New(slog.DiscardHandler))
	s := hubState{hub: h, clients: map[Client]*clientState{}, last: map[string]*series{}, devices: map[string]*device{}}
	for range 1000 {
		sub := &subscription{id: "s"}
		sub.key = sub.filter.key("s")
		s.clients[&benchClient{}] = &clientState{subs: []*subscription{sub}}
	}
	rs := make([]telemetry.Reading, 16)
	for i := range rs {
		rs[i] = benchReading("dev-"+strconv.Itoa(i), 1763820000123000000+int64(i))
	}
	b.ReportAllocs()
	for b.Loop() {
		s.fanOut(rs)
	}
}

type benchClient struct{ n int }

func (c *benchClient) Send([]byte) bool { c.n++; return true }
func (c *benchClient) Room() bool       { return true }
func (c *benchClient) Drop()            {}
