package live

import (
	"slices"
	"testing"

	"github.com/telemetryd/telemetryd/telemetry"
)

// TestHubKeepsOwnTags: what the hub remembers for long (a series' tags, a
// device's tags) is a copy, so that it does not pin a frame's tags arena.
func TestHubKeepsOwnTags(t *testing.T) {
	h := NewHub(HubConfig{}, nil)
	s := hubState{hub: h, clients: map[Client]*clientState{}, last: map[string]*series{}, devices: map[string]*device{}}
	rs := []telemetry.Reading{benchReading("dev-1", 1), benchReading("dev-1", 2)}
	for i := range rs {
		rs[i].Tags = append(rs[i].Tags, tg(telemetry.DeviceIDTag, "dev-1"))
	}
	s.fanOut(rs[:1])
	d := s.devices["dev-1"]
	if len(s.last) != 1 || d == nil {
		t.Fatalf("%d series, device %v", len(s.last), d)
	}
	for _, sr := range s.last {
		if &sr.reading.Tags[0] == &rs[0].Tags[0] {
			t.Fatal("series tags share the reading's array")
		}
	}
	if &d.tags[0] == &rs[0].Tags[0] {
		t.Fatal("device tags share the reading's array")
	}
	kept := &d.tags[0]
	s.fanOut(rs[1:]) // the same tags again: the copy stays
	if &d.tags[0] != kept || !slices.Equal(d.tags, rs[1].Tags) {
		t.Fatalf("device tags %v replaced though equal", d.tags)
	}
	rs[1].Tags[1].Value = "plant-4"
	s.fanOut(rs[1:])
	if !slices.Equal(d.tags, rs[1].Tags) || &d.tags[0] == &rs[1].Tags[0] {
		t.Fatalf("device tags %v after a change, want a copy of %v", d.tags, rs[1].Tags)
	}
}
