package relay

// What an instance pays for a reading none of its dashboards wants: the
// receive path (header check, decode, the Hub's last-value, presence and
// filter work) against the same batch published locally. Figures go in
// docs/performance.md, never here.

import (
	"context"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/telemetryd/telemetryd/live"
	"github.com/telemetryd/telemetryd/telemetry"
)

// benchBatch is 100 readings of bench/'s shape (one payload tag, five
// fields, a device time), from 100 devices.
func benchBatch() []telemetry.Reading {
	rs := make([]telemetry.Reading, 100)
	for i := range rs {
		dev := "0190a8f2-7c1e-7d3a-9b1e-" + strconv.Itoa(100000000000+i)
		rs[i] = telemetry.Reading{
			Device: telemetry.DeviceID(dev), Measurement: "environment",
			Tags: []telemetry.Tag{{Key: "site", Value: "plant-3"}, {Key: telemetry.DeviceIDTag, Value: dev}},
			Fields: []telemetry.Field{
				{Name: "temperature", Value: telemetry.Float(21.4)}, {Name: "humidity", Value: telemetry.Float(40.1)},
				{Name: "voltage", Value: telemetry.Float(3.3)}, {Name: "rssi", Value: telemetry.Float(-67)},
				{Name: "door_open", Value: telemetry.Bool(false)},
			},
			Time: 1763820000123000000 + int64(i),
		}
	}
	return rs
}

// cpuTime is the CPU time the process used so far (all goroutines, GC
// included): on a shared machine it tells more than the wall clock.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type nopClient struct{}

func (nopClient) Send([]byte) bool { return true }
func (nopClient) Room() bool       { return true }
func (nopClient) Drop()            {}

type signalClient struct{ ch chan struct{} }

func (c signalClient) Send([]byte) bool { c.ch <- struct{}{}; return true }
func (signalClient) Room() bool         { return true }
func (signalClient) Drop()              {}

// BenchmarkUnwantedReading: per reading, a batch of 100 that none of 10
// dashboards wants, through the Hub (local) or through the relay's receive
// path (remote). The difference is what relaying costs a receiving
// instance. Each round ends when a sentinel reading has reached its
// dashboard, so the Hub's work is inside the round.
func BenchmarkUnwantedReading(b *testing.B) {
	for _, path := range []string{"local", "remote"} {
		b.Run(path, func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			hub := live.NewHub(live.HubConfig{}, testLogB())
			go func() { _ = hub.Run(ctx) }()
			for i := range 10 {
				hub.Subscribe(ctx, nopClient{}, "s", live.Filter{Devices: []string{"elsewhere-" + strconv.Itoa(i)}})
			}
			sentinel := signalClient{ch: make(chan struct{}, 1)}
			hub.Subscribe(ctx, sentinel, "s", live.Filter{Devices: []string{"sentinel"}})
			<-sentinel.ch // its snapshot
			mark := []telemetry.Reading{{Device: "sentinel", Measurement: "m", Fields: []telemetry.Field{{Name: "x", Value: telemetry.Int(1)}}}}

			rs := benchBatch()
			r, err := New(Config{URL: "nats://127.0.0.1:1", Instance: "b"}, hub, testLogB())
			if err != nil {
				b.Fatal(err)
			}
			var enc encoder
			msg := &nats.Msg{Header: nats.Header{hdrInstance: {"a"}}, Data: enc.encode(nil, rs)}
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				if path == "remote" {
					r.receive(ctx, msg)
				} else {
					hub.Publish(rs)
				}
				hub.Publish(mark)
				<-sentinel.ch
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(rs)), "ns/reading")
			b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N*len(rs)), "cpu-ns/reading")
		})
	}
}

// BenchmarkCodec: encoding (sender side) and decoding (every receiver) of
// a batch of 100, per reading.
func BenchmarkCodec(b *testing.B) {
	rs := benchBatch()
	var enc encoder
	msg := enc.encode(nil, rs)
	b.Run("encode", func(b *testing.B) {
		buf := make([]byte, 0, len(msg))
		b.ReportAllocs()
		cpu0 := cpuTime()
		for b.Loop() {
			buf = enc.encode(buf[:0], rs)
		}
		b.ReportMetric(float64(len(msg))/float64(len(rs)), "bytes/reading")
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(rs)), "ns/reading")
		b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N*len(rs)), "cpu-ns/reading")
	})
	b.Run("decode", func(b *testing.B) {
		var dec decoder
		b.ReportAllocs()
		cpu0 := cpuTime()
		for b.Loop() {
			if _, err := dec.decode(msg); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(rs)), "ns/reading")
		b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N*len(rs)), "cpu-ns/reading")
	})
}
