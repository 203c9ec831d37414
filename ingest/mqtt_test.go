package ingest

import (
	"slices"
	"testing"

	"github.com/telemetryd/telemetryd/telemetry"
)

func TestMQTTDeviceOfTopic(t *testing.T) {
	tests := []struct {
		pattern, topic string
		want           telemetry.DeviceID
		ok             bool
	}{
		{"telemetry/+", "telemetry/dev-1", "dev-1", true},
		{"telemetry/+/up", "telemetry/dev-1/up", "dev-1", true},
		{"+/telemetry", "dev-1/telemetry", "dev-1", true},
		{"a/b/+/c", "a/b/gw.7:x_y/c", "gw.7:x_y", true},
		{"telemetry/+", "telemetry", "", false},
		{"telemetry/+", "telemetry/", "", false},
		{"telemetry/+/up", "telemetry//up", "", false},
		{"telemetry/+", "telemetry/dev 1", "", false},
		{"telemetry/+", "telemetry/dev#1", "", false},
	}
	for _, tt := range tests {
		m, err := NewMQTT(MQTTConfig{Topic: tt.pattern}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := m.deviceOf(tt.topic)
		if got != tt.want || ok != tt.ok {
			t.Errorf("%s: deviceOf(%q) = %q, %v; want %q, %v", tt.pattern, tt.topic, got, ok, tt.want, tt.ok)
		}
	}
}

// fakeMessage records the order of its PUBACKs in acked.
type fakeMessage struct {
	id    uint16
	acked *[]uint16
}

func (f fakeMessage) Duplicate() bool   { return false }
func (f fakeMessage) Qos() byte         { return 1 }
func (f fakeMessage) Retained() bool    { return false }
func (f fakeMessage) Topic() string     { return "telemetry/dev-1" }
func (f fakeMessage) MessageID() uint16 { return f.id }
func (f fakeMessage) Payload() []byte   { return nil }
func (f fakeMessage) Ack()              { *f.acked = append(*f.acked, f.id) }

// TestAckSequencerReleasesInReceiveOrder: PUBACKs leave in receive order
// however the messages complete, and a message released without a PUBACK
// neither gets one nor holds up the others.
func TestAckSequencerReleasesInReceiveOrder(t *testing.T) {
	var acked []uint16
	m := &MQTT{}
	s := newAckSequencer(m)
	stop := make(chan struct{})
	close(stop) // send writes what is due, then returns
	ps := make([]*pendingAck, 5)
	for i := range ps {
		ps[i] = &pendingAck{msg: fakeMessage{id: uint16(i + 1), acked: &acked}}
		s.add(ps[i])
	}
	steps := []struct {
		i    int
		send bool
		want []uint16
	}{
		{2, true, nil},            // 3 waits for 1 and 2
		{1, false, nil},           // 2 released without a PUBACK, still waits for 1
		{0, true, []uint16{1, 3}}, // 1 frees 2 (no PUBACK) and 3
		{4, true, []uint16{1, 3}}, // 5 waits for 4
		{3, true, []uint16{1, 3, 4, 5}},
	}
	for _, st := range steps {
		s.release(ps[st.i], st.send)
		s.send(stop)
		if !slices.Equal(acked, st.want) {
			t.Fatalf("after releasing %d: PUBACKs %v, want %v", st.i+1, acked, st.want)
		}
	}
	if n := m.unacked.Load(); n != 0 {
		t.Errorf("unacked = %d after all released", n)
	}
	if n := m.acked.Load(); n != 4 {
		t.Errorf("acked = %d, want 4", n)
	}
}

// blockedMessage's Ack waits, like paho's on a stalled broker socket.
type blockedMessage struct {
	fakeMessage
	entered chan<- uint16
	gate    <-chan struct{}
}

func (b blockedMessage) Ack() { b.entered <- b.id; <-b.gate }

// TestAckReleaseNeverBlocksNorDrops: with the sender stuck in a PUBACK,
// release still returns at once, and however many PUBACKs come due
// meanwhile (a reconnect can bring more than the broker's in-flight window),
// none is dropped: each would hold a broker slot until the next session.
func TestAckReleaseNeverBlocksNorDrops(t *testing.T) {
	m := &MQTT{}
	s := newAckSequencer(m)
	entered, gate := make(chan uint16), make(chan struct{})
	stop := make(chan struct{})
	sent := make(chan struct{})
	go func() { s.send(stop); close(sent) }()
	var acked []uint16
	const n = 20000 // beyond the 16384 the old bounded queue held
	ps := make([]*pendingAck, n)
	for i := range ps {
		ps[i] = &pendingAck{msg: blockedMessage{fakeMessage{id: uint16(i%65535 + 1), acked: &acked}, entered, gate}}
		s.add(ps[i])
	}
	s.release(ps[0], true)
	if id := <-entered; id != 1 {
		t.Fatalf("first PUBACK for %d", id)
	}
	// The sender is now inside message 1's Ack; none of these may block.
	for _, p := range ps[1:] {
		s.release(p, true)
	}
	if n := m.overflow.Load(); n != 0 {
		t.Fatalf("overflow = %d, want 0", n)
	}
	if n := m.unacked.Load(); n != 0 {
		t.Fatalf("unacked = %d, want 0", n)
	}
	close(gate)
	for i := 2; i <= n; i++ {
		if id := <-entered; id != uint16((i-1)%65535+1) {
			t.Fatalf("PUBACK for %d, want %d", id, i)
		}
	}
	close(stop)
	<-sent
	if got := m.acked.Load(); got != n {
		t.Fatalf("acked = %d, want %d", got, n)
	}
}
