package storage

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/storage/influxtest"
	"github.com/telemetryd/telemetryd/telemetry"
)

// TestConnectLater: New does not contact InfluxDB; until Connect succeeds
// writes fail with the transient ErrNotConnected (a 1.x database may not
// exist yet); KeepConnecting gets through once InfluxDB is back.
func TestConnectLater(t *testing.T) {
	influx := influxtest.Start(t)
	influx.Kill(t)
	s, err := New(Config{URL: influx.URL(), Bucket: "later/autogen", Timeout: time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if st := s.State(); st.Connected || !errors.Is(st.Err, ErrNotConnected) {
		t.Fatalf("state after New: %+v", st)
	}
	err = s.Write(ctx, []byte("m v=1 1\n"))
	if !errors.Is(err, ErrNotConnected) || errors.Is(err, telemetry.ErrPermanent) {
		t.Fatalf("write before Connect: %v", err)
	}
	if err := s.Connect(ctx); err == nil || errors.Is(err, telemetry.ErrPermanent) {
		t.Fatalf("connect to a killed InfluxDB: %v", err)
	}
	if st := s.State(); st.Connected || st.Err == nil || errors.Is(st.Err, ErrNotConnected) || st.Since.IsZero() {
		t.Fatalf("state after a failed attempt: %+v", st)
	}
	done := make(chan error, 1)
	go func() { done <- s.KeepConnecting(ctx, 50*time.Millisecond, 500*time.Millisecond) }()
	influx.Restart(t)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := s.State(); !st.Connected || st.Err != nil || s.Major() != 1 {
		t.Fatalf("state after KeepConnecting: %+v, major %d", st, s.Major())
	}
	if err := s.Write(ctx, []byte("m v=1 1\n")); err != nil {
		t.Fatalf("write once connected (the database was created): %v", err)
	}
}

// TestKeepConnectingStopsOnAPermanentFailure: a server that answers as no
// InfluxDB does ends KeepConnecting with ErrUnknownServer.
func TestKeepConnectingStopsOnAPermanentFailure(t *testing.T) {
	web := httptest.NewServer(http.NotFoundHandler())
	defer web.Close()
	s, err := New(Config{URL: web.URL, Bucket: "b"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = s.KeepConnecting(ctx, time.Millisecond, time.Millisecond)
	if !errors.Is(err, ErrUnknownServer) || ctx.Err() != nil {
		t.Fatalf("KeepConnecting: %v", err)
	}
	if st := s.State(); st.Connected || !errors.Is(st.Err, telemetry.ErrPermanent) {
		t.Fatalf("state: %+v", st)
	}
}
