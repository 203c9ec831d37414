package main

// The shared registry end to end: telemetryd instances on one real
// PostgreSQL (devices/pgtest) and one InfluxDB.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/devices"
	"github.com/telemetryd/telemetryd/devices/pgtest"
	"github.com/telemetryd/telemetryd/storage/influxtest"
)

// clusterPropagation is what the cluster promises for a registry change to
// reach every instance.
const clusterPropagation = time.Second

func TestClusterRegistry(t *testing.T) {
	pg := pgtest.Start(t)
	influx := influxtest.Start(t)
	const db = "cluster_registry"
	dir := t.TempDir()
	files := func(name string) []string {
		return []string{"-registry-url", pg.URL(), "-influx-bucket", db + "/autogen", "-auth-max-failures", "-1",
			"-mosquitto-password-file", filepath.Join(dir, name+".passwd"),
			"-mosquitto-acl-file", filepath.Join(dir, name+".acl")}
	}
	a := startService(t, influx, nil, tokensFile(t), files("a")...)
	b := startService(t, influx, nil, tokensFile(t), files("b")...)
	c := startService(t, influx, nil, tokensFile(t), files("c")...)

	// Provisioned through A, connecting through B.
	id, tok := provision(t, a, `{"name":"roamer"}`)
	var dev *wsClient
	eventually(t, clusterPropagation, "the device provisioned on A connects on B", func() bool {
		cl, _, err := dialWS(t, b.ws("/v1/ingest"), bearer(tok))
		if err != nil {
			return false
		}
		dev = cl
		return true
	})
	sendAcked(t, dev, "cluster_revoke", 1)

	// Revoked through C: the socket on B closes with 1008 within the bound,
	// and B stores nothing after. (Unlike on one instance, frames B takes in
	// before it has heard of the revocation — at most the propagation bound
	// after C answered — may be stored.)
	if status, out := adminCall(t, c, "POST", "/api/v1/devices/"+id+"/revoke", ""); status != 200 {
		t.Fatalf("revoke on C: %d %v", status, out)
	}
	select {
	case <-dev.closed:
	case <-time.After(clusterPropagation):
		t.Fatalf("B's socket still open %v after the revocation on C", clusterPropagation)
	}
	if code := dev.closeCode(t); code != 1008 {
		t.Fatalf("close code %d, want 1008", code)
	}
	dialStatus(t, b.ws("/v1/ingest"), bearer(tok), http.StatusUnauthorized, "unauthorized")
	barrier, other := provision(t, b, `{"name":"barrier"}`)
	sendAcked(t, mustDialWS(t, b.ws("/v1/ingest"), bearer(other)), "cluster_revoke_barrier", 1)
	if got := storedSeqs(t, influx, db, "cluster_revoke", id); len(got) != 1 || !got[1] {
		t.Fatalf("stored %v, want only seq 1 (before the revocation)", got)
	}

	// Broker files: exactly one instance writes them, with every change made
	// through any instance; when it stops, another takes over.
	svcs := map[string]*service{"a": a, "b": b, "c": c}
	passwd := func(name string) string {
		raw, _ := os.ReadFile(filepath.Join(dir, name+".passwd"))
		return string(raw)
	}
	writer := func(want string) string {
		t.Helper()
		var w string
		eventually(t, 15*time.Second, "exactly one instance writes the Mosquitto files with "+want, func() bool {
			var with []string
			for name := range svcs {
				if strings.Contains(passwd(name), want+":") {
					with = append(with, name)
				}
			}
			if len(with) > 1 {
				t.Fatalf("instances %v all wrote the Mosquitto files", with)
			}
			if len(with) == 1 {
				w = with[0]
			}
			return w != ""
		})
		return w
	}
	first := writer(barrier)
	svcs[first].stop(t)
	delete(svcs, first)
	var via *service
	for _, s := range svcs {
		via = s
	}
	late, _ := provision(t, via, `{"name":"after-the-writer-left"}`)
	second := writer(late)
	if second == first {
		t.Fatalf("the stopped instance %s still writes", first)
	}
	if strings.Contains(passwd(second), id+":") {
		t.Fatal("the revoked device is in the new writer's password file")
	}
}

