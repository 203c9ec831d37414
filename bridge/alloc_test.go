package bridge

// Tests of the per-frame memory Consume shares or reuses: pooled entries
// (bridge.go), the tags arena and the tag sort (normalize.go). The copies
// the live hub keeps of arena tags are tested in live/alloc_test.go.

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/telemetryd/telemetryd/telemetry"
)

func TestSortTags(t *testing.T) {
	keys := func(n int, order func(i int) int) []telemetry.Tag {
		tags := make([]telemetry.Tag, n)
		for i := range tags {
			tags[i] = tg("k"+strconv.Itoa(100+order(i)), strconv.Itoa(i))
		}
		return tags
	}
	tests := []struct {
		name string
		tags []telemetry.Tag
	}{
		{"empty", nil},
		{"one", []telemetry.Tag{tg("device_id", "d")}},
		{"device_id last", []telemetry.Tag{tg("site", "s"), tg("device_id", "d")}},
		{"sorted", []telemetry.Tag{tg("a", "1"), tg("b", "2"), tg("device_id", "d")}},
		{"prefixes", []telemetry.Tag{tg("ab", "1"), tg("a", "2"), tg("abc", "3"), tg("b", "4")}},
		{"reversed 12", keys(12, func(i int) int { return 12 - i })},
		{"reversed 13 (slices.SortFunc)", keys(13, func(i int) int { return 13 - i })},
		{"shuffled 32", keys(32, func(i int) int { return i * 7 % 32 })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := slices.Clone(tt.tags)
			sortTags(got)
			want := slices.Clone(tt.tags)
			slices.SortFunc(want, func(a, b telemetry.Tag) int { return strings.Compare(a.Key, b.Key) })
			if !slices.Equal(got, want) {
				t.Fatalf("sortTags = %v, want %v", got, want)
			}
		})
	}
}

func TestTagArena(t *testing.T) {
	tests := []struct {
		name       string
		rest       int   // readings in the frame
		sizes      []int // tags per reading
		wantChunks int
	}{
		{"single reading", 1, []int{2}, 1},
		{"frame of alike readings", 4, []int{2, 2, 2, 2}, 1},
		{"a larger reading later", 3, []int{2, 3, 2}, 2},
		{"zero rest (tests' arena)", 0, []int{2, 2}, 2},
		{"bounded chunk", 1000, slices.Repeat([]int{2}, 300), 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a tagArena
			var got [][]telemetry.Tag
			chunks := 0
			for i, n := range tt.sizes {
				a.rest = tt.rest - i
				before := unsafe.SliceData(a.chunk)
				s := a.alloc(n)
				if unsafe.SliceData(a.chunk) != before {
					chunks++
				}
				if len(s) != 0 || cap(s) != n {
					t.Fatalf("alloc(%d): len %d cap %d, want 0 and %d (capped)", n, len(s), cap(s), n)
				}
				for j := range n {
					s = append(s, tg("k", fmt.Sprint(i, j)))
				}
				got = append(got, s)
			}
			// Every slice still holds its own tags: none was written by another.
			for i, s := range got {
				for j, tag := range s {
					if tag.Value != fmt.Sprint(i, j) {
						t.Fatalf("slice %d tag %d = %q, overwritten", i, j, tag.Value)
					}
				}
			}
			if chunks != tt.wantChunks {
				t.Fatalf("%d chunks, want %d", chunks, tt.wantChunks)
			}
		})
	}
}

// TestConsumeTagsAreCappedPerReading: the readings of one frame share one
// tags allocation, but an append to one reading's tags (by a consumer of
// published readings) must never reach another's.
func TestConsumeTagsAreCappedPerReading(t *testing.T) {
	live := &publishRecorder{}
	b := New(Config{}, &fakeSink{}, live, nil)
	f := frame("d1", nil, 1, 2, 3)
	for i := range f.Readings {
		f.Readings[i].Tags = []telemetry.Tag{tg("site", fmt.Sprint("s", i))}
	}
	if rcpt, err := b.Consume(context.Background(), f); err != nil || rcpt.Accepted != 3 {
		t.Fatal(rcpt, err)
	}
	live.mu.Lock()
	defer live.mu.Unlock()
	for i := range live.rs {
		r := &live.rs[i]
		if len(r.Tags) != cap(r.Tags) {
			t.Fatalf("reading %d: tags len %d cap %d", i, len(r.Tags), cap(r.Tags))
		}
		r.Tags = append(r.Tags, tg("zz", "appended"))
	}
	for i, r := range live.rs {
		want := []telemetry.Tag{tg(telemetry.DeviceIDTag, "d1"), tg("site", fmt.Sprint("s", i)), tg("zz", "appended")}
		if !slices.Equal(r.Tags, want) {
			t.Fatalf("reading %d tags %v, want %v", i, r.Tags, want)
		}
	}
}

