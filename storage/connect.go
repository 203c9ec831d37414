package storage

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/telemetryd/telemetryd/telemetry"
)

// ErrNotConnected is matched by Write's error before Connect succeeded. It
// is transient: a durable caller spools the batch, a plain one retries.
var ErrNotConnected = errors.New("influxdb not connected yet")

// ConnState is where the connection to InfluxDB stands.
type ConnState struct {
	// Connected is true once Connect succeeded; it stays true (a later
	// outage is seen by Write and Ping, not here).
	Connected bool
	// Err is the last failed attempt's error (ErrNotConnected before the
	// first); nil once connected. It matches telemetry.ErrPermanent when
	// retrying will not help (not an InfluxDB, a refused token).
	Err error
	// Since is when the current state began: the first of a run of failed
	// attempts, or the connection.
	Since time.Time
}

// Connect asks the server which InfluxDB it is (Detect) and, on 1.x,
// creates the bucket's database (CREATE DATABASE is idempotent); 2.x
// buckets and 3.x databases are made by their operator or, on 3.x, by the
// first write. One attempt, bounded by ctx and Config.Timeout per request;
// nil at once when already connected. Safe for concurrent use.
func (s *Influx) Connect(ctx context.Context) error {
	s.connectMu.Lock()
	defer s.connectMu.Unlock()
	if s.Connected() {
		return nil
	}
	srv, err := Detect(ctx, s.httpc, s.base, s.cfg.Token)
	if err == nil && srv.Major == 1 {
		err = s.createDatabase(ctx, s.db)
	}
	if err != nil {
		err = fmt.Errorf("storage: open influxdb at %s: %w", s.base.Redacted(), err)
		s.setState(ConnState{Err: err})
		return err
	}
	s.server.Store(&srv)
	s.setState(ConnState{Connected: true})
	close(s.connected)
	s.log.Info("influxdb connected", "url", s.base.Redacted(), "version", srv.Version, "major", srv.Major,
		"org", s.cfg.Org, "bucket", s.cfg.Bucket, "gzip", s.cfg.Gzip, "timeout", s.cfg.Timeout)
	return nil
}

// Connected reports whether Connect has succeeded.
func (s *Influx) Connected() bool {
	select {
	case <-s.connected:
		return true
	default:
		return false
	}
}

// State returns where the connection stands.
func (s *Influx) State() ConnState { return *s.state.Load() }

// setState records st, keeping Since while failures follow failures.
func (s *Influx) setState(st ConnState) {
	st.Since = time.Now()
	if old := s.state.Load(); old != nil && old.Connected == st.Connected && !errors.Is(old.Err, ErrNotConnected) {
		st.Since = old.Since
	}
	s.state.Store(&st)
}

// KeepConnecting calls Connect until it succeeds (nil), ctx ends (nil), or
// an attempt fails for good (that error: retrying changes nothing). It
// waits between attempts with exponential backoff from first up to most.
// It logs state changes only — a failure whose cause differs from the one
// before, the connection — never every attempt, and not the permanent
// failure it returns; the failure already in
// State when it is called is taken as logged by the caller.
func (s *Influx) KeepConnecting(ctx context.Context, first, most time.Duration) error {
	delay := first
	last := ""
	if st := s.State(); st.Err != nil && !errors.Is(st.Err, ErrNotConnected) {
		last = st.Err.Error()
	}
	attempts := 0
	for !s.Connected() {
		err := s.Connect(ctx)
		attempts++
		switch {
		case err == nil:
			s.log.Info("influxdb reachable; storage is up", "attempts", attempts)
			return nil
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, telemetry.ErrPermanent):
			return err // the caller logs it, knowing what follows
		case err.Error() != last:
			s.log.Warn("influxdb still unreachable; retrying in the background", "error", err, "attempts", attempts, "retry_in", delay)
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(delay*2, most)
	}
	return nil
}
