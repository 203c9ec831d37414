package live

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/telemetry"
)

// sseEvent is one parsed Server-Sent Event.
type sseEvent struct {
	event, data, comment, retry string
}

// sseStream reads events from a response body in the background.
type sseStream struct {
	resp   *http.Response
	events chan sseEvent
	done   chan struct{} // closed at EOF or error
}

func openSSE(t *testing.T, url string, header http.Header) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	s := &sseStream{resp: resp, events: make(chan sseEvent, 1000), done: make(chan struct{})}
	if resp.StatusCode != http.StatusOK {
		close(s.done)
		return s
	}
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				s.events <- ev
				ev = sseEvent{}
			case strings.HasPrefix(line, ":"):
				ev.comment = strings.TrimSpace(line[1:])
			case strings.HasPrefix(line, "event: "):
				ev.event = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				ev.data += line[len("data: "):]
			case strings.HasPrefix(line, "retry: "):
				ev.retry = line[len("retry: "):]
			}
		}
	}()
	return s
}

// next returns the next event that is not a heartbeat.
func (s *sseStream) next(t *testing.T) sseEvent {
	t.Helper()
	for {
		select {
		case ev := <-s.events:
			if ev.comment == "ping" {
				continue
			}
			return ev
		case <-s.done:
			select {
			case ev := <-s.events:
				return ev
			default:
			}
			t.Fatal("stream ended")
		case <-time.After(10 * time.Second):
			t.Fatal("no event within 10s")
		}
	}
}

type fakeViewers map[string]telemetry.Viewer

func (f fakeViewers) AuthenticateViewer(_ context.Context, token string) (telemetry.Viewer, error) {
	if v, ok := f[token]; ok {
		return v, nil
	}
	return telemetry.Viewer{}, errors.New("unknown token")
}

func startSSE(t *testing.T, cfg DashboardConfig) (*Hub, *Dashboards, *httptest.Server) {
	t.Helper()
	h := startHub(t, HubConfig{})
	d := NewDashboards(cfg, h, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = d.Run(ctx); close(done) }()
	srv := httptest.NewServer(d.SSE())
	t.Cleanup(func() {
		cancel()
		<-done
		srv.Close()
	})
	return h, d, srv
}

func TestSSESnapshotThenLive(t *testing.T) {
	h, _, srv := startSSE(t, DashboardConfig{})
	ctx := context.Background()
	h.Publish([]telemetry.Reading{reading("d1", "p3", 1, fl("t", 20))})
	eventually(t, "remembered", func() bool { return h.Stats(ctx).Series == 1 })

	s := openSSE(t, srv.URL+"?devices=d1,d2&sub=mine&presence=include", nil)
	if ct := s.resp.Header.Get("Content-Type"); s.resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
		t.Fatalf("status %d, content type %q", s.resp.StatusCode, ct)
	}
	if ev := s.next(t); ev.retry != "2000" {
		t.Fatalf("first event %+v, want the retry hint", ev)
	}
	ev := s.next(t)
	snap := parseFrame(t, ev.data)
	if ev.event != "snapshot" || snap.Type != "snapshot" || snap.Sub != "mine" || len(snap.Readings) != 1 || snap.Readings[0].Fields["t"] != 20.0 ||
		!strings.Contains(ev.data, `"presence":[{"device_id":"d1","online":true`) {
		t.Fatalf("snapshot event %+v", ev)
	}

	h.Publish([]telemetry.Reading{reading("d3", "p3", 2, fl("t", 1))}) // not subscribed
	h.Publish([]telemetry.Reading{reading("d2", "p3", 2, fl("t", 21))})
	if ev := s.next(t); ev.event != "presence" || parsePresence(t, ev.data).DeviceID != "d2" {
		t.Fatalf("want d2's presence, got %+v", ev)
	}
	ev = s.next(t)
	live := parseFrame(t, ev.data)
	if ev.event != "readings" || len(live.Readings) != 1 || live.Readings[0].DeviceID != "d2" || live.Readings[0].Fields["t"] != 21.0 {
		t.Fatalf("live event %+v", ev)
	}
}

