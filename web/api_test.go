package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/telemetry"
)

var now = time.Date(2025, 11, 22, 12, 0, 0, 0, time.UTC)

type fakeHistory struct {
	got    telemetry.HistoryQuery
	gotSer telemetry.SeriesQuery
	h      telemetry.History
	series []telemetry.SeriesInfo
	err    error
}

func (f *fakeHistory) History(_ context.Context, q telemetry.HistoryQuery) (telemetry.History, error) {
	f.got = q
	return f.h, f.err
}

func (f *fakeHistory) Series(_ context.Context, q telemetry.SeriesQuery) ([]telemetry.SeriesInfo, error) {
	f.gotSer = q
	return f.series, f.err
}

type fakeFleet []Device

func (f fakeFleet) ListDevices(context.Context) ([]Device, error) { return f, nil }

// tokens: "all" is unrestricted, "p4" sees site=p4 only, "one" sees device d1 only.
func authenticate(r *http.Request) (telemetry.Viewer, error) {
	tok := r.URL.Query().Get("token")
	if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") {
		tok = strings.TrimPrefix(h, "Bearer ")
	}
	switch tok {
	case "all":
		return telemetry.Viewer{Name: "all"}, nil
	case "p4":
		return telemetry.Viewer{Name: "p4", Scope: map[string]string{"site": "p4"}}, nil
	case "one":
		return telemetry.Viewer{Name: "one", Scope: map[string]string{"device_id": "d1"}}, nil
	}
	return telemetry.Viewer{}, errors.New("unknown token")
}

func newTestAPI(h HistoryReader, d DeviceLister, auth bool) http.Handler {
	cfg := APIConfig{History: h, Devices: d, Now: func() time.Time { return now }}
	if auth {
		cfg.Authenticate = authenticate
	}
	mux := http.NewServeMux()
	NewAPI(cfg, nil).Register(mux)
	return mux
}

