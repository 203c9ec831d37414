package live

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/telemetryd/telemetryd/telemetry"
)

// queueClient behaves like a dashboard socket's queue: Send refuses a frame
// that would pass maxFrames or maxBytes (a frame always fits an empty
// queue), Room says the queue is at most half full, and the test "reads"
// with read, which empties the queue into what the dashboard has seen.
type queueClient struct {
	mu                  sync.Mutex
	queue               [][]byte
	bytes               int
	maxFrames, maxBytes int
	seen                []string
	refused, dropped    int
	largest             int
}

func (c *queueClient) Send(frame []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dropped > 0 {
		return false
	}
	if len(c.queue) > 0 && (len(c.queue)+1 > c.maxFrames || c.bytes+len(frame) > c.maxBytes) {
		c.refused++
		return false
	}
	c.queue = append(c.queue, frame)
	c.bytes += len(frame)
	c.largest = max(c.largest, c.bytes)
	return true
}

func (c *queueClient) Room() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dropped == 0 && len(c.queue) <= c.maxFrames/2 && c.bytes <= c.maxBytes/2
}

func (c *queueClient) Drop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropped++
}

// read delivers at most n queued frames (n <= 0: all) to the dashboard.
func (c *queueClient) read(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n <= 0 || n > len(c.queue) {
		n = len(c.queue)
	}
	for _, f := range c.queue[:n] {
		c.seen = append(c.seen, string(f))
		c.bytes -= len(f)
	}
	c.queue = append(c.queue[:0], c.queue[n:]...)
}

func (c *queueClient) messages() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.seen...)
}

// anyMsg is every message the Hub sends, decoded loosely.
type anyMsg struct {
	Type     string `json:"type"`
	Sub      string `json:"sub"`
	Chunk    *int   `json:"chunk"`
	Last     *bool  `json:"last"`
	Merged   uint64 `json:"merged"`
	Skipped  uint64 `json:"skipped"`
	From     int64  `json:"from"`
	To       int64  `json:"to"`
	Readings []struct {
		DeviceID    string            `json:"device_id"`
		Measurement string            `json:"measurement"`
		TS          int64             `json:"ts"`
		Fields      map[string]any    `json:"fields"`
		Tags        map[string]string `json:"tags"`
	} `json:"readings"`
}

func decodeAll(t *testing.T, msgs []string) []anyMsg {
	t.Helper()
	out := make([]anyMsg, len(msgs))
	for i, m := range msgs {
		if err := json.Unmarshal([]byte(m), &out[i]); err != nil {
			t.Fatalf("message %d %.200q: %v", i, m, err)
		}
	}
	return out
}

// TestHubSnapshotChunksRespectBound (issue 17.4): a subscription matching
// far more last values than a dashboard's queue may hold gets its snapshot
// in chunks that fit the bound, the last one marked, and the dashboard is
// never dropped.
func TestHubSnapshotChunksRespectBound(t *testing.T) {
	const nSeries = 50000
	h := startHub(t, HubConfig{})
	ctx := context.Background()
	for i := 0; i < nSeries; i += 1000 {
		batch := make([]telemetry.Reading, 0, 1000)
		for j := i; j < i+1000; j++ {
			r := reading(fmt.Sprintf("dev-%05d", j), "plant-3", int64(j), fl("temperature", 21.5), fl("humidity", 40.25))
			r.Tags = append(r.Tags, tg("line", "assembly-line-with-a-long-name"))
			batch = append(batch, r)
		}
		h.Publish(batch)
	}
	eventually(t, "series remembered", func() bool { return h.Stats(ctx).Series == nSeries })

	const bound = 4 << 20 // the socket's default MaxPendingBytes
	c := &queueClient{maxFrames: 2048, maxBytes: bound}
	h.Subscribe(ctx, c, "all", Filter{Devices: []string{"*"}})
	got := map[string]bool{}
	chunks := 0
	eventually(t, "the last snapshot chunk", func() bool {
		c.read(0)
		for _, m := range decodeAll(t, c.messages()[chunks:]) {
			chunks++
			if m.Type != "snapshot" || m.Sub != "all" || m.Chunk == nil || *m.Chunk != chunks-1 || m.Last == nil {
				t.Fatalf("message %d: type %q sub %q chunk %v last %v", chunks-1, m.Type, m.Sub, m.Chunk, m.Last)
			}
			for _, r := range m.Readings {
				got[r.DeviceID] = true
			}
			if *m.Last {
				return true
			}
		}
		return false
	})
	c.mu.Lock()
	largest, dropped := c.largest, c.dropped
	c.mu.Unlock()
	if st := h.Stats(ctx); dropped > 0 || st.SlowClientsDropped > 0 || st.Clients != 1 {
		t.Fatalf("dashboard dropped: %+v", st)
	}
	if len(got) != nSeries || chunks < 2 || largest > bound {
		t.Fatalf("%d series in %d chunks, queue reached %d bytes (bound %d)", len(got), chunks, largest, bound)
	}
}

