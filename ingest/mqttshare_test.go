package ingest_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/telemetryd/telemetryd/ingest"
	"github.com/telemetryd/telemetryd/ingest/mqtttest"
	"github.com/telemetryd/telemetryd/internal/testsupport"
	"github.com/telemetryd/telemetryd/telemetry"
)

// seqRecorder is a pipeline that stores nothing: it records the "n" field
// of every frame it is handed, per consumer instance, and completes each
// frame as stored (so the consumer acks it).
type seqRecorder struct {
	mu   sync.Mutex
	seen map[int64][]string // n → the instances that consumed it
}

func (r *seqRecorder) consumer(instance string) telemetry.Consumer {
	return telemetry.ConsumerFunc(func(_ context.Context, f *telemetry.Frame) (telemetry.Receipt, error) {
		r.mu.Lock()
		for _, rd := range f.Readings {
			for _, fl := range rd.Fields {
				if fl.Name == "n" {
					n := int64(fl.Value.AsFloat())
					r.seen[n] = append(r.seen[n], instance)
				}
			}
		}
		r.mu.Unlock()
		f.Done(telemetry.Outcome{})
		return telemetry.Receipt{Accepted: len(f.Readings)}, nil
	})
}

// count returns how many of [from, to) were consumed, how many of those by
// each instance, and the first one consumed more than once.
func (r *seqRecorder) count(from, to int64) (consumed int, by map[string]int, dup int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	by, dup = map[string]int{}, -1
	for n := from; n < to; n++ {
		who := r.seen[n]
		if len(who) == 0 {
			continue
		}
		consumed++
		by[who[0]]++
		if len(who) > 1 && dup < 0 {
			dup = n
		}
	}
	return consumed, by, dup
}

// shareMember runs one telemetryd-like MQTT consumer in share group g.
type shareMember struct {
	m      *ingest.MQTT
	cancel context.CancelFunc
	done   chan struct{}
}

func startMember(t *testing.T, broker *mqtttest.Broker, clientID, group string, next telemetry.Consumer) *shareMember {
	t.Helper()
	m, err := ingest.NewMQTT(ingest.MQTTConfig{URL: broker.URL(), ClientID: clientID, ShareGroup: group}, next, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &shareMember{m: m, cancel: cancel, done: make(chan struct{})}
	go func() { _ = m.Run(ctx); close(s.done) }()
	t.Cleanup(s.stop)
	testsupport.Eventually(t, 20*time.Second, clientID+" subscribed", m.Connected)
	return s
}

// stop ends intake, sends owed acks and disconnects; the broker keeps the
// session (clean session off).
func (s *shareMember) stop() {
	s.cancel()
	<-s.done
	s.m.Close()
}

func publishSeq(t *testing.T, broker *mqtttest.Broker, from, to int64) {
	t.Helper()
	pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(broker.URL()).SetClientID(fmt.Sprintf("pub-%d", from)))
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher connect: %v", tok.Error())
	}
	defer pub.Disconnect(50)
	var toks []mqtt.Token
	for n := from; n < to; n++ {
		// Twenty devices, so that the topic is not what spreads the load.
		topic := fmt.Sprintf("devices/dev-%d/telemetry", n%20)
		toks = append(toks, pub.Publish(topic, 1, false, fmt.Sprintf(`{"measurement":"m","metrics":{"n":%d}}`, n)))
	}
	for _, tok := range toks {
		if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
}

// TestMQTTSharedSubscription runs two consumers as members of one $share
// group on a real Mosquitto, each with its own client id and persistent
// session:
//   - each message is consumed exactly once across the two, and each
//     consumes a share (its per-client counter says how much);
//   - with B offline its share is delayed, not lost: B, back under the same
//     client id, consumes it from its session;
//   - after a broker restart both consume again (Mosquitto 2.0.11 drops a
//     durable client's $share subscription across a restart; the consumer
//     subscribes again on every connect).
func TestMQTTSharedSubscription(t *testing.T) {
	const n = 200
	broker := mqtttest.Start(t, mqtttest.Options{})
	rec := &seqRecorder{seen: map[int64][]string{}}
	a := startMember(t, broker, "inst-a", "telemetryd", rec.consumer("a"))
	b := startMember(t, broker, "inst-b", "telemetryd", rec.consumer("b"))

	// Both online: every message once, both get a share.
	publishSeq(t, broker, 0, n)
	waitConsumed(t, rec, 0, n)
	_, by, _ := rec.count(0, n)
	if by["a"] == 0 || by["b"] == 0 {
		t.Fatalf("both online: shares a=%d b=%d, want both > 0", by["a"], by["b"])
	}
	for _, m := range []*shareMember{a, b} {
		cs := m.m.Clients()
		if len(cs) != 1 || !cs[0].Connected || cs[0].Messages == 0 {
			t.Fatalf("per-client stats %+v: want one connected client with messages", cs)
		}
	}
	if got := a.m.Clients()[0].ClientID; got != "inst-a-0" {
		t.Fatalf("client id %q, want inst-a-0 (instance id + index)", got)
	}
	t.Logf("both online: a=%d b=%d", by["a"], by["b"])

	// B offline: A does not get everything; B's share waits in its session.
	b.stop()
	publishSeq(t, broker, n, 2*n)
	b2 := startMember(t, broker, "inst-b", "telemetryd", rec.consumer("b"))
	waitConsumed(t, rec, n, 2*n)
	_, by, _ = rec.count(n, 2*n)
	if by["b"] == 0 {
		t.Fatalf("B offline: A consumed all %d; want B's share kept in its session (Mosquitto round robin)", by["a"])
	}
	t.Logf("published while B was offline: a=%d, b=%d after it returned", by["a"], by["b"])

	// Broker restart: both consume again once re-subscribed. Probes are
	// published until each member has consumed one: what is published
	// before a member's SUBSCRIBE may be dropped by Mosquitto 2.0.11, what
	// is published after must all arrive, once.
	broker.Restart(t)
	testsupport.Eventually(t, 30*time.Second, "both members re-subscribed", func() bool { return a.m.Connected() && b2.m.Connected() })
	probe := int64(10 * n)
	testsupport.Eventually(t, 30*time.Second, "both members consuming after the restart", func() bool {
		publishSeq(t, broker, probe, probe+1)
		probe++
		_, by, _ := rec.count(10*n, probe)
		return by["a"] > 0 && by["b"] > 0
	})
	publishSeq(t, broker, 3*n, 4*n)
	waitConsumed(t, rec, 3*n, 4*n)
	_, by, _ = rec.count(3*n, 4*n)
	if by["a"] == 0 || by["b"] == 0 {
		t.Fatalf("after the broker restart: shares a=%d b=%d, want both > 0", by["a"], by["b"])
	}
	t.Logf("after the broker restart (%d probes): a=%d b=%d", probe-10*n, by["a"], by["b"])
}

// waitConsumed waits until every message of [from, to) was consumed, and
// fails on one consumed twice.
func waitConsumed(t *testing.T, rec *seqRecorder, from, to int64) {
	t.Helper()
	testsupport.Eventually(t, 30*time.Second, fmt.Sprintf("messages %d..%d consumed", from, to-1), func() bool {
		got, _, dup := rec.count(from, to)
		if dup >= 0 {
			rec.mu.Lock()
			who := rec.seen[dup]
			rec.mu.Unlock()
			t.Fatalf("message %d consumed more than once: %v", dup, who)
		}
		return got == int(to-from)
	})
}
