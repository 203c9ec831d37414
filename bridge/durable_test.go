package bridge

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/telemetry"
)

// durableRecorder records what the bridge reports durable.
type durableRecorder struct {
	mu     sync.Mutex
	events []durableEvent
}

type durableEvent struct {
	values  []float64 // of the readings, as published
	refused []int     // indexes into them
	err     error
}

func (d *durableRecorder) Durable(rs []telemetry.Reading, refused []telemetry.Rejection, err error) {
	ev := durableEvent{err: err}
	for _, r := range rs {
		ev.values = append(ev.values, r.Fields[0].Value.AsFloat())
	}
	for _, rj := range refused {
		ev.refused = append(ev.refused, rj.Index)
	}
	d.mu.Lock()
	d.events = append(d.events, ev)
	d.mu.Unlock()
}

func (d *durableRecorder) get() []durableEvent {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]durableEvent(nil), d.events...)
}

// TestBridgeReportsDurable: after each published frame completes, the
// notifier gets its readings as published, with storage's refusals indexed
// into them (not into the frame, whose rejected readings were never
// published), before the frame's ack.
func TestBridgeReportsDurable(t *testing.T) {
	tests := []struct {
		name        string
		values      []float64
		badName     int // index of a reading normalization rejects (-1: none)
		wantValues  []float64
		wantRefused []int
	}{
		{"all durable", []float64{1, 2}, -1, []float64{1, 2}, nil},
		{"one refused by storage", []float64{3, 666, 4}, -1, []float64{3, 666, 4}, []int{1}},
		{"refused after a rejected reading", []float64{5, 6, 666}, 0, []float64{6, 666}, []int{1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sink := &fakeSink{fail: func(body string) error {
				if strings.Contains(body, "v=666") {
					return permanentErr{"partial write: field type conflict"}
				}
				return nil
			}}
			rec := &durableRecorder{}
			b, _, _ := startBridge(t, Config{FlushInterval: time.Millisecond, Durable: rec}, sink, &publishRecorder{})
			var acked recorder
			done := acked.done(0)
			f := frame("d1", func(o telemetry.Outcome) {
				if len(rec.get()) != 1 {
					panic("acked before the notifier was told")
				}
				done(o)
			}, tc.values...)
			if tc.badName >= 0 {
				f.Readings[tc.badName].Measurement = "bad name"
			}
			if _, err := b.Consume(context.Background(), f); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the ack", func() bool { return acked.len() == 1 })
			evs := rec.get()
			if len(evs) != 1 || evs[0].err != nil || !slices.Equal(evs[0].values, tc.wantValues) || !slices.Equal(evs[0].refused, tc.wantRefused) {
				t.Fatalf("durable %+v, want values %v refused %v", evs, tc.wantValues, tc.wantRefused)
			}
		})
	}
}
