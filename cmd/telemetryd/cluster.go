package main

import (
	"errors"
	"log/slog"

	"github.com/telemetryd/telemetryd/bridge"
	"github.com/telemetryd/telemetryd/live"
	"github.com/telemetryd/telemetryd/live/relay"
)

// Cluster mode's wiring. Without -live-nats-url nothing here runs and the
// service is the single process it always was.

var _ relay.Hub = (*live.Hub)(nil)

// openRelay builds the live relay through NATS (-live-nats-url); nil when
// it is not configured. It connects only when run, and retries for as long
// as NATS is away.
func openRelay(cfg config, hub *live.Hub, log *slog.Logger) (*relay.Relay, error) {
	if cfg.LiveNATSURL == "" {
		return nil, nil
	}
	id := cfg.InstanceID // the host name when not set (resolveInstanceID)
	if id == "" {
		return nil, errors.New("-live-nats-url needs an instance id: no host name to derive it from; set TELEMETRY_INSTANCE_ID")
	}
	return relay.New(relay.Config{URL: cfg.LiveNATSURL, Instance: id, Linger: cfg.LiveNATSLinger}, hub, log.With("component", "relay", "instance", id))
}

// livePublisher is where the bridge hands its readings: the relay, which
// also passes them to the local hub, or the hub itself.
func livePublisher(hub *live.Hub, r *relay.Relay) bridge.Publisher {
	if r != nil {
		return r
	}
	return hub
}
