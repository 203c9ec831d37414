package web

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/telemetryd/telemetryd/telemetry"
)

// HistoryReader reads stored points. Errors matching telemetry.ErrPermanent
// are the caller's fault (400); others are the store's (502/504).
type HistoryReader interface {
	History(ctx context.Context, q telemetry.HistoryQuery) (telemetry.History, error)
	Series(ctx context.Context, q telemetry.SeriesQuery) ([]telemetry.SeriesInfo, error)
}

// Device is one entry of the fleet list.
type Device struct {
	ID   string
	Name string // "" when only the id is known
	// Labels are the device's labels (or, without a registry, the tags of
	// its latest reading).
	Labels   map[string]string
	Online   bool
	LastSeen time.Time // zero: never seen
}

// DeviceLister lists the devices the dashboard shows.
type DeviceLister interface {
	ListDevices(ctx context.Context) ([]Device, error)
}

// APIConfig wires the API. The zero value of a duration means its default.
type APIConfig struct {
	// History answers /api/v1/history; nil makes it 503.
	History HistoryReader
	// Devices answers /api/v1/fleet; nil makes it 503.
	Devices DeviceLister
	// Authenticate returns the viewer making r, or an error (answered 401).
	// A viewer's Scope, when not empty, restricts every answer to devices
	// whose labels carry all of its pairs (telemetry.DeviceIDTag matches the
	// device's id). nil leaves the API open to everyone, unrestricted.
	Authenticate func(r *http.Request) (telemetry.Viewer, error)
	// Timeout bounds one call of History or ListDevices (default 15s).
	Timeout time.Duration
	// DefaultWindow is the history range when "since" is absent (default 15m).
	DefaultWindow time.Duration
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
}

// API serves the dashboard's JSON endpoints.
type API struct {
	cfg APIConfig
	log *slog.Logger
}

// NewAPI returns the API; mount it with Register.
func NewAPI(cfg APIConfig, log *slog.Logger) *API {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 15 * time.Second
	}
	if cfg.DefaultWindow <= 0 {
		cfg.DefaultWindow = 15 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &API{cfg: cfg, log: log}
}

// Register mounts GET /api/v1/history, /api/v1/series and /api/v1/fleet on mux.
func (a *API) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/history", a.serveHistory)
	mux.HandleFunc("GET /api/v1/series", a.serveSeries)
	mux.HandleFunc("GET /api/v1/fleet", a.serveFleet)
}

func (a *API) viewer(w http.ResponseWriter, r *http.Request) (telemetry.Viewer, bool) {
	securityHeaders(w.Header())
	if a.cfg.Authenticate == nil {
		return telemetry.Anonymous(), true
	}
	v, err := a.cfg.Authenticate(r)
	if err != nil {
		telemetry.RefuseUnauthorized(w, "viewer")
		return telemetry.Viewer{}, false
	}
	return v, true
}

// maxHistoryParam bounds each query-string value (names are at most 256).
const maxHistoryParam = 256

func (a *API) serveHistory(w http.ResponseWriter, r *http.Request) {
	v, ok := a.viewer(w, r)
	if !ok {
		return
	}
	if a.cfg.History == nil {
		telemetry.WriteHTTPError(w, http.StatusServiceUnavailable, "unavailable", "history is not configured")
		return
	}
	q, err := a.parseHistory(r)
	if err != nil {
		telemetry.WriteHTTPError(w, http.StatusBadRequest, telemetry.CodeInvalidRequest, err.Error())
		return
	}
	q.Tags = v.Scope
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.Timeout)
	defer cancel()
	h, err := a.cfg.History.History(ctx, q)
	if err != nil {
		a.storeError(w, err, "device", q.Device, "field", q.Field)
		return
	}
	b := make([]byte, 0, 128+len(h.Points)*32)
	b = append(b, `{"device":`...)
	b = telemetry.AppendJSONString(b, q.Device)
	b = append(b, `,"measurement":`...)
	b = telemetry.AppendJSONString(b, q.Measurement)
	b = append(b, `,"field":`...)
	b = telemetry.AppendJSONString(b, q.Field)
	b = append(b, `,"since":`...)
	b = strconv.AppendInt(b, q.Start.UnixNano(), 10)
	b = append(b, `,"until":`...)
	b = strconv.AppendInt(b, q.Stop.UnixNano(), 10)
	b = append(b, `,"every":`...)
	if h.Every > 0 {
		b = telemetry.AppendJSONString(b, h.Every.String())
		b = append(b, `,"aggregate":`...)
		b = telemetry.AppendJSONString(b, h.Aggregate)
	} else {
		b = append(b, `null`...)
	}
	b = append(b, `,"truncated":`...)
	b = strconv.AppendBool(b, h.Truncated)
	b = append(b, `,"points":[`...)
	for i, p := range h.Points {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '[')
		b = strconv.AppendInt(b, p.Time, 10)
		b = append(b, ',')
		b = p.Value.AppendJSON(b)
		b = append(b, ']')
	}
	b = append(b, "]}\n"...)
	writeJSON(w, b)
}

