package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/telemetryd/telemetryd/ingest"
	"github.com/telemetryd/telemetryd/storage"
	"github.com/telemetryd/telemetryd/telemetry"
)

// readiness answers /readyz, which means "can accept readings and make them
// durable now": 200 when InfluxDB answers ("ok"), or when it does not but
// the disk spool has room ("degraded": readings are acked once fsynced
// there); 503 when neither ("unavailable"), when a configured MQTT broker
// is not connected, and while draining after SIGTERM ("draining", for
// -drain-delay before ingest stops, so that balancers stop sending first).
// The body names each dependency's state (readyState).
type readiness struct {
	store    storeProbe
	spool    spoolGauge // nil: -spool=false
	mqtt     mqttProbe  // nil: MQTT off
	draining atomic.Bool
}

// The readiness inputs, as small as /readyz needs them.
type (
	storeProbe interface {
		State() storage.ConnState
		Ping(ctx context.Context) error
	}
	spoolGauge interface{ Stats() storage.DurableStats }
	mqttProbe  interface{ Connected() bool }
)

// readyPingTimeout bounds /readyz's ping of InfluxDB, below the 1s a
// Kubernetes probe waits by default: a frozen InfluxDB makes /readyz say
// "degraded" quickly rather than time the probe out.
const readyPingTimeout = 500 * time.Millisecond

// newReadiness: durable nil without the spool, mq nil without MQTT.
func newReadiness(store storeProbe, durable *storage.Durable, mq *ingest.MQTT) *readiness {
	r := &readiness{store: store}
	// A nil pointer in an interface would not be nil.
	if durable != nil {
		r.spool = durable
	}
	if mq != nil {
		r.mqtt = mq
	}
	return r
}

// drain turns /readyz to 503 "draining" and waits delay while everything
// still works; the shutdown proper follows.
func (r *readiness) drain(log *slog.Logger, delay time.Duration) {
	r.draining.Store(true)
	if delay > 0 {
		log.Info("draining: /readyz answers 503 so that load balancers stop sending; still serving", "for", delay)
		time.Sleep(delay)
	}
}

func (r *readiness) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	in := readyInput{draining: r.draining.Load(), storage: r.store.State()}
	if in.storage.Connected {
		ctx, cancel := context.WithTimeout(req.Context(), readyPingTimeout)
		in.pingErr = r.store.Ping(ctx)
		cancel()
	}
	if r.spool != nil {
		in.spoolOn, in.spool = true, r.spool.Stats().Spool
	}
	if r.mqtt != nil {
		in.mqttOn, in.mqttUp = true, r.mqtt.Connected()
	}
	code, body := readyState(in)
	writeJSON(w, code, body)
}

// readyInput is what /readyz decides on.
type readyInput struct {
	draining bool
	storage  storage.ConnState
	pingErr  error // only asked when connected
	spoolOn  bool
	spool    storage.SpoolStats
	mqttOn   bool
	mqttUp   bool
}

// readyBody is /readyz's answer. Status is "ok", "degraded" (accepting into
// the spool only), "unavailable" or "draining"; Storage is "ok",
// "unreachable" or "failed" (InfluxDB answered, but can never be written
// to as configured); Checks details each dependency.
type readyBody struct {
	Status  string            `json:"status"`
	Storage string            `json:"storage"`
	Checks  map[string]string `json:"checks"`
}

// spoolRoomMin is the free spool space below which the spool no longer
// counts as room (a batch may not fit), capped at a tenth of a small spool.
const spoolRoomMin = 1 << 20

func readyState(in readyInput) (int, readyBody) {
	b := readyBody{Checks: map[string]string{}}
	switch st := in.storage; {
	case st.Connected && in.pingErr == nil:
		b.Storage, b.Checks["influxdb"] = "ok", "ok"
	case st.Connected:
		b.Storage, b.Checks["influxdb"] = "unreachable", "unreachable: "+in.pingErr.Error()
	case errors.Is(st.Err, telemetry.ErrPermanent):
		b.Storage, b.Checks["influxdb"] = "failed", "failed: "+st.Err.Error()
	default:
		msg := "unreachable"
		if st.Err != nil {
			msg += ": " + st.Err.Error()
		}
		if !st.Since.IsZero() {
			msg += fmt.Sprintf(" (since %s)", st.Since.UTC().Format(time.RFC3339))
		}
		b.Storage, b.Checks["influxdb"] = "unreachable", msg
	}
	room := false
	if in.spoolOn {
		s := in.spool
		room = s.MaxBytes-s.Bytes >= min(spoolRoomMin, s.MaxBytes/10)
		state := "ok"
		if !room {
			state = "full"
		}
		b.Checks["spool"] = fmt.Sprintf("%s: %d records, %d of %d bytes", state, s.Records, s.Bytes, s.MaxBytes)
	} else {
		b.Checks["spool"] = "off"
	}
	mqttOK := true
	if in.mqttOn {
		if mqttOK = in.mqttUp; mqttOK {
			b.Checks["mqtt"] = "ok"
		} else {
			b.Checks["mqtt"] = "down: not connected to the broker"
		}
	}
	switch {
	case in.draining:
		b.Status = "draining"
	case !mqttOK:
		b.Status = "unavailable"
	case b.Storage == "ok":
		b.Status = "ok"
	case room:
		b.Status = "degraded"
	default:
		b.Status = "unavailable"
	}
	if b.Status == "ok" || b.Status == "degraded" {
		return http.StatusOK, b
	}
	return http.StatusServiceUnavailable, b
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
