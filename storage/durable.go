package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/telemetryd/telemetryd/telemetry"
)

// LineWriter writes a batch of line protocol; *Influx is one.
type LineWriter interface {
	Write(ctx context.Context, lines []byte) error
}

// DurableConfig tunes a Durable writer. The zero value of each field means its default.
type DurableConfig struct {
	// DirectTimeout bounds a direct write to InfluxDB; a slower (or failed)
	// write goes to the spool instead (default 2s).
	DirectTimeout time.Duration
	// RetryMin and RetryMax bound the drainer's backoff (default 200ms, 10s).
	RetryMin, RetryMax time.Duration
}

// DurableStats are the Durable writer's figures.
type DurableStats struct {
	Spool                         SpoolStats
	Direct, Spooled, DeadLettered uint64
	// DeadLettersDropped: refused lines not recorded, the file being full.
	DeadLettersDropped uint64
	ReplayErrors       uint64
}

// Durable is the bridge's Sink when a spool is configured. Write returns
// nil once a batch is durable: written to InfluxDB, or — when InfluxDB is
// slow, down or answering with a retryable status — appended and fsynced to
// the spool. Run replays the spool to InfluxDB in order, with backoff that
// honours Retry-After, and deletes a segment only after InfluxDB accepted all
// of it. Lines InfluxDB refuses for good during a replay go to the dead
// letters. While the spool holds anything, new batches are appended behind it
// so that the order of writes is kept.
type Durable struct {
	cfg   DurableConfig
	w     LineWriter
	spool *Spool
	dead  *DeadLetters
	log   *slog.Logger

	direct, spooled, replayErrors atomic.Uint64
}

// NewDurable returns a Durable writer; start its drainer with Run.
func NewDurable(w LineWriter, spool *Spool, dead *DeadLetters, cfg DurableConfig, log *slog.Logger) *Durable {
	if cfg.DirectTimeout <= 0 {
		cfg.DirectTimeout = 2 * time.Second
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = 200 * time.Millisecond
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 10 * time.Second
	}
	return &Durable{cfg: cfg, w: w, spool: spool, dead: dead, log: log}
}

// Stats returns the writer's figures.
func (d *Durable) Stats() DurableStats {
	return DurableStats{
		Spool: d.spool.Stats(), Direct: d.direct.Load(), Spooled: d.spooled.Load(),
		DeadLettered: d.dead.Count(), DeadLettersDropped: d.dead.Dropped(), ReplayErrors: d.replayErrors.Load(),
	}
}

// Write makes lines durable. A permanent InfluxDB refusal is returned as is
// (the caller isolates the offending lines); a full spool returns an error
// wrapping telemetry.ErrOverloaded, and nothing of the batch is durable.
func (d *Durable) Write(ctx context.Context, lines []byte) error {
	if d.spool.Len() == 0 {
		wctx, cancel := context.WithTimeout(ctx, d.cfg.DirectTimeout)
		err := d.w.Write(wctx, lines)
		cancel()
		if err == nil {
			d.direct.Add(1)
			return nil
		}
		if isPermanent(err) {
			return err
		}
		d.log.Warn("InfluxDB write failed; spooling to disk", "error", err)
	}
	if err := d.spool.Append(lines); err != nil {
		if errors.Is(err, ErrSpoolFull) {
			return fmt.Errorf("storage: %w: %w", err, telemetry.ErrOverloaded)
		}
		return fmt.Errorf("storage: %w", err)
	}
	d.spooled.Add(1)
	return nil
}

// DeadLetter records a line InfluxDB refused for good.
func (d *Durable) DeadLetter(line []byte, reason string) {
	err := d.dead.Record(line, reason)
	switch {
	case errors.Is(err, ErrDeadLettersFull):
		// Logged on the first drop and every 1000th, not per line.
		if n := d.dead.Dropped(); n == 1 || n%1000 == 0 {
			d.log.Error("dead-letter file full; refused lines are no longer recorded", "dropped", n, "error", err)
		}
	case err != nil:
		d.log.Error("cannot record a dead letter", "error", err)
	}
}

func isPermanent(err error) bool { return errors.Is(err, telemetry.ErrPermanent) }

// Run replays the spool until ctx is done. What is not replayed stays on
// disk for the next start.
func (d *Durable) Run(ctx context.Context) error {
	var buf []byte
	delay := d.cfg.RetryMin
	lastReport := time.Now()
	for {
		p, ok, err := d.spool.Peek(buf)
		if err != nil {
			return err // the spool is unreadable: stop replaying, keep it for the operator
		}
		if !ok {
			select {
			case <-d.spool.Ready():
				continue
			case <-ctx.Done():
				return nil
			}
		}
		buf = p
		if err := d.replay(ctx, p); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			d.replayErrors.Add(1)
			wait := delay
			var ra interface{ RetryAfterDelay() time.Duration }
			if errors.As(err, &ra) && ra.RetryAfterDelay() > wait {
				wait = ra.RetryAfterDelay()
			}
			if time.Since(lastReport) > 10*time.Second {
				st := d.spool.Stats()
				d.log.Warn("spool replay waiting for InfluxDB", "records", st.Records, "bytes", st.Bytes,
					"oldest_age", st.OldestAge.Round(time.Second), "retry_in", wait, "error", err)
				lastReport = time.Now()
			}
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return nil
			}
			delay = min(delay*2, d.cfg.RetryMax)
			continue
		}
		delay = d.cfg.RetryMin
		if err := d.spool.Commit(len(p)); err != nil {
			return err
		}
		if st := d.spool.Stats(); st.Records == 0 || time.Since(lastReport) > 10*time.Second {
			d.log.Info("spool replay progress", "records_left", st.Records, "bytes_left", st.Bytes, "replayed", st.Replayed)
			lastReport = time.Now()
		}
	}
}

// replay writes one spooled batch; lines refused for good are isolated by
// bisection and dead-lettered so that the rest of the batch is stored.
func (d *Durable) replay(ctx context.Context, lines []byte) error {
	err := d.w.Write(ctx, lines)
	if err == nil || !isPermanent(err) {
		return err
	}
	if bytes.Count(lines, []byte{'\n'}) <= 1 {
		d.DeadLetter(lines, err.Error())
		return nil
	}
	half := splitPoint(lines)
	if err := d.replay(ctx, lines[:half]); err != nil {
		return err
	}
	return d.replay(ctx, lines[half:])
}

// splitPoint returns the index just after the newline nearest the middle.
func splitPoint(lines []byte) int {
	mid := len(lines) / 2
	if i := bytes.IndexByte(lines[mid:], '\n'); i >= 0 && mid+i+1 < len(lines) {
		return mid + i + 1
	}
	if i := bytes.LastIndexByte(lines[:mid], '\n'); i >= 0 {
		return i + 1
	}
	return len(lines)
}