func TestSSEScopeAndAuth(t *testing.T) {
	viewers := fakeViewers{
		"all":   {ID: "v1", Name: "all"},
		"plant": {ID: "v2", Name: "plant", Scope: map[string]string{"site": "p4"}},
	}
	h, _, srv := startSSE(t, DashboardConfig{Viewers: viewers})

	for _, tc := range []struct{ name, url string }{
		{"no token", srv.URL},
		{"wrong token", srv.URL + "?token=nope"},
	} {
		s := openSSE(t, tc.url, nil)
		if s.resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%s: status %d", tc.name, s.resp.StatusCode)
		}
	}

	// ?token= (EventSource cannot set headers) and Authorization both work.
	restricted := openSSE(t, srv.URL+"?token=plant", nil)
	full := openSSE(t, srv.URL, http.Header{"Authorization": {"Bearer all"}})
	for _, s := range []*sseStream{restricted, full} {
		s.next(t) // retry
		if ev := s.next(t); ev.event != "snapshot" {
			t.Fatalf("want snapshot, got %+v", ev)
		}
	}
	h.Publish([]telemetry.Reading{reading("d1", "p3", 1, fl("t", 1))})
	h.Publish([]telemetry.Reading{reading("d2", "p4", 1, fl("t", 2))})
	if got := parseFrame(t, restricted.next(t).data); got.Readings[0].DeviceID != "d2" {
		t.Fatalf("restricted viewer got %+v", got)
	}
	var devices []string
	for len(devices) < 2 {
		for _, r := range parseFrame(t, full.next(t).data).Readings {
			devices = append(devices, r.DeviceID)
		}
	}
	if strings.Join(devices, ",") != "d1,d2" {
		t.Fatalf("unrestricted viewer got %v", devices)
	}
}

func TestSSEBadRequests(t *testing.T) {
	_, _, srv := startSSE(t, DashboardConfig{})
	for _, q := range []string{
		"?presence=sometimes",
		"?tag=site",
		"?tag==x",
		"?sub=" + strings.Repeat("x", 65),
		"?devices=" + strings.Repeat("d,", 1001),
	} {
		s := openSSE(t, srv.URL+q, nil)
		body, _ := io.ReadAll(s.resp.Body)
		if s.resp.StatusCode != http.StatusBadRequest || !bytes.Contains(body, []byte(`"invalid_request"`)) {
			t.Fatalf("%s: status %d %s", q, s.resp.StatusCode, body)
		}
	}
}

func TestSSEHeartbeatAndShutdown(t *testing.T) {
	h := startHub(t, HubConfig{})
	d := NewDashboards(DashboardConfig{PingInterval: 20 * time.Millisecond}, h, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { _ = d.Run(ctx); close(runDone) }()
	srv := httptest.NewServer(d.SSE())
	defer srv.Close()
	s := openSSE(t, srv.URL, nil)
	eventually(t, "connected", func() bool { return d.Connections() == 1 })
	for ping := false; !ping; {
		select {
		case ev := <-s.events:
			ping = ev.comment == "ping"
		case <-time.After(10 * time.Second):
			t.Fatal("no heartbeat")
		}
	}
	cancel() // Run ends: every stream ends
	<-runDone
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Fatal("stream not ended by shutdown")
	}
	eventually(t, "detached", func() bool { return d.Connections() == 0 && h.Stats(context.Background()).Clients == 0 })
}

func TestSSEDisconnectViewer(t *testing.T) {
	viewers := fakeViewers{"a": {ID: "va", Name: "a"}, "b": {ID: "vb", Name: "b"}}
	_, d, srv := startSSE(t, DashboardConfig{Viewers: viewers})
	a := openSSE(t, srv.URL+"?token=a", nil)
	b := openSSE(t, srv.URL+"?token=b", nil)
	eventually(t, "connected", func() bool { return d.Connections() == 2 })
	d.Disconnect("va", telemetry.ClosePolicy, "revoked")
	select {
	case <-a.done:
	case <-time.After(10 * time.Second):
		t.Fatal("revoked viewer's stream not ended")
	}
	select {
	case <-b.done:
		t.Fatal("other viewer's stream ended")
	default:
	}
}

// blockingWriter is a ResponseWriter whose writes block after the first
// few until released, like a peer that stopped reading.
type blockingWriter struct {
	header  http.Header
	mu      sync.Mutex
	buf     bytes.Buffer
	writes  int
	free    int // writes that go through before blocking
	release chan struct{}
}

func (w *blockingWriter) Header() http.Header { return w.header }
func (w *blockingWriter) WriteHeader(int)     {}
func (w *blockingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.writes++
	n := w.writes
	w.buf.Write(p)
	w.mu.Unlock()
	if n > w.free {
		<-w.release
		return 0, errors.New("peer gone")
	}
	return len(p), nil
}
func (w *blockingWriter) Flush()                           {}
func (w *blockingWriter) SetWriteDeadline(time.Time) error { return nil }

