package storage_test

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/storage"
	"github.com/telemetryd/telemetryd/telemetry"
)

// fakeInflux mimics InfluxDB 1.8's HTTP answers.
type fakeInflux struct {
	version string

	mu       sync.Mutex
	queries  []string
	queryAut []string
	writes   []*http.Request
	bodies   []string
	reply    func(w http.ResponseWriter)
}

func (f *fakeInflux) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Influxdb-Version", f.version)
	w.Header().Set("X-Influxdb-Build", "OSS")
	switch r.URL.Path {
	case "/ping":
		w.WriteHeader(http.StatusNoContent)
	case "/query":
		_ = r.ParseForm()
		u, p, _ := r.BasicAuth()
		f.mu.Lock()
		f.queries = append(f.queries, r.Method+" "+r.Form.Get("q"))
		f.queryAut = append(f.queryAut, u+":"+p)
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"results":[{"statement_id":0}]}`)
	case "/api/v2/write":
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), 400)
				return
			}
			body = zr
		}
		b, _ := io.ReadAll(body)
		f.mu.Lock()
		f.writes = append(f.writes, r)
		f.bodies = append(f.bodies, string(b))
		reply := f.reply
		f.mu.Unlock()
		if reply == nil {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		reply(w)
	default:
		http.NotFound(w, r)
	}
}

// influxError answers like InfluxDB 1.8's httpError.
func influxError(status int, msg string, header ...string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Influxdb-Error", msg)
		w.WriteHeader(status)
		b, _ := json.Marshal(map[string]string{"error": msg})
		_, _ = w.Write(b)
	}
}

func startFake(t *testing.T, version string) (*fakeInflux, *httptest.Server) {
	t.Helper()
	f := &fakeInflux{version: version}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func TestOpenV1CreatesDatabaseWithBasicAuth(t *testing.T) {
	t.Parallel()
	f, srv := startFake(t, "1.8.10")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := storage.Open(ctx, storage.Config{URL: srv.URL, Token: "writer:s3cr:et", Bucket: `we"ird\db/autogen`, Gzip: true}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Version() != "1.8.10" {
		t.Errorf("Version() = %q", s.Version())
	}
	f.mu.Lock()
	queries, auth := f.queries, f.queryAut
	f.mu.Unlock()
	if len(queries) != 1 || queries[0] != `POST CREATE DATABASE "we\"ird\\db"` || auth[0] != "writer:s3cr:et" {
		t.Fatalf("queries %q with auth %q", queries, auth)
	}

	if err := s.Write(ctx, []byte("m,device_id=a v=1 1\nm,device_id=a v=2 2\n")); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.writes[0]
	q := r.URL.Query()
	if q.Get("bucket") != `we"ird\db/autogen` || q.Get("precision") != "ns" || q.Get("org") != "" {
		t.Errorf("write query %v", q)
	}
	if got := r.Header.Get("Authorization"); got != "Token writer:s3cr:et" {
		t.Errorf("Authorization %q", got)
	}
	if !strings.Contains(r.Header.Get("User-Agent"), "telemetryd") {
		t.Errorf("User-Agent %q", r.Header.Get("User-Agent"))
	}
	if r.Header.Get("Content-Encoding") != "gzip" {
		t.Errorf("Content-Encoding %q, want gzip", r.Header.Get("Content-Encoding"))
	}
	if !strings.HasPrefix(f.bodies[0], "m,device_id=a v=1 1\nm,device_id=a v=2 2") {
		t.Errorf("body %q", f.bodies[0])
	}
}

