package devices

import (
	"context"
	"errors"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/telemetryd/telemetryd/devices/pgtest"
	"github.com/telemetryd/telemetryd/telemetry"
)

// propagation is the bound the cluster promises for a change made through
// one instance to reach the others.
const propagation = time.Second

// pgNode is one instance's Registry on the shared database, running (its
// change feed included), with the events it announced.
type pgNode struct {
	*Registry
	mu     sync.Mutex
	events []Event
}

func (n *pgNode) saw(want Event) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, e := range n.events {
		if e == want {
			return true
		}
	}
	return false
}

func openPGNode(t *testing.T, url string, cfg Config) *pgNode {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := OpenPostgres(ctx, url, discard())
	if err != nil {
		t.Fatal(err)
	}
	// The feed's idle check runs many times in every test.
	store.listenIdle = 30 * time.Millisecond
	reg, err := Open(ctx, store, cfg, discard())
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	n := &pgNode{Registry: reg}
	reg.Subscribe(func(e Event) {
		n.mu.Lock()
		n.events = append(n.events, e)
		n.mu.Unlock()
	})
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = reg.Run(runCtx)
	}()
	t.Cleanup(func() {
		stop()
		<-done
		reg.Close()
	})
	return n
}

// within polls cond until it holds or d has passed.
func within(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func authenticates(r *Registry, token string) bool {
	_, err := r.AuthenticateDevice(context.Background(), token)
	return err == nil
}

func TestPostgresMigrationsIdempotent(t *testing.T) {
	pg := pgtest.Start(t)
	ctx := context.Background()
	for range 2 {
		s, err := OpenPostgres(ctx, pg.URL(), discard())
		if err != nil {
			t.Fatal(err)
		}
		v, err := s.SchemaVersion(ctx)
		s.Close()
		if err != nil || v != len(pgMigrations) {
			t.Fatalf("schema version %d, %v; want %d", v, err, len(pgMigrations))
		}
	}
	// A newer schema than this binary knows is refused.
	c, err := pgx.Connect(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, `UPDATE schema_version SET version = version + 1`); err != nil {
		t.Fatal(err)
	}
	if s, err := OpenPostgres(ctx, pg.URL(), discard()); err == nil {
		s.Close()
		t.Fatal("opened a database with a newer schema")
	}
}

func TestPostgresRoundTrip(t *testing.T) {
	pg := pgtest.Start(t)
	a := openPGNode(t, pg.URL(), Config{})
	ctx := context.Background()
	g, _, err := a.CreateDevice(ctx, DeviceSpec{Name: "gw", Kind: KindGateway, Labels: map[string]string{"site": "a"}})
	if err != nil {
		t.Fatal(err)
	}
	d, tok, err := a.CreateDevice(ctx, DeviceSpec{Name: "child", Labels: map[string]string{"room": "1", "floor": "2"}, Gateway: g.ID})
	if err != nil {
		t.Fatal(err)
	}
	v, vtok, err := a.CreateViewer(ctx, "ops", map[string]string{"site": "a"})
	if err != nil {
		t.Fatal(err)
	}
	// A second Registry loads the same content.
	b := openPGNode(t, pg.URL(), Config{})
	if got, err := b.Device(d.ID); err != nil || got.Gateway != g.ID || got.Labels["floor"] != "2" || !got.CreatedAt.Equal(d.CreatedAt) {
		t.Fatalf("device on b: %+v, %v", got, err)
	}
	if !b.MayReportFor(g.ID, d.ID) || !authenticates(b.Registry, tok) {
		t.Fatal("b: gateway assignment or token lost")
	}
	if got, err := b.AuthenticateViewer(ctx, vtok); err != nil || got.ID != v.ID || got.Scope["site"] != "a" {
		t.Fatalf("viewer on b: %+v, %v", got, err)
	}
}

func TestPostgresChangesReachOtherInstances(t *testing.T) {
	pg := pgtest.Start(t)
	a := openPGNode(t, pg.URL(), Config{})
	b := openPGNode(t, pg.URL(), Config{})
	ctx := context.Background()

	d, tok, err := a.CreateDevice(ctx, DeviceSpec{Name: "d1"})
	if err != nil {
		t.Fatal(err)
	}
	within(t, propagation, "device created on a authenticates on b", func() bool { return authenticates(b.Registry, tok) })

	v, vtok, err := a.CreateViewer(ctx, "dash", nil)
	if err != nil {
		t.Fatal(err)
	}
	within(t, propagation, "viewer created on a authenticates on b", func() bool {
		_, err := b.AuthenticateViewer(ctx, vtok)
		return err == nil
	})

	if _, err := a.UpdateDevice(ctx, d.ID, DeviceUpdate{Labels: map[string]string{"room": "7"}}); err != nil {
		t.Fatal(err)
	}
	within(t, propagation, "labels changed on a seen on b", func() bool {
		tags := b.Labels(d.ID)
		return len(tags) == 1 && tags[0] == telemetry.Tag{Key: "room", Value: "7"}
	})

	// Rotation grace holds on b: both tokens work, then (grace 0) only the new.
	_, tok2, err := a.RotateDevice(ctx, d.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	within(t, propagation, "rotated token on b", func() bool { return authenticates(b.Registry, tok2) })
	if !authenticates(b.Registry, tok) {
		t.Fatal("b: the previous token stopped working during its grace")
	}
	_, tok3, err := a.RotateDevice(ctx, d.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	within(t, propagation, "rotation without grace on b", func() bool {
		return authenticates(b.Registry, tok3) && !authenticates(b.Registry, tok) && !authenticates(b.Registry, tok2)
	})

	// Revocation through b reaches a's subscribers (and the other way round).
	if _, err := b.RevokeDevice(ctx, d.ID); err != nil {
		t.Fatal(err)
	}
	within(t, propagation, "revocation on b announced on a", func() bool {
		return a.saw(Event{Type: DeviceRevoked, Device: d.ID})
	})
	if authenticates(a.Registry, tok3) || a.Active(d.ID) {
		t.Fatal("a: revoked device still authenticates")
	}
	if _, err := a.RevokeViewer(ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	within(t, propagation, "viewer revocation on a announced on b", func() bool {
		return b.saw(Event{Type: ViewerRevoked, Viewer: v.ID}) && !b.ViewerActive(v.ID)
	})

	// An instance that has not heard of the revocation cannot undo it.
	if err := b.store.Update(ctx, func(ctx context.Context, tx Tx) error {
		return tx.PutDevice(ctx, Device{ID: d.ID, Name: "stale", Kind: KindDevice, CreatedAt: d.CreatedAt})
	}); err != nil {
		t.Fatal(err)
	}
	st, err := b.store.(SharedStore).LoadOwners(ctx, []string{string(d.ID)})
	if err != nil || len(st.Devices) != 1 || !st.Devices[0].Revoked {
		t.Fatalf("stale write un-revoked the device: %+v, %v", st.Devices, err)
	}

	if err := a.DeleteDevice(ctx, d.ID); err != nil {
		t.Fatal(err)
	}
	within(t, propagation, "deletion on a announced on b", func() bool {
		_, err := b.Device(d.ID)
		return b.saw(Event{Type: DeviceDeleted, Device: d.ID}) && errors.Is(err, ErrNotFound)
	})
}

// terminateListeners drops every LISTEN session: the instances' change
// feeds reconnect.
func terminateListeners(t *testing.T, url string) {
	t.Helper()
	terminateApp(t, url, "telemetryd registry feed")
}

// terminateApp drops the sessions of an application_name.
func terminateApp(t *testing.T, url, app string) {
	t.Helper()
	terminate(t, url, `application_name = '`+app+`'`)
}

func terminate(t *testing.T, url, where string) {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var n int
	if err := c.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE pid <> pg_backend_pid() AND `+where).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatalf("no session where %s", where)
	}
}

func TestPostgresOutage(t *testing.T) {
	pg := pgtest.Start(t)
	a := openPGNode(t, pg.URL(), Config{AdminToken: testAdmin})
	b := openPGNode(t, pg.URL(), Config{AdminToken: testAdmin})
	api := httptest.NewServer(NewAdminAPI(b.Registry, discard()))
	t.Cleanup(api.Close)
	ctx := context.Background()
	d, tok, err := a.CreateDevice(ctx, DeviceSpec{Name: "known"})
	if err != nil {
		t.Fatal(err)
	}
	within(t, propagation, "device known on b", func() bool { return authenticates(b.Registry, tok) })

	pg.Stop(t)
	if !authenticates(b.Registry, tok) || !authenticates(a.Registry, tok) || !b.Active(d.ID) {
		t.Fatal("a known device stopped authenticating while PostgreSQL is down")
	}
	if _, _, err := a.CreateDevice(ctx, DeviceSpec{Name: "during"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("create during the outage: %v, want ErrUnavailable", err)
	}
	res := call(t, api, testAdmin, "POST", "/api/v1/devices", `{"name":"during"}`)
	if res.status != 503 || res.code() != APICodeUnavailable || res.header.Get("Retry-After") == "" {
		t.Fatalf("admin API during the outage: %d %s", res.status, res.raw)
	}
	if _, err := b.RevokeDevice(ctx, d.ID); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("revoke during the outage: %v", err)
	}
	if !authenticates(b.Registry, tok) {
		t.Fatal("a failed revocation changed memory")
	}

	pg.Start(t)
	// Writes work again (the pool replaces its dead connections).
	var tok2 string
	within(t, 30*time.Second, "provisioning after the restart", func() bool {
		res := call(t, api, testAdmin, "POST", "/api/v1/devices", `{"name":"after"}`)
		tok2 = res.str("token")
		return res.status == 201
	})
	within(t, 10*time.Second, "device created on b after the restart authenticates on a", func() bool { return authenticates(a.Registry, tok2) })

	// A change nobody was told about (triggers off), then the feed lost:
	// the reconnection reloads everything and announces the revocation.
	c, err := pgx.Connect(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, `SET session_replication_role = replica`); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, `UPDATE devices SET revoked = true WHERE id = $1`, string(d.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, `DELETE FROM credentials WHERE owner = $1`, string(d.ID)); err != nil {
		t.Fatal(err)
	}
	if !authenticates(b.Registry, tok) {
		t.Fatal("b heard of a change that sent no notification: the test proves nothing")
	}
	terminateListeners(t, pg.URL())
	within(t, 5*time.Second, "b reloads after reconnecting and announces the revocation", func() bool {
		return b.saw(Event{Type: DeviceRevoked, Device: d.ID}) && !authenticates(b.Registry, tok)
	})
}