// TestHubConflatesSlowClient (issue 20): a dashboard whose queue is full is
// not dropped: what it cannot take is merged to the latest value per
// series, it is told how many readings were merged away, and once it reads
// again it ends with the latest value of every series. Every reading is
// either delivered or counted as merged. A fast dashboard on the same feed
// gets everything.
func TestHubConflatesSlowClient(t *testing.T) {
	h := startHub(t, HubConfig{})
	ctx := context.Background()
	slow := &queueClient{maxFrames: 4, maxBytes: 1 << 20}
	fast := &fakeClient{}
	h.Subscribe(ctx, slow, "s", Filter{})
	h.Subscribe(ctx, fast, "s", Filter{})
	eventually(t, "subscribed", func() bool { slow.read(0); return len(fast.all()) == 1 && len(slow.messages()) == 1 })
	const n, nDev = 200, 5
	for i := range n {
		h.Publish([]telemetry.Reading{reading(fmt.Sprint("d", i%nDev), "p3", int64(i), fl("t", float64(i)))})
		eventually(t, "delivery", func() bool { return len(fast.all()) == i+2 })
		if i == n/2 {
			slow.read(1) // a slow reader reads now and then
		}
	}
	latest := map[string]float64{}
	delivered, merged := 0, uint64(0)
	seen := 0
	eventually(t, "the latest value of every series", func() bool {
		slow.read(0)
		for _, m := range decodeAll(t, slow.messages()[seen:]) {
			seen++
			switch m.Type {
			case "readings":
				for _, r := range m.Readings {
					delivered++
					latest[r.DeviceID] = r.Fields["t"].(float64)
				}
			case "conflated":
				merged += m.Merged
			}
		}
		for d := range nDev {
			if latest[fmt.Sprint("d", d)] != float64(n-nDev+d) {
				return false
			}
		}
		return true
	})
	st := h.Stats(ctx)
	slow.mu.Lock()
	dropped := slow.dropped
	slow.mu.Unlock()
	if dropped > 0 || st.SlowClientsDropped > 0 || st.Clients != 2 {
		t.Fatalf("slow dashboard dropped: %+v", st)
	}
	if merged == 0 || uint64(delivered)+merged != n {
		t.Fatalf("%d readings delivered, %d merged away: want them to add up to %d, with some merged", delivered, merged, n)
	}
	fastReadings := 0
	for _, f := range fast.all()[1:] {
		fastReadings += len(parseFrame(t, f).Readings)
	}
	if fastReadings != n {
		t.Fatalf("fast dashboard got %d readings, want %d", fastReadings, n)
	}
}

// gateClient blocks the Hub in its first Send after arm until release is
// closed: the fan-out is then deterministically behind.
type gateClient struct {
	fakeClient
	mu2     sync.Mutex
	armed   bool
	entered chan struct{}
	release chan struct{}
}

func (c *gateClient) arm() {
	c.mu2.Lock()
	c.armed, c.entered, c.release = true, make(chan struct{}), make(chan struct{})
	c.mu2.Unlock()
}

func (c *gateClient) Send(frame []byte) bool {
	c.mu2.Lock()
	armed := c.armed
	c.armed = false
	c.mu2.Unlock()
	if armed {
		close(c.entered)
		<-c.release
	}
	return c.fakeClient.Send(frame)
}

func (c *gateClient) Room() bool { return true }
func (c *gateClient) Drop()      {}