func TestOpenVersionDetection(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		version, org string
		create       bool
	}{
		{"1.8.10", "", true},
		{"1.8.10", "someorg", true},
		{"unknown", "", true},     // go-installed influxd 1.8
		{"unknown", "acme", true}, // the server decides, not the org
		{"v2.7.4", "acme", false},
		{"2.7.4", "", false},
		{"3.0.1", "", false},
	} {
		f, srv := startFake(t, tc.version)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s, err := storage.Open(ctx, storage.Config{URL: srv.URL, Org: tc.org, Bucket: "iot"}, nil)
		cancel()
		if err != nil {
			t.Fatalf("%+v: %v", tc, err)
		}
		s.Close()
		f.mu.Lock()
		created := len(f.queries) > 0
		f.mu.Unlock()
		if created != tc.create {
			t.Errorf("version %q org %q: created database = %v, want %v", tc.version, tc.org, created, tc.create)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, cfg := range []storage.Config{
		{URL: "", Bucket: "iot"},
		{URL: "127.0.0.1:8086", Bucket: "iot"},
		{URL: "ftp://x", Bucket: "iot"},
		{URL: "http://127.0.0.1:1", Bucket: ""},
	} {
		if s, err := storage.Open(ctx, cfg, nil); err == nil {
			s.Close()
			t.Errorf("Open(%+v) succeeded", cfg)
		}
	}

	// A failing CREATE DATABASE fails Open, without logging the token.
	mux := http.NewServeMux()
	mux.HandleFunc("/ping", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Influxdb-Version", "1.8.10")
		w.WriteHeader(204)
	})
	mux.HandleFunc("/query", func(w http.ResponseWriter, r *http.Request) {
		influxError(401, "authorization failed")(w)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	var logs strings.Builder
	s, err := storage.Open(ctx, storage.Config{URL: srv.URL, Token: "u:topsecret", Bucket: "iot"}, slogTo(&logs))
	if err == nil {
		s.Close()
		t.Fatal("Open succeeded although CREATE DATABASE failed")
	}
	if !strings.Contains(err.Error(), "authorization failed") {
		t.Errorf("error %v does not carry the server's message", err)
	}
	if strings.Contains(err.Error()+logs.String(), "topsecret") {
		t.Errorf("token leaked: %v / %s", err, logs.String())
	}
}

func TestWriteErrorClassification(t *testing.T) {
	t.Parallel()
	f, srv := startFake(t, "1.8.10")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := storage.Open(ctx, storage.Config{URL: srv.URL, Bucket: "iot"}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	httpDate := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	for _, tc := range []struct {
		name       string
		reply      func(http.ResponseWriter)
		status     int
		permanent  bool
		retryAfter time.Duration // checked with 2s tolerance for dates
		message    string
	}{
		{"429 retry-after", influxError(429, "too many requests", "Retry-After", "3"), 429, false, 3 * time.Second, "too many requests"},
		{"503 retry-after", influxError(503, "unavailable", "Retry-After", "7"), 503, false, 7 * time.Second, "unavailable"},
		{"503 date", influxError(503, "unavailable", "Retry-After", httpDate), 503, false, 90 * time.Second, "unavailable"},
		{"503 bare", func(w http.ResponseWriter) { w.WriteHeader(503) }, 503, false, 0, "Service Unavailable"},
		{"500", influxError(500, "retention policy not found: nope"), 500, false, 0, "retention policy not found: nope"},
		{"408", influxError(408, "timeout"), 408, false, 0, "timeout"},
		{"400 partial", influxError(400, `partial write: unable to parse 'x': invalid field format dropped=0`), 400, true, 0, "partial write: unable to parse"},
		{"401", influxError(401, "authorization failed"), 401, true, 0, "authorization failed"},
		{"404", influxError(404, `database not found: "iot"`), 404, true, 0, `database not found: "iot"`},
		{"413", influxError(413, "Request Entity Too Large"), 413, true, 0, "Request Entity Too Large"},
		{"413 plain", func(w http.ResponseWriter) { http.Error(w, "body too big", 413) }, 413, true, 0, "body too big"},
		{"422 v2 json", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.WriteHeader(422)
			_, _ = io.WriteString(w, `{"code":"unprocessable entity","message":"failure writing points: field type conflict"}`)
		}, 422, true, 0, "failure writing points: field type conflict"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.mu.Lock()
			f.reply = tc.reply
			f.mu.Unlock()
			err := s.Write(ctx, []byte("m v=1 1"))
			if err == nil {
				t.Fatal("Write succeeded")
			}
			we := asWriteError(t, err)
			if we.Status != tc.status {
				t.Errorf("Status %d, want %d", we.Status, tc.status)
			}
			if got := errors.Is(err, telemetry.ErrPermanent); got != tc.permanent {
				t.Errorf("permanent = %v, want %v (%v)", got, tc.permanent, err)
			}
			if d := we.RetryAfter - tc.retryAfter; d < -2*time.Second || d > 2*time.Second {
				t.Errorf("RetryAfter %v, want %v", we.RetryAfter, tc.retryAfter)
			}
			if !strings.Contains(we.Message, tc.message) {
				t.Errorf("Message %q does not contain %q", we.Message, tc.message)
			}
			if !strings.Contains(err.Error(), strconv.Itoa(tc.status)) {
				t.Errorf("Error() %q lacks the status", err.Error())
			}
			t.Logf("%v", err)
		})
	}

	f.mu.Lock()
	f.reply = nil
	f.mu.Unlock()
	if err := s.Write(ctx, nil); err != nil {
		t.Errorf("empty Write: %v", err)
	}
	if err := s.Write(ctx, []byte("m v=1 1")); err != nil {
		t.Errorf("Write: %v", err)
	}
}

func TestWriteContextErrors(t *testing.T) {
	t.Parallel()
	block := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(block) }) }
	mux := http.NewServeMux()
	mux.HandleFunc("/ping", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Influxdb-Version", "2.7.4")
		w.WriteHeader(204)
	})
	mux.HandleFunc("/api/v2/write", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
		w.WriteHeader(204)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	defer release()

	ctx := context.Background()
	s, err := storage.Open(ctx, storage.Config{URL: srv.URL, Org: "acme", Bucket: "iot", Timeout: 200 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	// Per-request timeout.
	err = s.Write(ctx, []byte("m v=1"))
	if we := asWriteError(t, err); we.Status != 0 || !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, telemetry.ErrPermanent) {
		t.Errorf("timeout: %v", err)
	}
	// Caller's deadline.
	s2, err := storage.Open(ctx, storage.Config{URL: srv.URL, Org: "acme", Bucket: "iot", Timeout: time.Minute}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	dctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	err = s2.Write(dctx, []byte("m v=1"))
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, telemetry.ErrPermanent) {
		t.Errorf("deadline: %v", err)
	}
	// Caller's cancel, before and during the request.
	cctx, cancel2 := context.WithCancel(ctx)
	cancel2()
	if err := s2.Write(cctx, []byte("m v=1")); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	cctx, cancel3 := context.WithCancel(ctx)
	time.AfterFunc(50*time.Millisecond, cancel3)
	if err := s2.Write(cctx, []byte("m v=1")); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled during request: %v", err)
	}
	release()
	if err := s2.Write(ctx, []byte("m v=1")); err != nil {
		t.Errorf("Write: %v", err)
	}
}

func slogTo(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func TestWriteAfterClose(t *testing.T) {
	t.Parallel()
	f, srv := startFake(t, "1.8.10")
	s, err := storage.Open(context.Background(), storage.Config{URL: srv.URL, Bucket: "iot"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s.Close() // idempotent
	err = s.Write(context.Background(), []byte("m v=1"))
	if !errors.Is(err, telemetry.ErrClosed) || errors.Is(err, telemetry.ErrPermanent) {
		t.Fatalf("Write after Close: %v", err)
	}
	asWriteError(t, err)
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.writes) != 0 {
		t.Fatalf("%d writes reached the server after Close", len(f.writes))
	}
}