func TestSSESlowClientIsClosed(t *testing.T) {
	h := startHub(t, HubConfig{SlowPolicy: SlowDisconnect})
	d := NewDashboards(DashboardConfig{MaxPending: 4}, h, slog.New(slog.DiscardHandler))
	w := &blockingWriter{header: http.Header{}, free: 2, release: make(chan struct{})} // the retry hint and the snapshot
	req := httptest.NewRequest(http.MethodGet, "/v1/live/sse", nil)
	served := make(chan struct{})
	go func() { d.SSE().ServeHTTP(w, req); close(served) }()
	ctx := context.Background()
	eventually(t, "subscribed", func() bool { return h.Stats(ctx).Clients == 1 })

	// The first live frame blocks the writer; MaxPending more fill the
	// queue; the next is one too many.
	for i := range 10 {
		h.Publish([]telemetry.Reading{reading("d1", "p3", int64(i), fl("t", float64(i)))})
		eventually(t, "fan-out", func() bool { return h.Stats(ctx).Published == uint64(i+1) })
	}
	eventually(t, "dropped as slow", func() bool { st := h.Stats(ctx); return st.SlowClientsDropped == 1 && st.Clients == 0 })
	close(w.release) // the write deadline would do this on a real connection
	select {
	case <-served:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler did not end the stream")
	}
	if got := d.Connections(); got != 0 {
		t.Fatalf("connections = %d", got)
	}
}

func TestAppendSSEEvent(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"type":"readings","sub":"s"}`, "event: readings\ndata: {\"type\":\"readings\",\"sub\":\"s\"}\n\n"},
		{`{"type":"presence"}`, "event: presence\ndata: {\"type\":\"presence\"}\n\n"},
		// A message with a position is sent with it as the event id.
		{`{"type":"readings","pos":1764849612000123,"sub":"s"}`, "event: readings\nid: 1764849612000123\ndata: {\"type\":\"readings\",\"pos\":1764849612000123,\"sub\":\"s\"}\n\n"},
		{`{"type":"persisted","sub":"s","upto":{}}`, "event: persisted\ndata: {\"type\":\"persisted\",\"sub\":\"s\",\"upto\":{}}\n\n"},
		{"{\"a\":\n1}", "data: {\"a\":\ndata: 1}\n\n"},
		{`{"type":"Bad Type"}`, "data: {\"type\":\"Bad Type\"}\n\n"},
	}
	for _, tt := range tests {
		if got := string(appendSSEEvent(nil, []byte(tt.in))); got != tt.want {
			t.Errorf("appendSSEEvent(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// stallWriter is a ResponseWriter whose writes after the first few wait
// until released and then go through: a peer on a link that stalls.
type stallWriter struct {
	blockingWriter
}

func (w *stallWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.writes++
	n := w.writes
	w.mu.Unlock()
	if n > w.free {
		<-w.release
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *stallWriter) text() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// TestSSESlowClientIsConflated (issue 20): under the default policy a
// stream that stalls is not ended: once it moves again it is told how many
// readings were merged away and gets the latest value of every series.
func TestSSESlowClientIsConflated(t *testing.T) {
	h := startHub(t, HubConfig{})
	d := NewDashboards(DashboardConfig{MaxPending: 4}, h, slog.New(slog.DiscardHandler))
	w := &stallWriter{blockingWriter{header: http.Header{}, free: 2, release: make(chan struct{})}} // the retry hint and the snapshot
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req := httptest.NewRequest(http.MethodGet, "/v1/live/sse", nil).WithContext(ctx)
	served := make(chan struct{})
	go func() { d.SSE().ServeHTTP(w, req); close(served) }()
	eventually(t, "subscribed", func() bool { return h.Stats(ctx).Clients == 1 })
	for i := range 40 {
		h.Publish([]telemetry.Reading{reading(fmt.Sprint("d", i%4), "p3", int64(i), fl("t", float64(i)))})
		eventually(t, "fan-out", func() bool { return h.Stats(ctx).Published == uint64(i+1) })
	}
	eventually(t, "conflation", func() bool { return h.Stats(ctx).Conflated > 0 })
	close(w.release)
	eventually(t, "the latest values", func() bool {
		text := w.text()
		// The notice carries the position the stream is complete up to
		// (resume.go), which is its event id.
		if !regexp.MustCompile(`event: conflated\nid: (\d+)\ndata: \{"type":"conflated","pos":(\d+),"sub":"live","merged":`).MatchString(text) {
			return false
		}
		for dev := range 4 {
			if !strings.Contains(text, fmt.Sprintf(`"device_id":"d%d","measurement":"env","ts":%d,`, dev, 36+dev)) {
				return false
			}
		}
		return true
	})
	if st := h.Stats(ctx); st.SlowClientsDropped != 0 || st.Clients != 1 {
		t.Fatalf("stream dropped: %+v", st)
	}
	select {
	case <-served:
		t.Fatal("the stream ended")
	default:
	}
}
