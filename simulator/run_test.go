package simulator

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lxzan/gws"
)

// fakeIngest is a stand-in for the service's device WebSocket, just strict
// enough to exercise the simulator's device logic on a real socket: it
// authenticates by token, acks frames after a short "write", refuses
// malformed JSON with invalid_payload, closes oversized frames with 1009,
// and — to force resends — drops every dropEvery-th connection's socket
// without acking its last frame.
type fakeIngest struct {
	admin     *fakeAdmin
	up        *gws.Upgrader
	dropEvery int64

	frames atomic.Int64
	mu     sync.Mutex
	stored map[string]bool // "device/sim_seq"
	dups   int
}

var seqRE = regexp.MustCompile(`^\{"seq":(\d+),`)

func newFakeIngest(admin *fakeAdmin, maxFrame int, dropEvery int64) *fakeIngest {
	f := &fakeIngest{admin: admin, dropEvery: dropEvery, stored: map[string]bool{}}
	f.up = gws.NewUpgrader(&fakeIngestEvents{f: f}, &gws.ServerOption{ReadMaxPayloadSize: maxFrame, Recovery: gws.Recovery})
	return f
}

func (f *fakeIngest) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	id := strings.TrimPrefix(token, "tdv_")
	f.admin.mu.Lock()
	_, ok := f.admin.devices[id]
	f.admin.mu.Unlock()
	if !ok {
		http.Error(w, `{"error":{"code":"unauthorized","message":"no"}}`, http.StatusUnauthorized)
		return
	}
	c, err := f.up.Upgrade(w, r)
	if err != nil {
		return
	}
	c.Session().Store("id", id)
	go c.ReadLoop()
}

type fakeIngestEvents struct {
	gws.BuiltinEventHandler
	f *fakeIngest
}

func (e *fakeIngestEvents) OnMessage(c *gws.Conn, m *gws.Message) {
	defer m.Close()
	f := e.f
	b := append([]byte(nil), m.Bytes()...)
	sm := seqRE.FindSubmatch(b)
	if sm == nil {
		c.WriteAsync(gws.OpcodeText, []byte(`{"error":{"code":"invalid_payload","message":"no seq"}}`), nil)
		return
	}
	seq := string(sm[1])
	var frame struct {
		Device   string            `json:"device"`
		Metrics  map[string]any    `json:"metrics"`
		Readings []json.RawMessage `json:"readings"`
	}
	if err := json.Unmarshal(b, &frame); err != nil {
		c.WriteAsync(gws.OpcodeText, []byte(`{"error":{"seq":`+seq+`,"code":"invalid_payload","message":"malformed"}}`), nil)
		return
	}
	if n := f.frames.Add(1); f.dropEvery > 0 && n%f.dropEvery == 0 {
		_ = c.NetConn().Close() // crash before the write: no ack, the device must resend
		return
	}
	sender, _ := c.Session().Load("id")
	type rd struct {
		Device  string                     `json:"device"`
		Metrics map[string]json.RawMessage `json:"metrics"`
	}
	var rs []rd
	if frame.Readings != nil {
		for _, raw := range frame.Readings {
			var x rd
			_ = json.Unmarshal(raw, &x)
			rs = append(rs, x)
		}
	} else {
		var x rd
		_ = json.Unmarshal(b, &x)
		rs = append(rs, x)
	}
	f.mu.Lock()
	for _, x := range rs {
		dev := x.Device
		if dev == "" {
			dev = sender.(string)
		}
		var v struct {
			Value int `json:"value"`
		}
		_ = json.Unmarshal(x.Metrics[SeqField], &v)
		k := dev + "/" + strconv.Itoa(v.Value)
		if f.stored[k] {
			f.dups++
		}
		f.stored[k] = true
	}
	f.mu.Unlock()
	time.AfterFunc(5*time.Millisecond, func() { c.WriteAsync(gws.OpcodeText, []byte(`{"ack":`+seq+`}`), nil) })
}

func TestRunAgainstFakeService(t *testing.T) {
	admin := &fakeAdmin{token: "admin-secret-0123456789", devices: map[string]createDeviceReq{}}
	ingest := newFakeIngest(admin, 64<<10, 97)
	mux := http.NewServeMux()
	mux.Handle("/api/", admin)
	mux.Handle("/v1/ingest", ingest)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	cfg := Config{
		ServiceURL: srv.URL, AdminToken: admin.token,
		Devices: 4, Gateways: 2, ChildrenPerGateway: 3, Transport: TransportWS, Profile: ProfileMixed,
		Rate: 200, Batch: 2, ReadingsPerDevice: 60, Seed: 42,
		Faults:        Faults{Malformed: 0.05, Duplicate: 0.05, Oversize: 0.03, Disconnect: 0.03, WrongToken: 0.03},
		MaxFrameBytes: 64 << 10, BackoffMin: 5 * time.Millisecond, BackoffMax: 50 * time.Millisecond,
		DrainTimeout: 20 * time.Second,
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg, slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK {
		var b strings.Builder
		rep.WriteText(&b)
		t.Fatalf("report not OK:\n%s", b.String())
	}
	r := rep.Readings
	// 4 devices and 6 children, 60 readings each.
	if r.Generated != 10*60 || r.Sent != r.Generated || r.Unacked != 0 {
		t.Fatalf("generated %d, sent %d, unacked %d; want 600, 600, 0", r.Generated, r.Sent, r.Unacked)
	}
	for _, k := range []string{"malformed", "duplicate", "oversize", "disconnect", "wrong_token"} {
		f := rep.Faults[k]
		if f == nil || f.Injected == 0 || f.Injected != f.Confirmed {
			t.Errorf("fault %s: %+v (seed 42 injects every kind)", k, f)
		}
	}
	if rep.Rejected["invalid_payload"] == nil || rep.Rejected["invalid_payload"].Expected != rep.Faults["malformed"].Injected {
		t.Errorf("rejected %v", rep.Rejected)
	}
	if rep.Frames.Resent == 0 || rep.Connection.CloseCodes["1009"] != rep.Faults["oversize"].Injected {
		t.Errorf("frames %+v, close codes %v: the fake drops connections, so frames must be resent", rep.Frames, rep.Connection.CloseCodes)
	}
	// Every valid reading reached the fake's "storage"; malformed ones never did.
	ingest.mu.Lock()
	defer ingest.mu.Unlock()
	if want := int(r.Valid); len(ingest.stored) != want {
		t.Fatalf("fake stored %d distinct readings, want %d valid", len(ingest.stored), want)
	}
	if ingest.dups == 0 {
		t.Error("duplicates and resends should have reached the fake twice")
	}
	if l := rep.Latency["ack"]; l.Count == 0 || l.P50 <= 0 || l.P99 < l.P50 || l.Max < l.P99 {
		t.Errorf("ack latency %+v", l)
	}

	// Same seed, same fleet size: the same faults.
	admin2 := &fakeAdmin{token: admin.token, devices: map[string]createDeviceReq{}}
	ingest2 := newFakeIngest(admin2, 64<<10, 0)
	mux2 := http.NewServeMux()
	mux2.Handle("/api/", admin2)
	mux2.Handle("/v1/ingest", ingest2)
	srv2 := httptest.NewServer(mux2)
	t.Cleanup(srv2.Close)
	cfg.ServiceURL = srv2.URL
	rep2, err := Run(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, f := range rep.Faults {
		if rep2.Faults[k].Injected != f.Injected {
			t.Errorf("fault %s: %d injected, then %d with the same seed", k, f.Injected, rep2.Faults[k].Injected)
		}
	}
}

// testWriter sends log lines to the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
