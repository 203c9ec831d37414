package devices

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/internal/testsupport"
	"github.com/telemetryd/telemetryd/telemetry"
)

// clock is a settable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

type testReg struct {
	*Registry
	path  string
	clock *clock
}

func openTestRegistry(t testing.TB, path string, cfg Config) *testReg {
	t.Helper()
	ctx := context.Background()
	store, err := OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	if cfg.Now == nil {
		cfg.Now = c.Now
	}
	reg, err := Open(ctx, store, cfg, discard())
	if err != nil {
		t.Fatal(err)
	}
	return &testReg{Registry: reg, path: path, clock: c}
}

func newTestRegistry(t *testing.T, cfg Config) *testReg {
	t.Helper()
	r := openTestRegistry(t, filepath.Join(t.TempDir(), "registry.db"), cfg)
	t.Cleanup(func() { r.Close() })
	return r
}

func mustCreate(t *testing.T, r *testReg, spec DeviceSpec) (Device, string) {
	t.Helper()
	d, tok, err := r.CreateDevice(context.Background(), spec)
	if err != nil {
		t.Fatalf("CreateDevice(%+v): %v", spec, err)
	}
	return d, tok
}

func authOK(t *testing.T, r *testReg, tok string, want telemetry.DeviceID) {
	t.Helper()
	id, err := r.AuthenticateDevice(context.Background(), tok)
	if err != nil || id != want {
		t.Fatalf("AuthenticateDevice = %q, %v; want %q", id, err, want)
	}
}

func authFails(t *testing.T, r *testReg, tok string) {
	t.Helper()
	if id, err := r.AuthenticateDevice(context.Background(), tok); !errors.Is(err, telemetry.ErrUnauthorized) {
		t.Fatalf("AuthenticateDevice = %q, %v; want ErrUnauthorized", id, err)
	}
}

func TestCreateAndAuthenticate(t *testing.T) {
	r := newTestRegistry(t, Config{})
	d, tok := mustCreate(t, r, DeviceSpec{Name: "boiler 1", Labels: map[string]string{"site": "plant-3"}})
	if d.Kind != KindDevice || len(d.ID) != 36 || d.ID[14] != '7' || d.Revoked || !d.CreatedAt.Equal(r.clock.Now()) {
		t.Fatalf("created %+v", d)
	}
	if !strings.HasPrefix(tok, DeviceTokenPrefix) {
		t.Fatalf("token %q", tok)
	}
	authOK(t, r, tok, d.ID)
	for _, bad := range []string{"", "tdv_", tok + "x", strings.TrimPrefix(tok, "tdv_"), "tvw_" + strings.TrimPrefix(tok, "tdv_"), strings.Repeat("tdv_", 100)} {
		authFails(t, r, bad)
	}
	if got := r.Stats().DeviceAuthFailures; got != 6 {
		t.Fatalf("auth failures counted %d, want 6", got)
	}
	if !r.Active(d.ID) || r.Active("nope") {
		t.Fatal("Active wrong")
	}
	if got := fmt.Sprint(r.Labels(d.ID)); got != "[{site plant-3}]" {
		t.Fatalf("Labels = %s", got)
	}
	// A device token is no viewer token, and the other way round.
	if _, err := r.AuthenticateViewer(context.Background(), tok); err == nil {
		t.Fatal("device token accepted as viewer")
	}
}