// TestBridgeRecyclesEntries runs frames of many sizes (inline buffers,
// pooled ones, ones too large to pool) from several goroutines through a
// running bridge: each line must be stored exactly once and each frame
// completed exactly once, with recycled entries reused in between (under
// -race this also checks their hand-over).
func TestBridgeRecyclesEntries(t *testing.T) {
	sink := &fakeSink{}
	b, cancel, stopped := startBridge(t, Config{FlushInterval: time.Millisecond, MaxBatchLines: 50}, sink, nil)
	var rec recorder
	sizes := []int{1, 2, 1, 40, 1, 300, 3, 1, 17, 1}
	const producers, rounds = 3, 20
	var wg sync.WaitGroup
	want := 0
	for p := range producers {
		for r := range rounds {
			want += sizes[r%len(sizes)]
		}
		wg.Go(func() {
			for r := range rounds {
				vals := make([]float64, sizes[r%len(sizes)])
				for i := range vals {
					vals[i] = float64(p*100_000 + r*1000 + i)
				}
				id := p*rounds + r
				if _, err := b.Consume(context.Background(), frame(fmt.Sprint("d", p), rec.done(id), vals...)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	eventually(t, "every frame completed", func() bool { return rec.len() == producers*rounds })
	cancel()
	<-stopped
	lines := strings.Split(strings.TrimSuffix(sink.stored(), "\n"), "\n")
	if len(lines) != want {
		t.Fatalf("%d lines stored, want %d", len(lines), want)
	}
	seen := map[string]bool{}
	for _, l := range lines {
		if seen[l] {
			t.Fatalf("line stored twice: %q", l)
		}
		seen[l] = true
	}
	for p := range producers {
		for r := range rounds {
			for i := range sizes[r%len(sizes)] {
				l := fmt.Sprintf("m,device_id=d%d v=%d %d", p, p*100_000+r*1000+i, 1763820000000000000+i)
				if !seen[l] {
					t.Fatalf("line %q not stored", l)
				}
			}
		}
	}
	for id := range producers * rounds {
		if o, _ := rec.get(id); o.Err != nil || len(o.Rejected) != 0 {
			t.Fatalf("frame %d outcome %+v", id, o)
		}
	}
}

// TestConsumeCompletesTagsInPlace: readings whose Tags have a spare slot
// (the decoder leaves one per reading, all in one array) get device_id
// there, without touching their neighbours; a device with labels needs
// more room and gets a new slice.
func TestConsumeCompletesTagsInPlace(t *testing.T) {
	for _, labels := range []fixedLabels{nil, {"d1": {tg("area", "north")}}} {
		b := New(Config{}, &fakeSink{}, nil, nil)
		if labels != nil {
			b.labels = labels
		}
		f := frame("d1", nil, 1, 2)
		shared := []telemetry.Tag{tg("site", "s0"), {}, tg("zone", "z1"), {}}
		f.Readings[0].Tags = shared[0:1:2]
		f.Readings[1].Tags = shared[2:3:4]
		if rcpt, err := b.Consume(context.Background(), f); err != nil || rcpt.Accepted != 2 {
			t.Fatal(rcpt, err)
		}
		want0 := []telemetry.Tag{tg(telemetry.DeviceIDTag, "d1"), tg("site", "s0")}
		want1 := []telemetry.Tag{tg(telemetry.DeviceIDTag, "d1"), tg("zone", "z1")}
		if labels != nil {
			want0 = []telemetry.Tag{tg("area", "north"), tg(telemetry.DeviceIDTag, "d1"), tg("site", "s0")}
			want1 = []telemetry.Tag{tg("area", "north"), tg(telemetry.DeviceIDTag, "d1"), tg("zone", "z1")}
		}
		if !slices.Equal(f.Readings[0].Tags, want0) || !slices.Equal(f.Readings[1].Tags, want1) {
			t.Fatalf("labels %v: tags %v and %v, want %v and %v", labels, f.Readings[0].Tags, f.Readings[1].Tags, want0, want1)
		}
		inPlace := &f.Readings[1].Tags[0] == &shared[2]
		if inPlace != (labels == nil) {
			t.Errorf("labels %v: completed in place = %v", labels, inPlace)
		}
	}
}
