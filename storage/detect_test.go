package storage_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/storage"
	"github.com/telemetryd/telemetryd/telemetry"
)

// recorded is one server's answer to one path.
type recorded struct {
	status int
	header map[string]string
	body   string
}

// The answers below are those each version sends, from:
//
//   - InfluxDB 1.8.10: services/httpd/handler.go (servePing: 204, headers
//     X-Influxdb-Build "OSS" and X-Influxdb-Version; serveHealth: the JSON
//     below) in github.com/influxdata/influxdb@v1.8.10, and
//     https://docs.influxdata.com/influxdb/v1/api/system-information/.
//     `go install`ed influxd 1.8.10 (this repository's test server) reports
//     its default version "unknown" in both.
//   - InfluxDB 2.7.11: https://docs.influxdata.com/influxdb/v2/api/ping/
//     (204, "Headers contain InfluxDB version information":
//     X-Influxdb-Build "OSS", X-Influxdb-Version "v2.7.11") and
//     https://docs.influxdata.com/influxdb/v2/api/health/ (name, message,
//     status, checks, version, commit).
//   - InfluxDB 3 Core 3.0.1:
//     https://docs.influxdata.com/influxdb3/core/api/server-information/
//     (/health answers "OK" without a version; "Use /ping to retrieve
//     version details") and
//     https://docs.influxdata.com/influxdb3/enterprise/admin/identify-version
//     (/ping: 200, headers x-influxdb-version and x-influxdb-build, JSON body
//     with version, revision and process_id).
var (
	v18 = map[string]recorded{
		"/ping": {204, map[string]string{"X-Influxdb-Build": "OSS", "X-Influxdb-Version": "1.8.10", "Request-Id": "c1b0b4c0-0000-11ef-8000-000000000000"}, ""},
		"/health": {200, map[string]string{"Content-Type": "application/json", "X-Influxdb-Version": "1.8.10"},
			`{"checks":[],"message":"ready for queries and writes","name":"influxdb","status":"pass","version":"1.8.10"}`},
	}
	v18Unstamped = map[string]recorded{
		"/ping": {204, map[string]string{"X-Influxdb-Build": "OSS", "X-Influxdb-Version": "unknown"}, ""},
		"/health": {200, map[string]string{"Content-Type": "application/json"},
			`{"checks":[],"message":"ready for queries and writes","name":"influxdb","status":"pass","version":"unknown"}`},
	}
	v27 = map[string]recorded{
		"/ping": {204, map[string]string{"X-Influxdb-Build": "OSS", "X-Influxdb-Version": "v2.7.11"}, ""},
		"/health": {200, map[string]string{"Content-Type": "application/json; charset=utf-8"},
			`{"name":"influxdb","message":"ready for queries and writes","status":"pass","checks":[],"version":"v2.7.11","commit":"fbf5d4ab5e"}`},
	}
	v3Core = map[string]recorded{
		"/ping": {200, map[string]string{"Content-Type": "application/json", "X-Influxdb-Build": "Core", "X-Influxdb-Version": "3.0.1"},
			`{"version":"3.0.1","revision":"d7c071e0c4","process_id":"c2a9e3c1-2b7f-4a3e-9d0e-0c6f6f1d9a11"}`},
		"/health": {200, map[string]string{"Content-Type": "text/plain"}, "OK"},
	}
	// A 2.x behind a proxy that strips the header: /health still says.
	v27NoHeader = map[string]recorded{
		"/ping":   {204, nil, ""},
		"/health": v27["/health"],
	}
	// A web server that is no InfluxDB.
	notInflux = map[string]recorded{
		"/ping":   {404, map[string]string{"Content-Type": "text/html"}, "<html><body>404 Not Found</body></html>"},
		"/health": {404, map[string]string{"Content-Type": "text/html"}, "<html><body>404 Not Found</body></html>"},
	}
	// Answers /ping without saying anything (InfluxDB Cloud 2 does not
	// send the header), and has no /health.
	silent = map[string]recorded{
		"/ping":   {204, nil, ""},
		"/health": {404, nil, "404 page not found\n"},
	}
)

// replay serves recorded answers and counts the requests.
type replay struct {
	answers map[string]recorded
	mu      sync.Mutex
	paths   []string
}

func (r *replay) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.paths = append(r.paths, req.URL.Path)
	r.mu.Unlock()
	a, ok := r.answers[req.URL.Path]
	if !ok {
		http.NotFound(w, req)
		return
	}
	for k, v := range a.header {
		w.Header().Set(k, v)
	}
	w.WriteHeader(a.status)
	_, _ = io.WriteString(w, a.body)
}

func TestDetect(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		answers map[string]recorded
		major   int
		version string
		unknown bool
	}{
		{"1.8.10", v18, 1, "1.8.10", false},
		{"1.8.10 unstamped", v18Unstamped, 1, "unknown", false},
		{"2.7.11", v27, 2, "v2.7.11", false},
		{"2.7.11 without the ping header", v27NoHeader, 2, "v2.7.11", false},
		{"3 Core", v3Core, 3, "3.0.1", false},
		{"not an InfluxDB", notInflux, 0, "", true},
		{"says nothing", silent, 0, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(&replay{answers: tt.answers})
			defer srv.Close()
			base, _ := url.Parse(srv.URL)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			got, err := storage.Detect(ctx, srv.Client(), base, "tok")
			if tt.unknown {
				if !errors.Is(err, storage.ErrUnknownServer) || !errors.Is(err, telemetry.ErrPermanent) {
					t.Fatalf("err = %v, want ErrUnknownServer and ErrPermanent", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Major != tt.major || got.Version != tt.version {
				t.Fatalf("got %+v, want major %d version %q", got, tt.major, tt.version)
			}
		})
	}
}

func TestDetectRefusedToken(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(&replay{answers: map[string]recorded{
		"/ping": {401, map[string]string{"Content-Type": "application/json"}, `{"error":"unauthorized access"}`},
	}})
	defer srv.Close()
	base, _ := url.Parse(srv.URL)
	_, err := storage.Detect(context.Background(), srv.Client(), base, "wrong")
	if !errors.Is(err, telemetry.ErrPermanent) || errors.Is(err, storage.ErrUnknownServer) {
		t.Fatalf("err = %v", err)
	}
}

func TestDetectUnreachableIsNotPermanent(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	base, _ := url.Parse(srv.URL)
	srv.Close()
	_, err := storage.Detect(context.Background(), http.DefaultClient, base, "")
	if err == nil || errors.Is(err, telemetry.ErrPermanent) {
		t.Fatalf("err = %v, want a retryable error", err)
	}
}

// TestOpenUnknownServerFailsOnce: a server that is no InfluxDB gets one
// clear error, two probes, and no CREATE DATABASE.
func TestOpenUnknownServerFailsOnce(t *testing.T) {
	t.Parallel()
	r := &replay{answers: notInflux}
	srv := httptest.NewServer(r)
	defer srv.Close()
	_, err := storage.Open(context.Background(), storage.Config{URL: srv.URL, Bucket: "iot"}, nil)
	if !errors.Is(err, storage.ErrUnknownServer) || !errors.Is(err, telemetry.ErrPermanent) {
		t.Fatalf("err = %v", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.paths) != 2 || r.paths[0] != "/ping" || r.paths[1] != "/health" {
		t.Fatalf("requests %v, want /ping then /health", r.paths)
	}
}