func TestCreateValidation(t *testing.T) {
	r := newTestRegistry(t, Config{})
	gw, _ := mustCreate(t, r, DeviceSpec{Name: "gw", Kind: KindGateway})
	dev, _ := mustCreate(t, r, DeviceSpec{Name: "dev"})
	long := strings.Repeat("x", 257)
	tests := []struct {
		name string
		spec DeviceSpec
	}{
		{"empty name", DeviceSpec{}},
		{"control char in name", DeviceSpec{Name: "a\nb"}},
		{"bad kind", DeviceSpec{Name: "n", Kind: "sensor"}},
		{"label key with space", DeviceSpec{Name: "n", Labels: map[string]string{"a b": "v"}}},
		{"label key with comma", DeviceSpec{Name: "n", Labels: map[string]string{"a,b=c": "v"}}},
		{"label key _underscore", DeviceSpec{Name: "n", Labels: map[string]string{"_x": "v"}}},
		{"label key device_id", DeviceSpec{Name: "n", Labels: map[string]string{"device_id": "v"}}},
		{"label key time", DeviceSpec{Name: "n", Labels: map[string]string{"time": "v"}}},
		{"label value newline (line protocol injection)", DeviceSpec{Name: "n", Labels: map[string]string{"site": "a\nevil,device_id=x v=1"}}},
		{"label value carriage return", DeviceSpec{Name: "n", Labels: map[string]string{"site": "a\rb"}}},
		{"label value trailing backslash", DeviceSpec{Name: "n", Labels: map[string]string{"site": `a\`}}},
		{"label value empty", DeviceSpec{Name: "n", Labels: map[string]string{"site": ""}}},
		{"label value too long", DeviceSpec{Name: "n", Labels: map[string]string{"site": long}}},
		{"label value invalid UTF-8", DeviceSpec{Name: "n", Labels: map[string]string{"site": "\xff"}}},
		{"label value C1 control", DeviceSpec{Name: "n", Labels: map[string]string{"site": "a\u0085b"}}},
		{"too many labels", DeviceSpec{Name: "n", Labels: func() map[string]string {
			m := map[string]string{}
			for i := range 17 {
				m[fmt.Sprint("k", i)] = "v"
			}
			return m
		}()}},
		{"unknown gateway", DeviceSpec{Name: "n", Gateway: "0190-nope"}},
		{"gateway is a plain device", DeviceSpec{Name: "n", Gateway: dev.ID}},
		{"gateway of a gateway", DeviceSpec{Name: "n", Kind: KindGateway, Gateway: gw.ID}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := r.CreateDevice(context.Background(), tt.spec); !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
	if n := len(r.Devices()); n != 2 {
		t.Fatalf("%d devices after refused creations, want 2", n)
	}
	// What is allowed: the bridge's tag alphabet, spaces and Unicode in values.
	mustCreate(t, r, DeviceSpec{Name: "Kessel Nord ✓", Labels: map[string]string{"site/zone:a.b-c_1": "Halle 3, Süd = \"x\""}})
}

func TestGatewayAuthorization(t *testing.T) {
	r := newTestRegistry(t, Config{})
	ctx := context.Background()
	gw, _ := mustCreate(t, r, DeviceSpec{Name: "gw", Kind: KindGateway})
	gw2, _ := mustCreate(t, r, DeviceSpec{Name: "gw2", Kind: KindGateway})
	child, _ := mustCreate(t, r, DeviceSpec{Name: "child", Gateway: gw.ID})
	other, _ := mustCreate(t, r, DeviceSpec{Name: "other"})
	tests := []struct {
		gw, dev telemetry.DeviceID
		want    bool
	}{
		{gw.ID, child.ID, true},
		{gw.ID, other.ID, false},
		{gw2.ID, child.ID, false},
		{other.ID, child.ID, false},
		{gw.ID, "unknown", false},
	}
	for _, tt := range tests {
		if got := r.MayReportFor(tt.gw, tt.dev); got != tt.want {
			t.Errorf("MayReportFor(%s, %s) = %v", tt.gw, tt.dev, got)
		}
	}
	// Reassign, then revoke the child: the gateway loses it.
	g2 := gw2.ID
	if _, err := r.UpdateDevice(ctx, child.ID, DeviceUpdate{Gateway: &g2}); err != nil {
		t.Fatal(err)
	}
	if r.MayReportFor(gw.ID, child.ID) || !r.MayReportFor(gw2.ID, child.ID) {
		t.Fatal("reassignment not effective")
	}
	if err := r.DeleteDevice(ctx, gw2.ID); !errors.Is(err, ErrConflict) {
		t.Fatalf("deleting a gateway with children: %v, want ErrConflict", err)
	}
	if _, err := r.RevokeDevice(ctx, gw2.ID); err != nil {
		t.Fatal(err)
	}
	if r.MayReportFor(gw2.ID, child.ID) {
		t.Fatal("revoked gateway may still report")
	}
	if _, _, err := r.CreateDevice(ctx, DeviceSpec{Name: "late", Gateway: gw2.ID}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("assigning to a revoked gateway: %v", err)
	}
}

func TestUpdateDevice(t *testing.T) {
	r := newTestRegistry(t, Config{})
	ctx := context.Background()
	d, _ := mustCreate(t, r, DeviceSpec{Name: "a", Labels: map[string]string{"site": "p1", "model": "m"}})
	name := "b"
	got, err := r.UpdateDevice(ctx, d.ID, DeviceUpdate{Name: &name, Labels: map[string]string{"site": "p2"}})
	if err != nil || got.Name != "b" || fmt.Sprint(got.Labels) != "map[site:p2]" {
		t.Fatalf("update = %+v, %v", got, err)
	}
	if fmt.Sprint(r.Labels(d.ID)) != "[{site p2}]" {
		t.Fatalf("hot-path labels not updated: %v", r.Labels(d.ID))
	}
	if _, err := r.UpdateDevice(ctx, d.ID, DeviceUpdate{Labels: map[string]string{"bad key": "x"}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("invalid labels: %v", err)
	}
	if _, err := r.UpdateDevice(ctx, "missing", DeviceUpdate{Name: &name}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing device: %v", err)
	}
}

func TestListLabelFilterPagination(t *testing.T) {
	r := newTestRegistry(t, Config{})
	var plant3 []telemetry.DeviceID
	for i := range 25 {
		site := "plant-4"
		if i%2 == 0 {
			site = "plant-3"
		}
		d, _ := mustCreate(t, r, DeviceSpec{Name: fmt.Sprint("d", i), Labels: map[string]string{"site": site, "model": fmt.Sprint("m", i%3)}})
		if site == "plant-3" {
			plant3 = append(plant3, d.ID)
		}
	}
	tests := []struct {
		name   string
		labels map[string]string
		limit  int
		want   int
	}{
		{"all", nil, 10, 25},
		{"one label", map[string]string{"site": "plant-3"}, 4, 13},
		{"two labels", map[string]string{"site": "plant-3", "model": "m0"}, 2, 5},
		{"no match", map[string]string{"site": "plant-9"}, 5, 0},
		{"label missing counts as mismatch", map[string]string{"owner": ""}, 5, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var all []telemetry.DeviceID
			after := telemetry.DeviceID("")
			for pages := 0; ; pages++ {
				if pages > 30 {
					t.Fatal("paging does not end")
				}
				page, more := r.ListDevices(ListOptions{Labels: tt.labels, Limit: tt.limit, After: after})
				if len(page) > tt.limit || (more && len(page) != tt.limit) {
					t.Fatalf("page of %d (more=%v) with limit %d", len(page), more, tt.limit)
				}
				for _, d := range page {
					all = append(all, d.ID)
				}
				if !more {
					break
				}
				after = page[len(page)-1].ID
			}
			if len(all) != tt.want {
				t.Fatalf("%d devices, want %d", len(all), tt.want)
			}
			for i := 1; i < len(all); i++ {
				if all[i] <= all[i-1] {
					t.Fatalf("not in id order at %d", i)
				}
			}
		})
	}
	page, _ := r.ListDevices(ListOptions{Labels: map[string]string{"site": "plant-3"}, Limit: 1000})
	for i, d := range page {
		if d.ID != plant3[i] {
			t.Fatalf("plant-3 device %d = %s, want %s (creation order)", i, d.ID, plant3[i])
		}
	}
	// A cursor whose device was deleted still continues after it.
	if err := r.DeleteDevice(context.Background(), plant3[3]); err != nil {
		t.Fatal(err)
	}
	page, _ = r.ListDevices(ListOptions{Labels: map[string]string{"site": "plant-3"}, After: plant3[3], Limit: 1})
	if len(page) != 1 || page[0].ID != plant3[4] {
		t.Fatalf("after a deleted cursor: %v", page)
	}
}

func TestRotationGrace(t *testing.T) {
	r := newTestRegistry(t, Config{RotationGrace: time.Hour})
	ctx := context.Background()
	d, old := mustCreate(t, r, DeviceSpec{Name: "d"})
	var events []Event
	r.Subscribe(func(e Event) { events = append(events, e) })

	_, fresh, err := r.RotateDevice(ctx, d.ID, 10*time.Minute)
	if err != nil || fresh == old || !strings.HasPrefix(fresh, DeviceTokenPrefix) {
		t.Fatalf("rotate: %q %v", fresh, err)
	}
	authOK(t, r, old, d.ID)
	authOK(t, r, fresh, d.ID)
	r.clock.Add(10*time.Minute - time.Nanosecond)
	authOK(t, r, old, d.ID)
	r.clock.Add(time.Nanosecond)
	authFails(t, r, old)
	authOK(t, r, fresh, d.ID)

	// The default grace applies when none is given; a second rotation
	// inside a grace never extends the older token.
	_, third, err := r.RotateDevice(ctx, d.ID, -1)
	if err != nil {
		t.Fatal(err)
	}
	_, fourth, err := r.RotateDevice(ctx, d.ID, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	r.clock.Add(time.Hour)
	authFails(t, r, fresh)
	authOK(t, r, third, d.ID)
	r.clock.Add(time.Hour)
	authFails(t, r, third)
	authOK(t, r, fourth, d.ID)

	// Grace 0: the previous token ends at once.
	_, fifth, err := r.RotateDevice(ctx, d.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	authFails(t, r, fourth)
	authOK(t, r, fifth, d.ID)
	if len(events) != 4 || events[0].Type != DeviceRotated || events[0].Revokes() {
		t.Fatalf("events %+v", events)
	}

	// Expired credentials are pruned from memory and the store.
	if err := r.pruneExpired(ctx); err != nil {
		t.Fatal(err)
	}
	r.mu.RLock()
	n := len(r.creds[string(d.ID)])
	r.mu.RUnlock()
	if n != 1 {
		t.Fatalf("%d credentials after pruning, want 1", n)
	}
}

func TestRevokeAndDelete(t *testing.T) {
	r := newTestRegistry(t, Config{})
	ctx := context.Background()
	d, tok := mustCreate(t, r, DeviceSpec{Name: "d"})
	d2, tok2 := mustCreate(t, r, DeviceSpec{Name: "d2"})
	var mu sync.Mutex
	var revoked []telemetry.DeviceID
	r.Subscribe(func(e Event) {
		if e.Revokes() {
			mu.Lock()
			revoked = append(revoked, e.Device)
			mu.Unlock()
		}
	})
	got, err := r.RevokeDevice(ctx, d.ID)
	if err != nil || !got.Revoked {
		t.Fatalf("revoke: %+v %v", got, err)
	}
	authFails(t, r, tok)
	if r.Active(d.ID) {
		t.Fatal("revoked device still active")
	}
	if _, _, err := r.RotateDevice(ctx, d.ID, 0); !errors.Is(err, ErrConflict) {
		t.Fatalf("rotating a revoked device: %v", err)
	}
	if _, err := r.RevokeDevice(ctx, d.ID); err != nil {
		t.Fatalf("revoking twice: %v", err)
	}
	if err := r.DeleteDevice(ctx, d2.ID); err != nil {
		t.Fatal(err)
	}
	authFails(t, r, tok2)
	if _, err := r.Device(d2.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted device: %v", err)
	}
	if err := r.DeleteDevice(ctx, d2.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleting twice: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(revoked) != fmt.Sprint([]telemetry.DeviceID{d.ID, d.ID, d2.ID}) {
		t.Fatalf("revocation events %v", revoked)
	}
}

func TestViewers(t *testing.T) {
	r := newTestRegistry(t, Config{AdminToken: "admin-token-0123456789"})
	ctx := context.Background()
	v, tok, err := r.CreateViewer(ctx, "plant 3 ops", map[string]string{"site": "plant-3"})
	if err != nil || !strings.HasPrefix(tok, ViewerTokenPrefix) {
		t.Fatalf("create viewer: %v %q", err, tok)
	}
	got, err := r.AuthenticateViewer(ctx, tok)
	if err != nil || got.ID != v.ID || got.Scope["site"] != "plant-3" {
		t.Fatalf("AuthenticateViewer = %+v, %v", got, err)
	}
	admin, err := r.AuthenticateViewer(ctx, "admin-token-0123456789")
	if err != nil || admin.ID != "admin" || len(admin.Scope) != 0 {
		t.Fatalf("admin as viewer = %+v, %v", admin, err)
	}
	if _, _, err := r.CreateViewer(ctx, "x", map[string]string{"site": "a\nb"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad scope: %v", err)
	}
	if _, _, err := r.CreateViewer(ctx, "one device", map[string]string{"device_id": "abc"}); err != nil {
		t.Fatalf("a scope may select device_id: %v", err)
	}
	if _, err := r.RevokeViewer(ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := r.AuthenticateViewer(ctx, tok); !errors.Is(err, telemetry.ErrUnauthorized) {
		t.Fatalf("revoked viewer: %v", err)
	}
	if r.ViewerActive(v.ID) || !r.ViewerActive("admin") {
		t.Fatal("ViewerActive wrong")
	}
	if len(r.Viewers()) != 2 {
		t.Fatalf("viewers %v", r.Viewers())
	}
	if err := r.DeleteViewer(ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Viewer(v.ID); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if r.AuthenticateAdmin("admin-token-012345678") || r.AuthenticateAdmin("") || !r.AuthenticateAdmin("admin-token-0123456789") {
		t.Fatal("AuthenticateAdmin wrong")
	}
	// Viewer logins are not admin failures; the two wrong admin tokens
	// above are.
	if st := r.Stats(); st.AdminAuthFailures != 2 || st.ViewerAuthFailures != 1 {
		t.Fatalf("failures counted %+v", st)
	}
	noAdmin := newTestRegistry(t, Config{})
	if noAdmin.AuthenticateAdmin("") || noAdmin.AdminEnabled() || noAdmin.ViewerActive("admin") {
		t.Fatal("admin without admin token")
	}
}

func TestPersistenceAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "registry.db")
	ctx := context.Background()
	r := openTestRegistry(t, path, Config{})
	gw, gwTok := mustCreate(t, r, DeviceSpec{Name: "gw", Kind: KindGateway, Labels: map[string]string{"site": "p"}})
	child, childOld := mustCreate(t, r, DeviceSpec{Name: "child", Gateway: gw.ID})
	_, childNew, err := r.RotateDevice(ctx, child.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	gone, goneTok := mustCreate(t, r, DeviceSpec{Name: "gone"})
	if _, err := r.RevokeDevice(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	v, vTok, err := r.CreateViewer(ctx, "v", map[string]string{"site": "p"})
	if err != nil {
		t.Fatal(err)
	}
	authOK(t, r, gwTok, gw.ID) // marks it seen
	seenAt := r.clock.Now()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	r2 := openTestRegistry(t, path, Config{})
	defer r2.Close()
	authOK(t, r2, gwTok, gw.ID)
	authOK(t, r2, childOld, child.ID)
	authOK(t, r2, childNew, child.ID)
	authFails(t, r2, goneTok)
	if !r2.MayReportFor(gw.ID, child.ID) || fmt.Sprint(r2.Labels(gw.ID)) != "[{site p}]" {
		t.Fatal("gateway assignment or labels lost")
	}
	got, err := r2.Device(gw.ID)
	if err != nil || !got.LastSeenAt.Equal(seenAt) || !got.CreatedAt.Equal(gw.CreatedAt) || got.Kind != KindGateway {
		t.Fatalf("reloaded gateway %+v (seen at %v), %v", got, seenAt, err)
	}
	if g, _ := r2.Device(gone.ID); !g.Revoked {
		t.Fatal("revocation lost")
	}
	if vv, err := r2.AuthenticateViewer(ctx, vTok); err != nil || vv.ID != v.ID || vv.Scope["site"] != "p" {
		t.Fatalf("viewer after reopen: %+v %v", vv, err)
	}
	r2.clock.Add(time.Hour)
	authFails(t, r2, childOld) // the grace survived the restart, and ends
	authOK(t, r2, childNew, child.ID)
}

func TestMigrations(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	s, err := OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := s.SchemaVersion(ctx); err != nil || v != len(migrations) {
		t.Fatalf("fresh schema version %d, %v", v, err)
	}
	s.Close()

	// Reopening applies nothing again (a re-run CREATE TABLE would fail).
	s, err = OpenSQLite(ctx, path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	s.Close()

	// A later migration is applied once, on top.
	more := append(append([]string(nil), migrations...), `ALTER TABLE devices ADD COLUMN note TEXT NOT NULL DEFAULT ''`)
	s, err = openSQLite(ctx, path, more)
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	if v, _ := s.SchemaVersion(ctx); v != len(more) {
		t.Fatalf("version after upgrade %d", v)
	}
	s.Close()

	// A failing migration leaves the database as it was.
	broken := append(append([]string(nil), more...), `CREATE TABLE ok_table (x INTEGER)`, `THIS IS NOT SQL`)
	if _, err := openSQLite(ctx, path, broken); err == nil || !strings.Contains(err.Error(), fmt.Sprint("migration ", len(broken))) {
		t.Fatalf("broken migration: %v", err)
	}
	s, err = openSQLite(ctx, path, more)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := s.SchemaVersion(ctx); v != len(more) {
		t.Fatalf("version after failed upgrade %d", v)
	}
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE name = 'ok_table'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("partial migration kept: %d %v", n, err)
	}
	s.Close()

	// An older binary refuses a newer schema rather than misreading it.
	if _, err := OpenSQLite(ctx, path); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("downgrade: %v", err)
	}
}

func TestLastSeenFlushedByRun(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	r := openTestRegistry(t, path, Config{LastSeenInterval: 10 * time.Millisecond})
	d, _ := mustCreate(t, r, DeviceSpec{Name: "d"})
	r.clock.Add(time.Minute)
	if !r.Active(d.ID) {
		t.Fatal("not active")
	}
	want := r.clock.Now()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = r.Run(ctx); close(done) }()
	testsupport.Eventually(t, 10*time.Second, "last seen persisted", func() bool {
		st, err := r.store.Load(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return st.Devices[0].LastSeenAt.Equal(want)
	})
	cancel()
	<-done
	r.Close()
}
