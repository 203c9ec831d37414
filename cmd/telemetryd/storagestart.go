package main

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/telemetryd/telemetryd/bridge"
	"github.com/telemetryd/telemetryd/storage"
	"github.com/telemetryd/telemetryd/telemetry"
)

// Starting without InfluxDB. After a site power cut the database often
// comes up last; the service must not wait for it to listen. openStore
// tries InfluxDB once, briefly: an answer that can never become right (not
// an InfluxDB, a refused token) ends the start with that error; no answer
// is logged once and the start goes on. With the spool, readings are
// accepted durably into it meanwhile; without it (-spool=false) nothing can
// be made durable, so devices are not acknowledged (their frames wait, MQTT
// messages stay unacked) and /readyz answers 503 until InfluxDB answers.
// storageJob then keeps connecting in the background, seeds the type guard
// and replays the spool.

// Backoff between background attempts to reach InfluxDB.
const (
	storageRetryFirst = 500 * time.Millisecond
	storageRetryMost  = 10 * time.Second
)

// startupConnectTimeout bounds the one attempt at start, so that a frozen
// InfluxDB (which accepts connections and never answers) delays listening
// by this much at most.
const startupConnectTimeout = 3 * time.Second

// newStorage builds the InfluxDB client from the settings, without
// contacting the server.
func newStorage(cfg config, log *slog.Logger) (*storage.Influx, error) {
	scfg, err := storageConfig(cfg) // deadletters.go: shared with the replay
	if err != nil {
		return nil, err
	}
	return storage.New(scfg, log.With("component", "storage"))
}

// connectAtStart makes the one attempt at start. Only a permanent failure
// is returned.
func connectAtStart(ctx context.Context, store *storage.Influx, cfg config, log *slog.Logger) error {
	cctx, cancel := context.WithTimeout(ctx, min(cfg.InfluxTimeout, startupConnectTimeout))
	defer cancel()
	err := store.Connect(cctx)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, telemetry.ErrPermanent):
		return err // not an InfluxDB, or a refused token: retrying changes nothing
	case cfg.Spool:
		log.Warn("InfluxDB unreachable at start; accepting into the disk spool and connecting in the background",
			"url", cfg.InfluxURL, "error", err)
	default:
		log.Warn("InfluxDB unreachable at start; waiting for it in the background: without the spool (-spool=false) nothing can be made durable, so nothing is acknowledged and /readyz answers 503 until it answers",
			"url", cfg.InfluxURL, "error", err)
	}
	return nil
}

// storageJob seeds the bridge's type guard from InfluxDB now if it answered
// at start, and returns the background job that brings storage up
// otherwise: it keeps connecting, then seeds the guard; then (with the
// spool) it replays the spool until its ctx ends. A permanent failure seen
// only later is logged and ends the job: the spool keeps accepting until
// it is full, /readyz reports the failure.
func storageJob(ctx context.Context, store *storage.Influx, br *bridge.Bridge, durable *storage.Durable, log *slog.Logger) func(context.Context) error {
	seeded := store.Connected()
	if seeded {
		seedFieldTypes(ctx, br, store, log) // before listening, as the first readings may conflict
	}
	return func(ctx context.Context) error {
		if err := store.KeepConnecting(ctx, storageRetryFirst, storageRetryMost); err != nil {
			log.Error("InfluxDB answered, but retrying will not help: not connecting again; what is spooled stays there (until the spool is full) for the next start",
				"error", err, "spool", durable != nil)
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
		if !seeded {
			seedFieldTypes(ctx, br, store, log)
		}
		if durable == nil {
			return nil
		}
		return logged(log, "spool replay stopped", durable.Run)(ctx)
	}
}
