package storage_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/storage"
	"github.com/telemetryd/telemetryd/storage/influxtest"
	"github.com/telemetryd/telemetryd/telemetry"
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func openInflux(t *testing.T, url, bucket string, timeout time.Duration) *storage.Influx {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := storage.Open(ctx, storage.Config{URL: url, Bucket: bucket, Timeout: timeout}, testLogger(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

func write(t *testing.T, s *storage.Influx, lines string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.Write(ctx, []byte(lines))
}

func mustWrite(t *testing.T, s *storage.Influx, lines string) {
	t.Helper()
	if err := write(t, s, lines); err != nil {
		t.Fatalf("Write: %v", err)
	}
}

func asWriteError(t *testing.T, err error) *storage.WriteError {
	t.Helper()
	var we *storage.WriteError
	if !errors.As(err, &we) {
		t.Fatalf("error %v (%T) is not a *storage.WriteError", err, err)
	}
	return we
}

func num(t *testing.T, v any) json.Number {
	t.Helper()
	n, ok := v.(json.Number)
	if !ok {
		t.Fatalf("%v (%T) is not a json.Number", v, v)
	}
	return n
}

// TestSharedServer runs the tests that need a healthy server against one
// influxd (each in its own database): starting influxd costs seconds.
func TestSharedServer(t *testing.T) {
	t.Parallel()
	srv := influxtest.Start(t)
	t.Run("OpenCreatesDatabase", func(t *testing.T) { testOpenCreatesDatabase(t, srv) })
	t.Run("WriteValueKinds", func(t *testing.T) { testWriteValueKinds(t, srv) })
	t.Run("WritePermanentErrors", func(t *testing.T) { testWritePermanentErrors(t, srv) })
}

func testOpenCreatesDatabase(t *testing.T, srv *influxtest.Server) {
	s := openInflux(t, srv.URL(), "opendb/autogen", 5*time.Second)
	if s.Version() == "" {
		t.Errorf("Version() is empty after Open")
	}
	t.Logf("server version %q", s.Version())

	var dbs []string
	for _, ser := range srv.Query(t, "", "SHOW DATABASES") {
		for _, row := range ser.Values {
			dbs = append(dbs, row[0].(string))
		}
	}
	if !slices.Contains(dbs, "opendb") {
		t.Fatalf("SHOW DATABASES = %v, want it to contain opendb", dbs)
	}

	// Opening again is fine (CREATE DATABASE is idempotent), as is a bucket
	// without retention policy.
	s2 := openInflux(t, srv.URL(), "opendb", 5*time.Second)
	mustWrite(t, s2, "m,device_id=a v=1 1")
	if n := srv.CountPoints(t, "opendb", "m", "v"); n != 1 {
		t.Fatalf("CountPoints = %d, want 1", n)
	}
}

func TestOpenUnreachable(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String()
	l.Close() // nothing listens there any more
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	s, err := storage.Open(ctx, storage.Config{URL: url, Bucket: "iot"}, nil)
	if err == nil {
		s.Close()
		t.Fatal("Open succeeded against a dead server")
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("Open took %v; it must make one attempt only", time.Since(start))
	}
	t.Logf("Open error: %v", err)
}

func testWriteValueKinds(t *testing.T, srv *influxtest.Server) {
	s := openInflux(t, srv.URL(), "kinds/autogen", 5*time.Second)

	const t0 = int64(1700000000000000000)
	lines := strings.Join([]string{
		`climate,device_id=dev-1,room=kitchen temp=21.4,count=5i,door=true,note="say \"hi\" C:\\dir\\" 1700000000000000000`,
		"climate,device_id=dev-2,room=hall\\ way temp=-3.5,count=-7i,door=false,note=\"line1\nline2\" 1700000000000000001",
		`climate,device_id=dev-2 temp=1e3,count=0i,door=F,note="esc\n" 1700000000000000002`,
	}, "\n") + "\n"
	mustWrite(t, s, lines)

	// Field types.
	types := map[string]string{}
	for _, ser := range srv.Query(t, "kinds", `SHOW FIELD KEYS FROM "climate"`) {
		for _, row := range ser.Values {
			types[row[0].(string)] = row[1].(string)
		}
	}
	want := map[string]string{"temp": "float", "count": "integer", "door": "boolean", "note": "string"}
	for k, v := range want {
		if types[k] != v {
			t.Errorf("field %s has type %q, want %q (all: %v)", k, types[k], v, types)
		}
	}

	// Values, tags, timestamps.
	series := srv.Query(t, "kinds", `SELECT "temp", "count", "door", "note", "device_id", "room" FROM "climate" ORDER BY time`)
	if len(series) != 1 || len(series[0].Values) != 3 {
		t.Fatalf("got series %+v, want one series of 3 rows", series)
	}
	cols := series[0].Columns
	idx := func(name string) int {
		i := slices.Index(cols, name)
		if i < 0 {
			t.Fatalf("column %s missing from %v", name, cols)
		}
		return i
	}
	rows := series[0].Values
	type row struct {
		time   int64
		temp   float64
		count  int64
		door   bool
		note   string
		device string
		room   any
	}
	wantRows := []row{
		{t0, 21.4, 5, true, `say "hi" C:\dir\`, "dev-1", "kitchen"},
		{t0 + 1, -3.5, -7, false, "line1\nline2", "dev-2", "hall way"},
		// 1.8 does not unescape \n in string fields: it stores a backslash and an n.
		{t0 + 2, 1000, 0, false, `esc\n`, "dev-2", nil},
	}
	for i, w := range wantRows {
		r := rows[i]
		if got, _ := num(t, r[idx("time")]).Int64(); got != w.time {
			t.Errorf("row %d: time %d, want %d", i, got, w.time)
		}
		if got, _ := num(t, r[idx("temp")]).Float64(); got != w.temp {
			t.Errorf("row %d: temp %v, want %v", i, got, w.temp)
		}
		if got, err := num(t, r[idx("count")]).Int64(); err != nil || got != w.count {
			t.Errorf("row %d: count %v (%v), want %d", i, got, err, w.count)
		}
		if got, ok := r[idx("door")].(bool); !ok || got != w.door {
			t.Errorf("row %d: door %v (%T), want %v", i, r[idx("door")], r[idx("door")], w.door)
		}
		if got := r[idx("note")]; got != w.note {
			t.Errorf("row %d: note %q, want %q", i, got, w.note)
		}
		if got := r[idx("device_id")]; got != w.device {
			t.Errorf("row %d: device_id %v, want %v", i, got, w.device)
		}
		if got := r[idx("room")]; got != w.room {
			t.Errorf("row %d: room %v, want %v", i, got, w.room)
		}
	}

	// Tag keys are tags, not fields.
	var tagKeys []string
	for _, ser := range srv.Query(t, "kinds", `SHOW TAG KEYS FROM "climate"`) {
		for _, r := range ser.Values {
			tagKeys = append(tagKeys, r[0].(string))
		}
	}
	if !slices.Equal(tagKeys, []string{"device_id", "room"}) {
		t.Errorf("tag keys %v, want [device_id room]", tagKeys)
	}

	// Rewriting the same points overwrites them (idempotent redelivery).
	mustWrite(t, s, lines)
	if n := srv.CountPoints(t, "kinds", "climate", "temp"); n != 3 {
		t.Errorf("after rewrite CountPoints = %d, want 3", n)
	}
}

func testWritePermanentErrors(t *testing.T, srv *influxtest.Server) {
	s := openInflux(t, srv.URL(), "perm/autogen", 5*time.Second)
	mustWrite(t, s, "m,device_id=a v=1 1")

	check := func(t *testing.T, err error, status int, contains ...string) *storage.WriteError {
		t.Helper()
		if err == nil {
			t.Fatal("Write succeeded, want an error")
		}
		we := asWriteError(t, err)
		if we.Status != status {
			t.Errorf("Status %d, want %d (%v)", we.Status, status, err)
		}
		if !errors.Is(err, telemetry.ErrPermanent) {
			t.Errorf("errors.Is(%v, ErrPermanent) = false, want true", err)
		}
		for _, c := range contains {
			if !strings.Contains(we.Message, c) {
				t.Errorf("Message %q does not contain %q", we.Message, c)
			}
		}
		t.Logf("error: %v", err)
		return we
	}

	t.Run("field type conflict", func(t *testing.T) {
		err := write(t, s, "m,device_id=a v=\"x\" 2\nm,device_id=a v=3 3")
		check(t, err, 400, "partial write", "field type conflict", "dropped=1")
		// The good line was stored.
		if n := srv.CountPoints(t, "perm", "m", "v"); n != 2 {
			t.Errorf("CountPoints = %d, want 2 (the good line of a partial write is kept)", n)
		}
	})
	t.Run("unparseable line", func(t *testing.T) {
		err := write(t, s, "m,device_id=a v=4 4\nthis is not line protocol\nm,device_id=a v=5 5")
		check(t, err, 400, "partial write", "unable to parse")
		if n := srv.CountPoints(t, "perm", "m", "v"); n != 4 {
			t.Errorf("CountPoints = %d, want 4", n)
		}
	})
	t.Run("conflict inside one batch", func(t *testing.T) {
		// A new field given two types in one batch rejects the whole batch.
		err := write(t, s, "n,device_id=a v=1 1\nn,device_id=a v=\"x\" 2\nn,device_id=b w=1 3")
		check(t, err, 400, "field type conflict")
		if n := srv.Count(t, "perm", `SELECT COUNT(*) FROM "n"`); n != 0 {
			t.Errorf("count = %d, want 0", n)
		}
	})
	t.Run("database dropped", func(t *testing.T) {
		srv.Query(t, "", "DROP DATABASE perm")
		err := write(t, s, "m,device_id=a v=6 6")
		check(t, err, 404, "database not found")
	})
}

func TestWriteServerKilledAndRestarted(t *testing.T) {
	t.Parallel()
	srv := influxtest.Start(t)
	s := openInflux(t, srv.URL(), "iot/autogen", 2*time.Second)
	mustWrite(t, s, "m,device_id=a v=1 1")

	srv.Kill(t)
	err := write(t, s, "m,device_id=a v=2 2")
	if err == nil {
		t.Fatal("Write to a killed server succeeded")
	}
	we := asWriteError(t, err)
	if we.Status != 0 || errors.Is(err, telemetry.ErrPermanent) {
		t.Fatalf("Write to a killed server: %v (status %d); want a transient network error", err, we.Status)
	}
	t.Logf("write error: %v", err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err = s.Ping(ctx)
	cancel()
	if err == nil {
		t.Fatal("Ping succeeded against a killed server")
	}
	t.Logf("ping error: %v", err)

	srv.Restart(t)
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping after restart: %v", err)
	}
	if err := write(t, s, "m,device_id=a v=3 3"); err != nil {
		t.Fatalf("Write after restart: %v", err)
	}
	// The point written before the kill survived (WAL).
	if n := srv.CountPoints(t, "iot", "m", "v"); n != 2 {
		t.Fatalf("CountPoints = %d, want 2", n)
	}
}

func TestWriteFrozenServerTimesOut(t *testing.T) {
	t.Parallel()
	srv := influxtest.Start(t)
	// Only the writes against the frozen server use the short timeout, so a
	// loaded machine cannot make the others fail.
	slow := openInflux(t, srv.URL(), "iot/autogen", 10*time.Second)
	s := openInflux(t, srv.URL(), "iot/autogen", 300*time.Millisecond)
	mustWrite(t, slow, "m,device_id=a v=1 1")

	srv.Freeze(t)
	thawed := false
	defer func() {
		if !thawed {
			srv.Thaw(t)
		}
	}()

	start := time.Now()
	err := write(t, s, "m,device_id=a v=2 2")
	elapsed := time.Since(start)
	if err == nil {
		t.Fatal("Write to a frozen server succeeded")
	}
	t.Logf("after %v: %v", elapsed, err)
	we := asWriteError(t, err)
	if we.Status != 0 || errors.Is(err, telemetry.ErrPermanent) {
		t.Errorf("got status %d permanent=%v, want a transient network error", we.Status, errors.Is(err, telemetry.ErrPermanent))
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("errors.Is(err, context.DeadlineExceeded) = false for %v", err)
	}
	if elapsed > 3*time.Second {
		t.Errorf("Write took %v with a 300ms timeout", elapsed)
	}

	// The caller's context is honoured too, and reported as such.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	err = slow.Write(ctx, []byte("m,device_id=a v=3 3"))
	if !errors.Is(err, context.Canceled) || errors.Is(err, telemetry.ErrPermanent) {
		t.Errorf("Write with a cancelled context: %v; want transient and context.Canceled", err)
	}

	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Ping(ctx); err == nil {
		t.Error("Ping succeeded against a frozen server")
	}

	srv.Thaw(t)
	thawed = true
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := write(t, slow, "m,device_id=a v=4 4")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Write after thaw: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
