package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"github.com/telemetryd/telemetryd/storage/influxtest"
)

// End-to-end tests of the live stream's bounds against the real service
// and InfluxDB: a snapshot larger than a dashboard's queue (issue 17.4)
// and a dashboard far slower than the feed (issue 20).

// dashView is what a dashboard WebSocket client has seen: the latest value
// of field "v" per series (tag "ch" of device d), and the messages that
// tell it about its stream.
type dashView struct {
	gws.BuiltinEventHandler
	mu        sync.Mutex
	latest    map[string]float64
	readings  int // live readings (snapshots not counted)
	merged    uint64
	skipped   uint64
	notices   int
	chunks    int
	lastChunk bool
	badChunk  string
	bytes     atomic.Int64
	closed    chan struct{}
	closeErr  error
}

func newDashView() *dashView {
	return &dashView{latest: map[string]float64{}, closed: make(chan struct{})}
}

func (v *dashView) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	v.bytes.Add(int64(m.Data.Len()))
	var msg struct {
		Type     string `json:"type"`
		Chunk    *int   `json:"chunk"`
		Last     *bool  `json:"last"`
		Merged   uint64 `json:"merged"`
		Skipped  uint64 `json:"skipped"`
		Readings []struct {
			DeviceID string             `json:"device_id"`
			Fields   map[string]float64 `json:"fields"`
			Tags     map[string]string  `json:"tags"`
		} `json:"readings"`
	}
	if err := json.Unmarshal(m.Bytes(), &msg); err != nil {
		panic(fmt.Sprintf("dashboard message %.200q: %v", m.Bytes(), err))
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	switch msg.Type {
	case "snapshot":
		// A snapshot without chunk fields is whole (as before chunks).
		if (msg.Chunk == nil) != (msg.Last == nil) || (msg.Chunk != nil && *msg.Chunk != v.chunks) || v.lastChunk {
			v.badChunk = fmt.Sprintf("chunk %v last %v after %d chunks (last seen: %v)", msg.Chunk, msg.Last, v.chunks, v.lastChunk)
		}
		v.chunks++
		v.lastChunk = msg.Last == nil || *msg.Last
	case "readings":
		v.readings += len(msg.Readings)
	case "conflated":
		v.merged += msg.Merged
		v.notices++
	case "gap":
		v.skipped += msg.Skipped
		v.notices++
	}
	for _, r := range msg.Readings {
		v.latest[r.DeviceID+"/"+r.Tags["ch"]] = r.Fields["v"]
	}
}

func (v *dashView) OnClose(_ *gws.Conn, err error) {
	v.mu.Lock()
	v.closeErr = err
	v.mu.Unlock()
	close(v.closed)
}

func (v *dashView) isClosed() (bool, error) {
	select {
	case <-v.closed:
		v.mu.Lock()
		defer v.mu.Unlock()
		return true, v.closeErr
	default:
		return false, nil
	}
}

// throttledConn reads no more than allowed() bytes in all (allowed < 0:
// no limit), like a dashboard on a slow link.
type throttledConn struct {
	net.Conn
	allowed func() int64
	read    atomic.Int64
}

func (c *throttledConn) Read(p []byte) (int, error) {
	for {
		a := c.allowed()
		if a < 0 {
			break
		}
		if room := a - c.read.Load(); room > 0 {
			p = p[:min(int64(len(p)), room)]
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

// dialDashView opens /v1/live as the admin viewer. With allowed set it
// reads through a throttledConn over a socket with a small receive buffer,
// so the server's queue, not the kernel's buffers, absorbs the backlog.
func dialDashView(t *testing.T, svc *service, allowed func() int64) (*dashView, *gws.Conn) {
	t.Helper()
	v := newDashView()
	opt := &gws.ClientOption{Addr: svc.ws("/v1/live"), RequestHeader: bearer(testAdminToken)}
	var conn *gws.Conn
	var err error
	if allowed == nil {
		conn, _, err = gws.NewClient(v, opt)
	} else {
		d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		}}
		var raw net.Conn
		raw, err = d.Dial("tcp", svc.addr)
		if err != nil {
			t.Fatal(err)
		}
		conn, _, err = gws.NewClientFromConn(v, opt, &throttledConn{Conn: raw, allowed: allowed})
	}
	if err != nil {
		t.Fatalf("dial dashboard: %v", err)
	}
	go conn.ReadLoop()
	t.Cleanup(func() { _ = conn.WriteClose(1000, nil) })
	return v, conn
}

// subscribeAll subscribes v to everything and waits for its (empty or
// chunked) snapshot to end.
func subscribeAll(t *testing.T, v *dashView, conn *gws.Conn) {
	t.Helper()
	if err := conn.WriteString(`{"op":"subscribe","id":"all","devices":["*"]}`); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the snapshot's last chunk", func() bool {
		if closed, err := v.isClosed(); closed {
			t.Fatalf("dashboard closed during its snapshot: %v", err)
		}
		v.mu.Lock()
		defer v.mu.Unlock()
		if v.badChunk != "" {
			t.Fatalf("snapshot: %s", v.badChunk)
		}
		return v.lastChunk
	})
}

