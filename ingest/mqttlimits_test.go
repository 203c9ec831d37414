package ingest

import (
	"strconv"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/telemetry"
)

func TestMQTTLimiter(t *testing.T) {
	l := newMQTTLimiter(MQTTConfig{MaxMessageSize: 100, FrameRate: 10, FrameBurst: 2}, func(string, ...any) {})
	t0 := time.Unix(1000, 0)
	steps := []struct {
		device telemetry.DeviceID
		size   int
		at     time.Duration
		ok     bool
		reason string
	}{
		{"a", 101, 0, false, RefusedTooBig},
		{"a", 100, 0, true, ""},
		{"a", 10, 0, true, ""},
		{"a", 10, 0, false, RefusedRateLimited},
		{"b", 10, 0, true, ""}, // another device has its own bucket
		{"a", 10, 100 * time.Millisecond, true, ""},
	}
	for i, st := range steps {
		ok, reason := l.admit(st.device, st.size, t0.Add(st.at))
		if ok != st.ok || reason != st.reason {
			t.Fatalf("step %d: admit = %v %q, want %v %q", i, ok, reason, st.ok, st.reason)
		}
	}
	m := &MQTT{limits: l}
	got := map[refusalKey]uint64{}
	for _, r := range m.Refused() {
		got[refusalKey{r.Device, r.Reason}] = r.Count
	}
	if len(got) != 2 || got[refusalKey{"a", RefusedTooBig}] != 1 || got[refusalKey{"a", RefusedRateLimited}] != 1 {
		t.Fatalf("refusals %v", got)
	}
	// Counts are kept for a bounded number of devices.
	for i := range 2 * maxRefusalDevices {
		l.admit(telemetry.DeviceID("d"+strconv.Itoa(i)), 1000, t0)
	}
	if n := len(m.Refused()); n > maxRefusalDevices+2 {
		t.Fatalf("%d refusal counters, want at most %d", n, maxRefusalDevices+2)
	}
}
