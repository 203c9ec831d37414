package simulator

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/internal/testsupport"
)

// fakeInstance is one service instance in front of a shared fake ingest
// (one fleet, one "storage"): it counts the device sockets it accepted and
// can be killed, its sockets cut without a close frame, like a crashed
// process.
type fakeInstance struct {
	srv      *httptest.Server
	upgrades atomic.Int64
	mu       sync.Mutex
	conns    []net.Conn
}

func startFakeInstance(t *testing.T, admin *fakeAdmin, ingest *fakeIngest) *fakeInstance {
	inst := &fakeInstance{}
	mux := http.NewServeMux()
	mux.Handle("/api/", admin)
	mux.Handle("/v1/ingest", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inst.upgrades.Add(1)
		ingest.ServeHTTP(w, r)
	}))
	inst.srv = httptest.NewUnstartedServer(mux)
	inst.srv.Config.ConnState = func(c net.Conn, st http.ConnState) {
		if st == http.StateHijacked {
			inst.mu.Lock()
			inst.conns = append(inst.conns, c)
			inst.mu.Unlock()
		}
	}
	inst.srv.Start()
	t.Cleanup(inst.kill)
	return inst
}

func (i *fakeInstance) kill() {
	i.srv.Listener.Close()
	i.mu.Lock()
	for _, c := range i.conns {
		_ = c.Close()
	}
	i.conns = nil
	i.mu.Unlock()
	i.srv.Close()
}

// TestRunSpreadsAndFailsOverAmongServices: with three service URLs — two
// instances and one that is down from the start — the devices are spread
// over the URLs, those of the dead one move on to the next, and when one
// more instance dies mid-run its devices fail over to the last one; every
// valid reading is still delivered.
func TestRunSpreadsAndFailsOverAmongServices(t *testing.T) {
	admin := &fakeAdmin{token: "admin-secret-0123456789", devices: map[string]createDeviceReq{}}
	ingest := newFakeIngest(admin, 64<<10, 0)
	a := startFakeInstance(t, admin, ingest)
	b := startFakeInstance(t, admin, ingest)
	dead := startFakeInstance(t, admin, ingest)
	dead.kill()

	cfg := Config{
		ServiceURLs: []string{a.srv.URL, dead.srv.URL, b.srv.URL},
		AdminToken:  admin.token,
		Devices:     6, Transport: TransportWS, Rate: 100, ReadingsPerDevice: 300, Seed: 3,
		BackoffMin: 5 * time.Millisecond, BackoffMax: 50 * time.Millisecond, DrainTimeout: 20 * time.Second,
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	type result struct {
		rep *Report
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := Run(ctx, cfg, slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})))
		done <- result{rep, err}
	}()
	// Both live instances carry devices (two each started on them, the
	// dead URL's two moved to b), then b dies.
	testsupport.Eventually(t, 30*time.Second, "readings through both instances", func() bool {
		return ingest.frames.Load() > 300 && a.upgrades.Load() >= 2 && b.upgrades.Load() >= 4
	})
	beforeKill := a.upgrades.Load()
	b.kill()
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	rep := res.rep
	if !rep.OK {
		var s strings.Builder
		rep.WriteText(&s)
		t.Fatalf("report not OK:\n%s", s.String())
	}
	if r := rep.Readings; r.Generated != 6*300 || r.Acked != r.Valid || r.Unacked != 0 {
		t.Fatalf("readings %+v", r)
	}
	ingest.mu.Lock()
	stored := len(ingest.stored)
	ingest.mu.Unlock()
	if stored != int(rep.Readings.Valid) {
		t.Fatalf("fake stored %d distinct readings, want %d", stored, rep.Readings.Valid)
	}
	cr := rep.Connection
	if cr.PerService[a.srv.URL] < 2 || cr.PerService[b.srv.URL] < 4 || cr.PerService[dead.srv.URL] != 0 {
		t.Fatalf("connections per service %v", cr.PerService)
	}
	// b's four devices reconnected through a.
	if a.upgrades.Load() < beforeKill+4 || cr.Failovers < 2+4 {
		t.Fatalf("after b died: a accepted %d more sockets, %d failovers; want ≥ 4 and ≥ 6", a.upgrades.Load()-beforeKill, cr.Failovers)
	}
	var s strings.Builder
	rep.WriteText(&s)
	t.Logf("report:\n%s", s.String())
}
