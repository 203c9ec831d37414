package main

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/telemetryd/telemetryd/devices"
	"github.com/telemetryd/telemetryd/live"
	"github.com/telemetryd/telemetryd/storage"
	"github.com/telemetryd/telemetryd/telemetry"
	"github.com/telemetryd/telemetryd/web"
)

// Interface guards for the dashboard's adapters.
var (
	_ web.HistoryReader = (*storage.Influx)(nil)
	_ web.DeviceLister  = fleetAdapter{}
)

// webDeps is what the dashboard page and its API are built from.
type webDeps struct {
	dash       *live.Dashboards // authenticates viewers; serves the SSE feed
	hub        *live.Hub        // presence and last-seen of every reporting device
	store      *storage.Influx  // history
	registered func() []devices.Device
	log        *slog.Logger
}

// mountWeb serves the dashboard page (/, /static/), its API
// (/api/v1/history, /api/v1/series, /api/v1/fleet) and the SSE live feed
// (/v1/live/sse). Every endpoint but the page accepts the same viewer
// tokens as /v1/live (Dashboards.Authenticate) and applies the viewer's scope.
func mountWeb(mux *http.ServeMux, d webDeps) {
	page := web.Handler()
	mux.Handle("GET /{$}", page)
	mux.Handle("GET /static/", page)
	mux.Handle("GET /v1/live/sse", d.dash.SSE())
	api := web.NewAPI(web.APIConfig{
		History:      d.store,
		Devices:      fleetAdapter{hub: d.hub, registered: d.registered},
		Authenticate: d.dash.Authenticate,
	}, d.log)
	api.Register(mux)
}

// fleetAdapter lists the registered devices (names, labels) merged with
// what the Hub saw since the start (presence, and devices known only from
// their readings, such as those with static tokens).
type fleetAdapter struct {
	hub        *live.Hub
	registered func() []devices.Device // nil: no registry
}

func (a fleetAdapter) ListDevices(ctx context.Context) ([]web.Device, error) {
	seen := a.hub.Devices(ctx)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	byID := make(map[string]int, len(seen))
	out := make([]web.Device, 0, len(seen))
	for _, s := range seen {
		byID[s.ID] = len(out)
		out = append(out, web.Device{ID: s.ID, Labels: tagMap(s.Tags), Online: s.Online, LastSeen: s.LastSeen})
	}
	if a.registered == nil {
		return out, nil
	}
	for _, r := range a.registered() {
		if r.Revoked {
			continue
		}
		i, ok := byID[string(r.ID)]
		if !ok {
			i = len(out)
			out = append(out, web.Device{ID: string(r.ID)})
		}
		d := &out[i]
		d.Name = r.Name
		// The operator's labels are what a viewer's scope selects on.
		d.Labels = r.Labels
		if r.LastSeenAt.After(d.LastSeen) {
			d.LastSeen = r.LastSeenAt
		}
	}
	return out, nil
}

func tagMap(tags []telemetry.Tag) map[string]string {
	m := make(map[string]string, len(tags))
	for _, t := range tags {
		m[t.Key] = t.Value
	}
	return m
}