// TestHubInboxFullIsTold (issue 17.7): when the Hub's inbox is full, no
// dashboard loses data without being told: readings are merged to the
// latest value per series (and the dashboards told how many were merged
// away), and what even that cannot hold is announced as a gap.
func TestHubInboxFullIsTold(t *testing.T) {
	tests := []struct {
		name         string
		cfg          HubConfig
		overflow     []telemetry.Reading // published one by one once the inbox is full
		wantMerged   uint64
		wantSkipped  uint64
		wantLatest   map[string]float64
		wantGapRange [2]int64
	}{
		{
			name: "one series: merged to its latest value",
			cfg:  HubConfig{InboxBatches: 2},
			overflow: []telemetry.Reading{
				reading("a", "p", 3, fl("t", 3)), reading("a", "p", 4, fl("t", 4)), reading("a", "p", 5, fl("t", 5)),
				reading("a", "p", 6, fl("t", 6)), reading("a", "p", 7, fl("t", 7)), reading("a", "p", 8, fl("t", 8)), reading("a", "p", 9, fl("t", 9)),
			},
			wantMerged: 6,
			wantLatest: map[string]float64{"a": 9},
		},
		{
			name: "more series than the bound: a gap",
			cfg:  HubConfig{InboxBatches: 2, MaxSeries: 2},
			overflow: []telemetry.Reading{
				reading("b", "p", 3, fl("t", 3)), reading("c", "p", 4, fl("t", 4)), reading("d", "p", 5, fl("t", 5)), reading("d", "p", 6, fl("t", 6)),
			},
			wantSkipped:  2,
			wantLatest:   map[string]float64{"a": 2, "b": 3, "c": 4},
			wantGapRange: [2]int64{5, 6},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startHub(t, tt.cfg)
			ctx := context.Background()
			c := &gateClient{}
			h.Subscribe(ctx, c, "s", Filter{})
			eventually(t, "snapshot", func() bool { return len(c.all()) == 1 })
			c.arm()
			h.Publish([]telemetry.Reading{reading("a", "p", 0, fl("t", 0))})
			<-c.entered // the Hub is stuck delivering batch 0
			h.Publish([]telemetry.Reading{reading("a", "p", 1, fl("t", 1))})
			h.Publish([]telemetry.Reading{reading("a", "p", 2, fl("t", 2))}) // the inbox is full
			for _, r := range tt.overflow {
				h.Publish([]telemetry.Reading{r})
			}
			close(c.release)

			latest := map[string]float64{}
			var merged, skipped uint64
			var gap [2]int64
			seen := 1
			eventually(t, "every series' latest value", func() bool {
				for _, m := range decodeAll(t, c.all()[seen:]) {
					seen++
					switch m.Type {
					case "readings":
						for _, r := range m.Readings {
							latest[r.DeviceID] = r.Fields["t"].(float64)
						}
					case "conflated":
						merged += m.Merged
					case "gap":
						skipped += m.Skipped
						gap = [2]int64{m.From, m.To}
					}
				}
				return fmt.Sprint(latest) == fmt.Sprint(tt.wantLatest) && merged == tt.wantMerged && skipped == tt.wantSkipped
			})
			if gap != tt.wantGapRange {
				t.Errorf("gap covers %v, want %v", gap, tt.wantGapRange)
			}
		})
	}
}

// TestHubSnapshotChunksPresence: a presence list longer than a chunk is
// chunked too, after the readings; together the chunks list every device
// once, and only the last is marked.
func TestHubSnapshotChunksPresence(t *testing.T) {
	const nDev = 3000
	h := startHub(t, HubConfig{SnapshotChunkBytes: 8 << 10})
	ctx := context.Background()
	batch := make([]telemetry.Reading, 0, nDev)
	for i := range nDev {
		batch = append(batch, reading(fmt.Sprintf("dev-%04d", i), "p3", 1, fl("t", 1)))
	}
	h.Publish(batch)
	eventually(t, "devices", func() bool { return h.Stats(ctx).Devices == nDev })
	for _, mode := range []PresenceMode{PresenceInclude, PresenceOnly} {
		t.Run(string(mode), func(t *testing.T) {
			c := &fakeClient{}
			h.Subscribe(ctx, c, "p", Filter{Presence: mode})
			var chunks []struct {
				Chunk    int               `json:"chunk"`
				Last     bool              `json:"last"`
				Readings []json.RawMessage `json:"readings"`
				Presence []struct {
					DeviceID string `json:"device_id"`
					Online   bool   `json:"online"`
				} `json:"presence"`
			}
			eventually(t, "the last chunk", func() bool {
				all := c.all()
				if len(all) == 0 {
					return false
				}
				return json.Unmarshal([]byte("["+strings.Join(all, ",")+"]"), &chunks) == nil && chunks[len(chunks)-1].Last
			})
			devices, readings := map[string]bool{}, 0
			for i, ch := range chunks {
				if ch.Chunk != i || ch.Last != (i == len(chunks)-1) {
					t.Fatalf("chunk %d: %+v", i, ch)
				}
				readings += len(ch.Readings)
				for _, p := range ch.Presence {
					if devices[p.DeviceID] || !p.Online {
						t.Fatalf("device %s twice or offline", p.DeviceID)
					}
					devices[p.DeviceID] = true
				}
			}
			wantReadings := nDev
			if mode == PresenceOnly {
				wantReadings = 0
			}
			if len(devices) != nDev || readings != wantReadings || len(chunks) < 4 {
				t.Fatalf("%d devices and %d readings in %d chunks", len(devices), readings, len(chunks))
			}
		})
	}
}