// TestRegistryMigrate moves a SQLite registry into PostgreSQL with the
// command and authenticates the same tokens against the PostgreSQL-backed
// registry.
func TestRegistryMigrate(t *testing.T) {
	pg := pgtest.Start(t)
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	path := filepath.Join(t.TempDir(), "registry.db")
	store, err := devices.OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	src, err := devices.Open(ctx, store, devices.Config{}, log)
	if err != nil {
		t.Fatal(err)
	}
	gw, gwTok, err := src.CreateDevice(ctx, devices.DeviceSpec{Name: "gw", Kind: devices.KindGateway, Labels: map[string]string{"site": "north"}})
	if err != nil {
		t.Fatal(err)
	}
	child, childTok, err := src.CreateDevice(ctx, devices.DeviceSpec{Name: "child", Gateway: gw.ID, Labels: map[string]string{"room": "3"}})
	if err != nil {
		t.Fatal(err)
	}
	rot, oldTok, err := src.CreateDevice(ctx, devices.DeviceSpec{Name: "rotated"})
	if err != nil {
		t.Fatal(err)
	}
	_, newTok, err := src.RotateDevice(ctx, rot.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	gone, goneTok, err := src.CreateDevice(ctx, devices.DeviceSpec{Name: "revoked"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.RevokeDevice(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	viewer, viewerTok, err := src.CreateViewer(ctx, "north ops", map[string]string{"site": "north"})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}

	migrate := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := registryMigrateCommand(ctx, args, func(string) (string, bool) { return "", false }, &out, &errOut)
		return out.String() + errOut.String(), err
	}
	if out, err := migrate("-from", filepath.Join(t.TempDir(), "missing.db"), "-to", pg.URL()); err == nil {
		t.Fatalf("a missing source was accepted: %s", out)
	}
	out, err := migrate("-from", path, "-to", pg.URL())
	if err != nil || !strings.Contains(out, "copied 4 devices, 1 viewers, 5 credentials") {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	if strings.Contains(out, "postgres@") && strings.Contains(pg.URL(), ":secret@") {
		t.Fatal("password printed")
	}
	// A re-run finds the same registry and writes nothing.
	if out, err := migrate("-from", path, "-to", pg.URL()); err != nil || !strings.Contains(out, "already present") {
		t.Fatalf("re-run: %v\n%s", err, out)
	}

	pgStore, err := devices.OpenPostgres(ctx, pg.URL(), log)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := devices.Open(ctx, pgStore, devices.Config{}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	for name, tc := range map[string]struct {
		tok  string
		want string
	}{"gateway": {gwTok, string(gw.ID)}, "child": {childTok, string(child.ID)}, "rotated, old in grace": {oldTok, string(rot.ID)}, "rotated, new": {newTok, string(rot.ID)}} {
		if got, err := dst.AuthenticateDevice(ctx, tc.tok); err != nil || string(got) != tc.want {
			t.Errorf("%s: %q, %v", name, got, err)
		}
	}
	if _, err := dst.AuthenticateDevice(ctx, goneTok); err == nil {
		t.Error("the revoked device authenticates after the move")
	}
	if !dst.MayReportFor(gw.ID, child.ID) {
		t.Error("gateway assignment lost")
	}
	if tags := dst.Labels(child.ID); len(tags) != 1 || tags[0].Value != "3" {
		t.Errorf("labels %v", tags)
	}
	if v, err := dst.AuthenticateViewer(ctx, viewerTok); err != nil || v.ID != viewer.ID || v.Scope["site"] != "north" {
		t.Errorf("viewer: %+v, %v", v, err)
	}

	// A different, non-empty target is refused.
	if _, _, err := dst.CreateDevice(ctx, devices.DeviceSpec{Name: "only in postgres"}); err != nil {
		t.Fatal(err)
	}
	if out, err := migrate("-from", path, "-to", pg.URL()); !errors.Is(err, devices.ErrConflict) {
		t.Fatalf("non-empty target: %v\n%s", err, out)
	}
}

// TestClusterRegistryOutage: with PostgreSQL down, known devices keep
// connecting and storing through every instance, provisioning answers 503,
// and both work again once it is back.
func TestClusterRegistryOutage(t *testing.T) {
	pg := pgtest.Start(t)
	influx := influxtest.Start(t)
	const db = "cluster_registry_outage"
	a := startService(t, influx, nil, tokensFile(t), "-registry-url", pg.URL(), "-influx-bucket", db+"/autogen", "-auth-max-failures", "-1")
	b := startService(t, influx, nil, tokensFile(t), "-registry-url", pg.URL(), "-influx-bucket", db+"/autogen", "-auth-max-failures", "-1")
	id, tok := provision(t, a, `{"name":"known"}`)
	eventually(t, clusterPropagation, "the device known on B", func() bool {
		cl, _, err := dialWS(t, b.ws("/v1/ingest"), bearer(tok))
		if err == nil {
			cl.conn.WriteClose(1000, nil)
		}
		return err == nil
	})

	pg.Stop(t)
	for i, svc := range []*service{a, b} {
		sendAcked(t, mustDialWS(t, svc.ws("/v1/ingest"), bearer(tok)), "cluster_outage", i+1)
		status, out := adminCall(t, svc, "POST", "/api/v1/devices", `{"name":"during"}`)
		if code, _ := get(out, "error", "code").(string); status != http.StatusServiceUnavailable || code != devices.APICodeUnavailable {
			t.Fatalf("provisioning while PostgreSQL is down: %d %v", status, out)
		}
	}
	if got := storedSeqs(t, influx, db, "cluster_outage", id); len(got) != 2 {
		t.Fatalf("stored %v during the outage, want seqs 1 and 2", got)
	}

	pg.Start(t)
	var tok2 string
	eventually(t, 30*time.Second, "provisioning on A after PostgreSQL is back", func() bool {
		status, out := adminCall(t, a, "POST", "/api/v1/devices", `{"name":"after"}`)
		tok2, _ = get(out, "token").(string)
		return status == http.StatusCreated
	})
	eventually(t, 10*time.Second, "the device provisioned after the outage connects on B", func() bool {
		cl, _, err := dialWS(t, b.ws("/v1/ingest"), bearer(tok2))
		if err == nil {
			cl.conn.WriteClose(1000, nil)
		}
		return err == nil
	})
}