// storeError answers a failed HistoryReader call.
func (a *API) storeError(w http.ResponseWriter, err error, logArgs ...any) {
	switch {
	case errors.Is(err, telemetry.ErrPermanent):
		telemetry.WriteHTTPError(w, http.StatusBadRequest, telemetry.CodeInvalidRequest, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		a.log.Warn("history query timed out", append(logArgs, "error", err)...)
		telemetry.WriteHTTPError(w, http.StatusGatewayTimeout, "timeout", "the history query took too long")
	default:
		a.log.Warn("history query failed", append(logArgs, "error", err)...)
		telemetry.WriteHTTPError(w, http.StatusBadGateway, "history_unavailable", "the history store did not answer")
	}
}

func (a *API) serveSeries(w http.ResponseWriter, r *http.Request) {
	v, ok := a.viewer(w, r)
	if !ok {
		return
	}
	if a.cfg.History == nil {
		telemetry.WriteHTTPError(w, http.StatusServiceUnavailable, "unavailable", "history is not configured")
		return
	}
	vals, err := singleValues(r)
	if err != nil {
		telemetry.WriteHTTPError(w, http.StatusBadRequest, telemetry.CodeInvalidRequest, err.Error())
		return
	}
	q := telemetry.SeriesQuery{Device: vals.Get("device"), Tags: v.Scope}
	if q.Device == "" {
		telemetry.WriteHTTPError(w, http.StatusBadRequest, telemetry.CodeInvalidRequest, "device is required")
		return
	}
	if q.Start, q.Stop, err = a.parseRange(vals); err != nil {
		telemetry.WriteHTTPError(w, http.StatusBadRequest, telemetry.CodeInvalidRequest, err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.Timeout)
	defer cancel()
	list, err := a.cfg.History.Series(ctx, q)
	if err != nil {
		a.storeError(w, err, "device", q.Device)
		return
	}
	b := make([]byte, 0, 64+len(list)*80)
	b = append(b, `{"device":`...)
	b = telemetry.AppendJSONString(b, q.Device)
	b = append(b, `,"series":[`...)
	for i, s := range list {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"measurement":`...)
		b = telemetry.AppendJSONString(b, s.Measurement)
		b = append(b, `,"field":`...)
		b = telemetry.AppendJSONString(b, s.Field)
		b = append(b, `,"last":[`...)
		b = strconv.AppendInt(b, s.Last.Time, 10)
		b = append(b, ',')
		b = s.Last.Value.AppendJSON(b)
		b = append(b, "]}"...)
	}
	b = append(b, "]}\n"...)
	writeJSON(w, b)
}

func writeJSON(w http.ResponseWriter, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(b)
}

// parseHistory reads device, measurement, field, since, until and every.
// Names are checked by the reader (whose rules decide what may reach the
// store); here only their presence and length.
func (a *API) parseHistory(r *http.Request) (telemetry.HistoryQuery, error) {
	vals, err := singleValues(r)
	if err != nil {
		return telemetry.HistoryQuery{}, err
	}
	q := telemetry.HistoryQuery{Device: vals.Get("device"), Measurement: vals.Get("measurement"), Field: vals.Get("field")}
	if q.Device == "" || q.Field == "" {
		return q, errors.New("device and field are required")
	}
	if q.Start, q.Stop, err = a.parseRange(vals); err != nil {
		return q, err
	}
	if s := vals.Get("every"); s != "" && s != "auto" {
		if q.Every, err = time.ParseDuration(s); err != nil || q.Every <= 0 {
			return q, errors.New(`every must be a positive duration such as "10s" or "auto"`)
		}
	}
	return q, nil
}

// singleValues returns r's query, refusing repeated or oversized values.
func singleValues(r *http.Request) (url.Values, error) {
	vals := r.URL.Query()
	for k, v := range vals {
		if len(v) > 1 {
			return nil, errors.New(k + " is given more than once")
		}
		if len(v[0]) > maxHistoryParam {
			return nil, errors.New(k + " is too long")
		}
	}
	return vals, nil
}

// parseRange reads since (default: DefaultWindow ago) and until (default:
// a minute from now, since device clocks slightly ahead of ours are normal).
func (a *API) parseRange(vals url.Values) (start, stop time.Time, err error) {
	now := a.cfg.Now()
	start = now.Add(-a.cfg.DefaultWindow)
	if s := vals.Get("since"); s != "" {
		if start, err = parseTime(s, now); err != nil {
			return start, stop, errors.New("since: " + err.Error())
		}
	}
	stop = now.Add(time.Minute)
	if s := vals.Get("until"); s != "" {
		if stop, err = parseTime(s, now); err != nil {
			return start, stop, errors.New("until: " + err.Error())
		}
	}
	if !start.Before(stop) {
		return start, stop, errors.New("since must be before until")
	}
	return start, stop, nil
}

// parseTime accepts RFC 3339 (with or without fractional seconds), "now",
// and a duration relative to now such as "-15m" or "-1h30m".
func parseTime(s string, now time.Time) (time.Time, error) {
	if s == "now" {
		return now, nil
	}
	if s[0] == '-' || s[0] == '+' {
		d, err := time.ParseDuration(s)
		if err != nil {
			return time.Time{}, errors.New(`want RFC 3339, "now" or a relative duration such as "-15m"`)
		}
		return now.Add(d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, errors.New(`want RFC 3339, "now" or a relative duration such as "-15m"`)
	}
	return t, nil
}

// fleetDevice is the JSON form of a Device.
type fleetDevice struct {
	ID       string            `json:"id"`
	Name     string            `json:"name"`
	Labels   map[string]string `json:"labels"`
	Online   bool              `json:"online"`
	LastSeen int64             `json:"last_seen"` // Unix ns, 0: never
}

func (a *API) serveFleet(w http.ResponseWriter, r *http.Request) {
	v, ok := a.viewer(w, r)
	if !ok {
		return
	}
	if a.cfg.Devices == nil {
		telemetry.WriteHTTPError(w, http.StatusServiceUnavailable, "unavailable", "the device list is not configured")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.Timeout)
	defer cancel()
	list, err := a.cfg.Devices.ListDevices(ctx)
	if err != nil {
		a.log.Warn("listing devices failed", "error", err)
		telemetry.WriteHTTPError(w, http.StatusBadGateway, "unavailable", "the device list is unavailable")
		return
	}
	out := make([]fleetDevice, 0, len(list))
	for _, d := range list {
		if !inScope(d, v.Scope) {
			continue
		}
		fd := fleetDevice{ID: d.ID, Name: d.Name, Labels: d.Labels, Online: d.Online}
		if fd.Name == "" {
			fd.Name = d.ID
		}
		if fd.Labels == nil {
			fd.Labels = map[string]string{}
		}
		if !d.LastSeen.IsZero() {
			fd.LastSeen = d.LastSeen.UnixNano()
		}
		out = append(out, fd)
	}
	slices.SortFunc(out, func(a, b fleetDevice) int { return strings.Compare(a.ID, b.ID) })
	b, err := json.Marshal(map[string]any{"devices": out, "now": a.cfg.Now().UnixNano()})
	if err != nil {
		telemetry.WriteHTTPError(w, http.StatusInternalServerError, "internal", "encoding failed")
		return
	}
	writeJSON(w, append(b, '\n'))
}

// inScope reports whether a viewer restricted to scope may see d.
func inScope(d Device, scope map[string]string) bool {
	for _, k := range slices.Sorted(maps.Keys(scope)) {
		if k == telemetry.DeviceIDTag {
			if d.ID != scope[k] {
				return false
			}
			continue
		}
		if v, ok := d.Labels[k]; !ok || v != scope[k] {
			return false
		}
	}
	return true
}