func apiErrorCode(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	var body struct {
		Error struct{ Code string } `json:"error"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("error body %q: %v", rec.Body, err)
	}
	return body.Error.Code
}

func TestHistoryEndpoint(t *testing.T) {
	fh := &fakeHistory{h: telemetry.History{Every: 5 * time.Second, Aggregate: "mean", Points: []telemetry.HistoryPoint{
		{Time: 1, Value: telemetry.Float(1.5)}, {Time: 2, Value: telemetry.Int(-3)},
		{Time: 3, Value: telemetry.Bool(true)}, {Time: 4, Value: telemetry.String("a\"</script>")},
	}}}
	api := newTestAPI(fh, fakeFleet{}, false)
	rec := get(t, api, "/api/v1/history?device=d1&measurement=env&field=temp&since=-1h&until=now&every=5s", nil)
	if rec.Code != http.StatusOK {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	want := telemetry.HistoryQuery{Device: "d1", Measurement: "env", Field: "temp", Start: now.Add(-time.Hour), Stop: now, Every: 5 * time.Second}
	if fmt.Sprint(fh.got) != fmt.Sprint(want) {
		t.Fatalf("query %+v\nwant  %+v", fh.got, want)
	}
	var body struct {
		Device, Measurement, Field string
		Since, Until               int64
		Every, Aggregate           string
		Truncated                  bool
		Points                     [][]any
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("%s: %v", rec.Body, err)
	}
	if body.Device != "d1" || body.Field != "temp" || body.Every != "5s" || body.Aggregate != "mean" || body.Since != now.Add(-time.Hour).UnixNano() ||
		fmt.Sprint(body.Points) != `[[1 1.5] [2 -3] [3 true] [4 a"</script>]]` {
		t.Fatalf("body %s", rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}

	// Defaults: the last 15 minutes up to a minute ahead, automatic window.
	fh.h = telemetry.History{}
	rec = get(t, api, "/api/v1/history?device=d1&field=temp", nil)
	if rec.Code != http.StatusOK || !fh.got.Start.Equal(now.Add(-15*time.Minute)) || !fh.got.Stop.Equal(now.Add(time.Minute)) || fh.got.Every != 0 ||
		!strings.Contains(rec.Body.String(), `"every":null,"truncated":false,"points":[]`) {
		t.Fatalf("defaults: %+v %s", fh.got, rec.Body)
	}
	rec = get(t, api, "/api/v1/history?device=d1&field=temp&since=2025-11-22T11:00:00.5Z&until=2025-11-22T11:30:00Z&every=auto", nil)
	if rec.Code != http.StatusOK || !fh.got.Start.Equal(time.Date(2025, 11, 22, 11, 0, 0, 5e8, time.UTC)) || fh.got.Every != 0 {
		t.Fatalf("RFC 3339: %+v %s", fh.got, rec.Body)
	}
}

func TestHistoryEndpointRejects(t *testing.T) {
	fh := &fakeHistory{}
	api := newTestAPI(fh, fakeFleet{}, false)
	for _, q := range []string{
		"field=temp",
		"device=d1",
		"device=d1&field=temp&since=yesterday",
		"device=d1&field=temp&since=15m",
		"device=d1&field=temp&until=-1h&since=-10m",
		"device=d1&field=temp&every=-5s",
		"device=d1&field=temp&every=0",
		"device=d1&field=temp&every=fast",
		"device=d1&device=d2&field=temp",
		"device=" + strings.Repeat("d", 300) + "&field=temp",
	} {
		fh.got = telemetry.HistoryQuery{}
		rec := get(t, api, "/api/v1/history?"+q, nil)
		if rec.Code != http.StatusBadRequest || apiErrorCode(t, rec) != "invalid_request" {
			t.Errorf("%s: %d %s", q, rec.Code, rec.Body)
		}
		if fh.got.Device != "" {
			t.Errorf("%s reached the reader", q)
		}
	}
	// The reader's own validation (storage's allow-list) answers 400 too.
	fh.err = fmt.Errorf("bad name: %w", telemetry.ErrPermanent)
	if rec := get(t, api, `/api/v1/history?device=d%22)&field=temp`, nil); rec.Code != http.StatusBadRequest {
		t.Errorf("permanent error: %d", rec.Code)
	}
	fh.err = context.DeadlineExceeded
	if rec := get(t, api, "/api/v1/history?device=d1&field=temp", nil); rec.Code != http.StatusGatewayTimeout || apiErrorCode(t, rec) != "timeout" {
		t.Errorf("timeout: %d", rec.Code)
	}
	fh.err = errors.New("connection refused")
	rec := get(t, api, "/api/v1/history?device=d1&field=temp", nil)
	if rec.Code != http.StatusBadGateway || strings.Contains(rec.Body.String(), "refused") {
		t.Errorf("store down: %d %s", rec.Code, rec.Body)
	}
	if rec := get(t, newTestAPI(nil, nil, false), "/api/v1/history?device=d1&field=temp", nil); rec.Code != http.StatusServiceUnavailable {
		t.Errorf("no reader: %d", rec.Code)
	}
}

func TestAPIAuthAndScope(t *testing.T) {
	fh := &fakeHistory{}
	fleet := fakeFleet{
		{ID: "d1", Name: "Boiler", Labels: map[string]string{"site": "p3"}, Online: true, LastSeen: now.Add(-time.Second)},
		{ID: "d2", Labels: map[string]string{"site": "p4"}},
		{ID: "d3"},
	}
	api := newTestAPI(fh, fleet, true)
	for _, p := range []string{"/api/v1/history?device=d1&field=t", "/api/v1/fleet", "/api/v1/series?device=d1"} {
		for _, tok := range []string{"", "?token=nope"} {
			url := p + strings.Replace(tok, "?", map[bool]string{true: "&", false: "?"}[strings.Contains(p, "?")], 1)
			rec := get(t, api, url, nil)
			if rec.Code != http.StatusUnauthorized || apiErrorCode(t, rec) != "unauthorized" || rec.Header().Get("WWW-Authenticate") == "" {
				t.Errorf("%s: %d", url, rec.Code)
			}
		}
	}

	// The viewer's scope becomes the reader's tag filter.
	rec := get(t, api, "/api/v1/history?device=d1&field=t", http.Header{"Authorization": {"Bearer p4"}})
	if rec.Code != http.StatusOK || !maps.Equal(fh.got.Tags, map[string]string{"site": "p4"}) {
		t.Fatalf("history scope: %d %+v", rec.Code, fh.got)
	}
	rec = get(t, api, "/api/v1/series?device=d1&token=one", nil)
	if rec.Code != http.StatusOK || !maps.Equal(fh.gotSer.Tags, map[string]string{"device_id": "d1"}) {
		t.Fatalf("series scope: %d %+v", rec.Code, fh.gotSer)
	}
	rec = get(t, api, "/api/v1/history?device=d1&field=t&token=all", nil)
	if rec.Code != http.StatusOK || fh.got.Tags != nil {
		t.Fatalf("unrestricted: %d %+v", rec.Code, fh.got)
	}

	fleetIDs := func(tok string) string {
		rec := get(t, api, "/api/v1/fleet", http.Header{"Authorization": {"Bearer " + tok}})
		if rec.Code != http.StatusOK {
			t.Fatalf("fleet: %d", rec.Code)
		}
		var body struct {
			Devices []struct {
				ID, Name string
				Labels   map[string]string
				Online   bool
				LastSeen int64 `json:"last_seen"`
			}
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, d := range body.Devices {
			ids = append(ids, fmt.Sprintf("%s:%s:%v:%d:%v", d.ID, d.Name, d.Online, d.LastSeen, d.Labels))
		}
		return strings.Join(ids, " ")
	}
	last := now.Add(-time.Second).UnixNano()
	if got, want := fleetIDs("all"), fmt.Sprintf("d1:Boiler:true:%d:map[site:p3] d2:d2:false:0:map[site:p4] d3:d3:false:0:map[]", last); got != want {
		t.Errorf("fleet for all:\n%s\nwant\n%s", got, want)
	}
	if got := fleetIDs("p4"); got != "d2:d2:false:0:map[site:p4]" {
		t.Errorf("fleet for p4: %s", got)
	}
	if got := fleetIDs("one"); !strings.HasPrefix(got, "d1:") || strings.Contains(got, "d2") {
		t.Errorf("fleet for one: %s", got)
	}
}

func TestSeriesEndpoint(t *testing.T) {
	fh := &fakeHistory{series: []telemetry.SeriesInfo{
		{Measurement: "env", Field: "temp", Last: telemetry.HistoryPoint{Time: 7, Value: telemetry.Float(21.5)}},
		{Measurement: "env", Field: "door", Last: telemetry.HistoryPoint{Time: 8, Value: telemetry.Bool(false)}},
	}}
	api := newTestAPI(fh, nil, false)
	rec := get(t, api, "/api/v1/series?device=d1&since=-1h", nil)
	want := `{"device":"d1","series":[{"measurement":"env","field":"temp","last":[7,21.5]},{"measurement":"env","field":"door","last":[8,false]}]}`
	if rec.Code != http.StatusOK || strings.TrimSpace(rec.Body.String()) != want || !fh.gotSer.Start.Equal(now.Add(-time.Hour)) {
		t.Fatalf("%d %s %+v", rec.Code, rec.Body, fh.gotSer)
	}
	if rec := get(t, api, "/api/v1/series", nil); rec.Code != http.StatusBadRequest {
		t.Fatalf("no device: %d", rec.Code)
	}
	if rec := get(t, newTestAPI(fh, nil, false), "/api/v1/fleet", nil); rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("no lister: %d", rec.Code)
	}
}
