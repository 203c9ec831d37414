package devices

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMosquittoSync: the files are written at start, rewritten after a
// device change, and the broker (here: this process) gets SIGHUP after
// each write, which is the deterministic signal the test waits for.
func TestMosquittoSync(t *testing.T) {
	r := newTestRegistry(t, Config{})
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "mosquitto.pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hup := make(chan os.Signal, 4)
	signal.Notify(hup, syscall.SIGHUP)
	t.Cleanup(func() { signal.Stop(hup) })
	waitHUP := func(what string) {
		t.Helper()
		select {
		case <-hup:
		case <-time.After(10 * time.Second):
			t.Fatalf("no SIGHUP after %s", what)
		}
	}
	cfg := MosquittoSyncConfig{
		PasswordFile: filepath.Join(dir, "passwd"), ACLFile: filepath.Join(dir, "acl"), PIDFile: pidFile,
		Topic: "devices/+/telemetry", Service: MosquittoAccount{Username: "telemetryd", Password: "svc-pass"},
	}
	s, err := NewMosquittoSync(r.Registry, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	waitHUP("the first write")
	acl, _ := os.ReadFile(cfg.ACLFile)
	if !strings.Contains(string(acl), "user telemetryd\n") {
		t.Fatalf("first ACL:\n%s", acl)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	dev, _ := mustCreate(t, r, DeviceSpec{Name: "new"})
	waitHUP("a device change")
	acl, _ = os.ReadFile(cfg.ACLFile)
	if !strings.Contains(string(acl), "user "+string(dev.ID)+"\n") {
		t.Fatalf("ACL after the change lacks %s:\n%s", dev.ID, acl)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestMosquittoSyncFailsAtStart(t *testing.T) {
	r := newTestRegistry(t, Config{})
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	bad := []MosquittoSyncConfig{
		{PasswordFile: filepath.Join(dir, "passwd"), Topic: "devices/+/telemetry"},                                           // no ACL file
		{PasswordFile: filepath.Join(dir, "no", "passwd"), ACLFile: filepath.Join(dir, "acl"), Topic: "devices/+/telemetry"}, // unwritable
		{PasswordFile: filepath.Join(dir, "passwd"), ACLFile: filepath.Join(dir, "acl"), Topic: "devices/#"},                 // bad topic
		{PasswordFile: filepath.Join(dir, "passwd"), ACLFile: filepath.Join(dir, "acl"), Topic: "devices/+/telemetry", PIDFile: filepath.Join(dir, "missing.pid")},
	}
	for i, c := range bad {
		if _, err := NewMosquittoSync(r.Registry, c, log); err == nil {
			t.Errorf("config %d accepted", i)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "one.pid"), []byte("1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := MosquittoSyncConfig{PasswordFile: filepath.Join(dir, "passwd"), ACLFile: filepath.Join(dir, "acl"), Topic: "devices/+/telemetry", PIDFile: filepath.Join(dir, "one.pid")}
	if _, err := NewMosquittoSync(r.Registry, c, log); err == nil || !strings.Contains(err.Error(), "no valid pid") {
		t.Errorf("pid 1: %v", err)
	}
}
