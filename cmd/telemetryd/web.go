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
	_ web.HistoryReader = historyAdapter{}
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
		History:      historyAdapter{d.store},
		Devices:      fleetAdapter{hub: d.hub, registered: d.registered},
		Authenticate: d.dash.Authenticate,
	}, d.log)
	api.Register(mux)
}

// historyAdapter reads history from storage for the web API.
type historyAdapter struct{ s *storage.Influx }

func (a historyAdapter) History(ctx context.Context, q web.HistoryQuery) (web.History, error) {
	h, err := a.s.History(ctx, storage.HistoryQuery{
		Device: q.Device, Measurement: q.Measurement, Field: q.Field,
		Start: q.Start, Stop: q.Stop, Every: q.Every, Tags: q.Tags,
	})
	if err != nil {
		return web.History{}, err
	}
	out := web.History{Every: h.Every, Aggregate: h.Aggregate, Truncated: h.Truncated, Points: make([]web.Point, len(h.Points))}
	for i, p := range h.Points {
		out.Points[i] = web.Point{Time: p.Time, Value: p.Value}
	}
	return out, nil
}

func (a historyAdapter) Series(ctx context.Context, q web.SeriesQuery) ([]web.SeriesInfo, error) {
	list, err := a.s.Series(ctx, storage.SeriesQuery{Device: q.Device, Start: q.Start, Stop: q.Stop, Tags: q.Tags})
	if err != nil {
		return nil, err
	}
	out := make([]web.SeriesInfo, len(list))
	for i, s := range list {
		out[i] = web.SeriesInfo{Measurement: s.Measurement, Field: s.Field, Last: web.Point{Time: s.Last.Time, Value: s.Last.Value}}
	}
	return out, nil
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
