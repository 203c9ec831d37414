package storage

import (
	"context"
	"errors"
	"time"
)

// DrainResult says what Drain replayed.
type DrainResult struct {
	Batches int   // spooled batches written (or dead-lettered line by line)
	Bytes   int64 // their payload bytes
	Retries int   // failed attempts retried with backoff
}

// Drain replays the spool to InfluxDB until it is empty, then returns: the
// one-shot form of Run, for a spool whose instance is gone (the
// spool-replay command). Order, backoff, bisection of refused batches and
// dead letters are Run's. It returns ctx's error when ctx ends first; what
// was not replayed then stays in the spool, and a later Drain carries on
// where this one stopped, since each batch is committed once written.
func (d *Durable) Drain(ctx context.Context) (DrainResult, error) {
	var res DrainResult
	var buf []byte
	delay := d.cfg.RetryMin
	for {
		p, ok, err := d.spool.Peek(buf)
		if err != nil || !ok {
			return res, err
		}
		buf = p
		if err := d.replay(ctx, p); err != nil {
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			res.Retries++
			d.replayErrors.Add(1)
			wait := delay
			var ra interface{ RetryAfterDelay() time.Duration }
			if errors.As(err, &ra) && ra.RetryAfterDelay() > wait {
				wait = ra.RetryAfterDelay()
			}
			d.log.Warn("spool replay: InfluxDB write failed; retrying", "retry_in", wait, "records_left", d.spool.Len(), "error", err)
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return res, ctx.Err()
			}
			delay = min(delay*2, d.cfg.RetryMax)
			continue
		}
		delay = d.cfg.RetryMin
		if err := d.spool.Commit(len(p)); err != nil {
			return res, err
		}
		res.Batches++
		res.Bytes += int64(len(p))
	}
}
