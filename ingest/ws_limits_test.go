package ingest

import (
	"testing"
	"time"
)

func TestDeviceSlotTokenBucket(t *testing.T) {
	cfg := WSConfig{FrameRate: 10, FrameBurst: 3}.withDefaults()
	t0 := time.Unix(1000, 0)
	s := &deviceSlot{tokens: float64(cfg.FrameBurst), last: t0}
	steps := []struct {
		at        time.Duration
		ok        bool
		waitAbout time.Duration
	}{
		{0, true, 0}, {0, true, 0}, {0, true, 0}, // the burst
		{0, false, 100 * time.Millisecond}, // empty: one token per 100ms
		{50 * time.Millisecond, false, 50 * time.Millisecond},
		{100 * time.Millisecond, true, 0},
		{100 * time.Millisecond, false, 100 * time.Millisecond},
		{10 * time.Second, true, 0}, // refilled, but never above the burst
		{10 * time.Second, true, 0},
		{10 * time.Second, true, 0},
		{10 * time.Second, false, 100 * time.Millisecond},
	}
	for i, st := range steps {
		ok, wait := s.take(t0.Add(st.at), cfg)
		if ok != st.ok || (wait-st.waitAbout).Abs() > time.Millisecond {
			t.Fatalf("step %d at %v: take = %v, %v; want %v, ~%v", i, st.at, ok, wait, st.ok, st.waitAbout)
		}
	}
	if s.idle(t0.Add(10*time.Second), cfg) {
		t.Fatal("an empty bucket reported idle")
	}
	if !s.idle(t0.Add(11*time.Second), cfg) {
		t.Fatal("a refilled bucket not idle")
	}
	unlimited := WSConfig{FrameRate: -1}.withDefaults()
	for range 1000 {
		if ok, _ := s.take(t0, unlimited); !ok {
			t.Fatal("FrameRate < 0 must not limit")
		}
	}
}

func TestWSConfigLimitDefaults(t *testing.T) {
	c := WSConfig{}.withDefaults()
	if c.MaxConnsPerDevice != 4 || c.MaxConns != 100000 || c.FrameRate != 100 || c.FrameBurst != 200 || c.RateLimitClose != 10 {
		t.Fatalf("defaults %+v", c)
	}
}
