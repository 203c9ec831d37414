package ingest_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/ingest"
	"github.com/telemetryd/telemetryd/ingest/mqtttest"
	"github.com/telemetryd/telemetryd/internal/testsupport"
	"github.com/telemetryd/telemetryd/telemetry"
)

// TestMQTTFullInboxHoldsTheBrokerBack: when the broker sends more than the
// consumer's Queue holds while the pipeline is stalled (a reconnect can
// bring more than the in-flight window), nothing is dropped: the intake
// waits, and once the pipeline moves every message is consumed and acked
// in the same session — none is left holding an in-flight slot until a
// reconnect.
func TestMQTTFullInboxHoldsTheBrokerBack(t *testing.T) {
	broker := mqtttest.Start(t, mqtttest.Options{ExtraConfig: "max_inflight_messages 1000\nmax_queued_messages 100000\n"})
	rec := &seqRecorder{seen: map[int64][]string{}}
	gate := make(chan struct{})
	stalled := telemetry.ConsumerFunc(func(ctx context.Context, f *telemetry.Frame) (telemetry.Receipt, error) {
		select {
		case <-gate:
		case <-ctx.Done():
			return telemetry.Receipt{}, ctx.Err()
		}
		return rec.consumer("a").Consume(ctx, f)
	})
	m, err := ingest.NewMQTT(ingest.MQTTConfig{URL: broker.URL(), ClientID: "inbox", Queue: 8}, stalled, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = m.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; m.Close() })
	testsupport.Eventually(t, 20*time.Second, "subscribed", m.Connected)

	const n = 300
	publishSeq(t, broker, 0, n) // the broker queues what the consumer cannot take yet
	testsupport.Eventually(t, 10*time.Second, "the inbox full", func() bool {
		return m.Stats().Messages >= 1 && m.Clients()[0].Messages >= 8+1
	})
	close(gate)
	testsupport.Eventually(t, 30*time.Second, "every message consumed", func() bool {
		got, _, _ := rec.count(0, n)
		return got == n
	})
	testsupport.Eventually(t, 10*time.Second, "every message acked", func() bool {
		st := m.Stats()
		return st.Acked == n && st.Unacked == 0
	})
	if st := m.Stats(); st.Overflow != 0 || st.Redelivered != 0 {
		t.Fatalf("overflow %d, redelivered %d: want neither", st.Overflow, st.Redelivered)
	}
}