// sendFrame sends readings v=value for series ch lo..hi-1 of one device as
// one frame and waits for its ack.
func sendFrame(t *testing.T, dev *wsClient, seq, lo, hi int, value float64) {
	t.Helper()
	for {
		dev.send(t, seriesFrame(seq, lo, hi, value))
		a := nextAck(t, dev)
		if a.Error != nil && a.Error.Code == "rate_limited" {
			time.Sleep(time.Duration(max(a.Error.RetryAfterMS, 10)) * time.Millisecond)
			continue
		}
		checkAck(t, a, seq)
		return
	}
}

func seriesFrame(seq, lo, hi int, value float64) string {
	var b strings.Builder
	fmt.Fprintf(&b, `{"seq":%d,"readings":[`, seq)
	for ch := lo; ch < hi; ch++ {
		if ch > lo {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"measurement":"env","metrics":{"v":%g},"tags":{"ch":"c%05d"}}`, value, ch)
	}
	b.WriteString("]}")
	return b.String()
}

func nextAck(t *testing.T, dev *wsClient) ackOrError {
	t.Helper()
	var a ackOrError
	dev.nextJSON(t, &a)
	return a
}

func checkAck(t *testing.T, a ackOrError, seq int) {
	t.Helper()
	if a.Ack == nil || *a.Ack != uint64(seq) {
		t.Fatalf("frame %d: %s", seq, mustJSON(a))
	}
}

// TestLiveSnapshotOfFiftyThousandSeries (issue 17.4): a dashboard that
// subscribes to everything while the service remembers 50 000 series
// (some 6 MiB of last values, more than a dashboard's 4 MiB queue) gets
// every series in snapshot chunks, the last one marked, and stays open.
func TestLiveSnapshotOfFiftyThousandSeries(t *testing.T) {
	const nSeries, perFrame = 50000, 1000
	influx := influxtest.Start(t)
	svc := startService(t, influx, nil, tokensFile(t, "many-1", "tok-many-1"))
	waitReady(t, svc)
	dev := mustDialWS(t, svc.ws("/v1/ingest"), bearer("tok-many-1"))
	for i := 0; i < nSeries; i += perFrame {
		sendFrame(t, dev, i/perFrame+1, i, i+perFrame, float64(i))
	}
	waitMetric(t, svc, "series remembered", eq(nSeries), "telemetryd_live_series")

	v, conn := dialDashView(t, svc, nil)
	subscribeAll(t, v, conn)
	v.mu.Lock()
	got, chunks := len(v.latest), v.chunks
	v.mu.Unlock()
	if got != nSeries || chunks < 2 {
		t.Fatalf("snapshot: %d series in %d chunks, want %d in several", got, chunks, nSeries)
	}
	// Still subscribed and open: the next reading arrives live.
	sendFrame(t, dev, nSeries/perFrame+1, 7, 8, -1)
	eventually(t, 15*time.Second, "a live reading after the snapshot", func() bool {
		v.mu.Lock()
		defer v.mu.Unlock()
		return v.readings == 1 && v.latest["many-1/c00007"] == -1
	})
	if closed, err := v.isClosed(); closed {
		t.Fatalf("dashboard closed: %v", err)
	}
	if m := scrape(t, svc); m.get("telemetryd_live_slow_clients_dropped_total") != 0 || m.get("telemetryd_live_snapshot_chunks_total") < float64(chunks) {
		t.Fatalf("metrics: dropped %v, chunks %v", m.get("telemetryd_live_slow_clients_dropped_total"), m.get("telemetryd_live_snapshot_chunks_total"))
	}
}

// slowDashboardDuration is how long TestLiveSlowDashboardIsConflated
// streams: 12s by default, TELEMETRY_TEST_SLOW_DASHBOARD_SECONDS (60 is
// the figure of issue 20) to soak.
func slowDashboardDuration(t *testing.T) time.Duration {
	if s := os.Getenv("TELEMETRY_TEST_SLOW_DASHBOARD_SECONDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("TELEMETRY_TEST_SLOW_DASHBOARD_SECONDS=%q", s)
		}
		return time.Duration(n) * time.Second
	}
	return 12 * time.Second
}

// TestLiveSlowDashboardIsConflated (issue 20): devices stream while one
// dashboard reads at about 1 % of the rate another receives the feed.
// The slow one is never disconnected: it is told its stream was conflated
// and, once it reads again, has the latest value of every series; every
// reading was either delivered to it or counted as merged away. The fast
// one gets every reading, and every frame is acknowledged.
func TestLiveSlowDashboardIsConflated(t *testing.T) {
	const devices, seriesPerDev = 4, 50
	duration := slowDashboardDuration(t)
	influx := influxtest.Start(t)
	var pairs []string
	for d := range devices {
		pairs = append(pairs, fmt.Sprint("feed-", d), fmt.Sprint("tok-feed-", d))
	}
	svc := startService(t, influx, nil, tokensFile(t, pairs...))
	waitReady(t, svc)

	fast, fastConn := dialDashView(t, svc, nil)
	subscribeAll(t, fast, fastConn)
	var throttle atomic.Bool // the slow dashboard reads at 1 % of the fast one's bytes
	var fastAtStart, slowAtStart int64
	var slowConn *throttledConn
	slow, slowWS := dialDashView(t, svc, func() int64 {
		if !throttle.Load() {
			return -1
		}
		return slowAtStart + (fast.bytes.Load()-fastAtStart)/100
	})
	subscribeAll(t, slow, slowWS)
	slowConn = slowWS.NetConn().(*throttledConn)
	fastAtStart, slowAtStart = fast.bytes.Load(), slowConn.read.Load()
	throttle.Store(true)

	// Every 20ms (within the default rate limit) each device sends a frame
	// with a value for each of its series; then all acks are awaited.
	devs := make([]*wsClient, devices)
	for d := range devs {
		devs[d] = mustDialWS(t, svc.ws("/v1/ingest"), bearer(fmt.Sprint("tok-feed-", d)))
	}
	frames := 0
	tick := time.NewTicker(20 * time.Millisecond)
	for stop := time.Now().Add(duration); time.Now().Before(stop); {
		<-tick.C
		frames++
		for _, dev := range devs {
			dev.send(t, seriesFrame(frames, 0, seriesPerDev, float64(frames)))
		}
		for _, dev := range devs {
			checkAck(t, nextAck(t, dev), frames)
		}
	}
	tick.Stop()
	final := make([]int, devices)
	for d := range final {
		final[d] = frames
	}
	slowRead, fastRead := slowConn.read.Load()-slowAtStart, fast.bytes.Load()-fastAtStart
	throttle.Store(false) // the link recovers
	total := 0
	for _, n := range final {
		total += n * seriesPerDev
	}
	eventually(t, 60*time.Second, "both dashboards with the latest value of every series", func() bool {
		// (A closed socket is seen once what it had received is read.)
		if closed, err := slow.isClosed(); closed {
			t.Fatalf("slow dashboard closed: %v", err)
		}
		for _, v := range []*dashView{fast, slow} {
			v.mu.Lock()
			ok := len(v.latest) == devices*seriesPerDev
			for d := range devices {
				for ch := range seriesPerDev {
					ok = ok && v.latest[fmt.Sprintf("feed-%d/c%05d", d, ch)] == float64(final[d])
				}
			}
			v.mu.Unlock()
			if !ok {
				return false
			}
		}
		return true
	})
	slow.mu.Lock()
	sr, sm, ss, sn := slow.readings, slow.merged, slow.skipped, slow.notices
	slow.mu.Unlock()
	fast.mu.Lock()
	fr, fn := fast.readings, fast.notices
	fast.mu.Unlock()
	t.Logf("%d readings in %s; while throttled the slow dashboard read %d bytes, the fast one %d; slow: %d readings delivered, %d merged away in %d notices; fast: %d",
		total, duration, slowRead, fastRead, sr, sm, sn, fr)
	if got := scrape(t, svc).get("telemetryd_live_conflated_readings_total", `stage="dashboard"`); got != float64(sm) {
		t.Errorf("conflated readings metric %v, the dashboard was told of %d", got, sm)
	}
	if fr != total || fn != 0 {
		t.Errorf("fast dashboard: %d readings and %d conflated/gap notices, want %d and none", fr, fn, total)
	}
	if sm == 0 || ss != 0 || uint64(sr)+sm != uint64(total) {
		t.Errorf("slow dashboard: %d delivered + %d merged (+ %d skipped), want %d with some merged and none skipped", sr, sm, ss, total)
	}
	if closed, err := slow.isClosed(); closed {
		t.Errorf("slow dashboard closed: %v", err)
	}
	if got := scrape(t, svc).get("telemetryd_live_slow_clients_dropped_total"); got != 0 {
		t.Errorf("slow clients dropped: %v", got)
	}
}
