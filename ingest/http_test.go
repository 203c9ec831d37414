package ingest

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/ingest/payload"
	"github.com/telemetryd/telemetryd/telemetry"
)

// tokenAuth knows one token per device.
type tokenAuth map[string]telemetry.DeviceID

func (a tokenAuth) AuthenticateDevice(_ context.Context, token string) (telemetry.DeviceID, error) {
	if id, ok := a[token]; ok {
		return id, nil
	}
	return "", telemetry.ErrUnauthorized
}

// pipeline is a consumer whose frames are finished when the test says so
// (hold), with the behaviour the test sets.
type pipeline struct {
	mu       sync.Mutex
	frames   []*telemetry.Frame
	err      error                 // Consume's error
	rejectAt map[int]bool          // readings refused in the Receipt
	outcome  telemetry.Outcome     // what Done reports
	hold     chan struct{}         // when set, Done waits for it to close
	consumed chan *telemetry.Frame // every consumed frame, when set
}

func (p *pipeline) Consume(_ context.Context, f *telemetry.Frame) (telemetry.Receipt, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return telemetry.Receipt{}, p.err
	}
	p.frames = append(p.frames, f)
	var rcpt telemetry.Receipt
	bad := map[int]bool{}
	invalid := map[int]telemetry.Rejection{}
	for _, r := range f.Invalid {
		bad[r.Index] = true
		invalid[r.Index] = r
	}
	for _, i := range f.Skipped {
		bad[i] = true
	}
	for i := range f.Readings {
		switch {
		case bad[i]:
			if r, ok := invalid[i]; ok { // in the Receipt, in order, as the bridge does
				rcpt.Rejected = append(rcpt.Rejected, r)
			}
		case p.rejectAt[i]:
			rcpt.Rejected = append(rcpt.Rejected, telemetry.Rejection{Index: i, Code: "field_type_conflict", Message: "no"})
		default:
			rcpt.Accepted++
		}
	}
	if p.consumed != nil {
		p.consumed <- f
	}
	o, hold := p.outcome, p.hold
	go func() {
		if hold != nil {
			<-hold
		}
		f.Done(o)
	}()
	return rcpt, nil
}

func newHTTPHarness(t *testing.T, cfg WSConfig) (*httptest.Server, *pipeline) {
	t.Helper()
	p := &pipeline{}
	log := slog.New(slog.DiscardHandler)
	ws := NewWS(cfg, tokenAuth{"tok-1": "dev-1"}, p, log)
	h := NewHTTP(ws, log)
	mux := http.NewServeMux()
	mux.Handle("POST /v1/ingest", h.Ingest())
	mux.Handle("POST /api/v2/write", h.WriteV2())
	mux.Handle("POST /write", h.WriteV1())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, p
}

type answer struct {
	status int
	header http.Header
	body   map[string]any
}

func post(t *testing.T, url, auth string, body []byte, hdr ...string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header}
	if len(b) > 0 {
		if err := json.Unmarshal(b, &a.body); err != nil {
			t.Fatalf("body %q: %v", b, err)
		}
	}
	return a
}

func gz(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// get digs a value out of a JSON body: path elements are keys or, for
// arrays, "0", "1", ...
func get(v any, path ...string) any {
	for _, p := range path {
		switch x := v.(type) {
		case map[string]any:
			v = x[p]
		case []any:
			i := int(p[0] - '0')
			if i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

func TestHTTPIngestAnswersAfterDurable(t *testing.T) {
	srv, p := newHTTPHarness(t, WSConfig{})
	p.hold = make(chan struct{})
	p.consumed = make(chan *telemetry.Frame, 1)
	got := make(chan answer, 1)
	go func() {
		got <- post(t, srv.URL+"/v1/ingest", "Bearer tok-1", []byte(`{"seq":7,"metrics":{"t":21.5}}`))
	}()
	f := <-p.consumed
	if f.Device != "dev-1" || len(f.Readings) != 1 {
		t.Fatalf("frame %+v", f)
	}
	// A negative can only be watched for a while: an answer within this
	// window came before Done.
	select {
	case a := <-got:
		t.Fatalf("answered %d before the readings were durable", a.status)
	case <-time.After(200 * time.Millisecond):
	}
	close(p.hold)
	a := <-got
	if a.status != http.StatusOK || get(a.body, "ack") != 7.0 || get(a.body, "accepted") != 1.0 || a.body["error"] != nil {
		t.Fatalf("answer %+v", a)
	}
}

func TestHTTPIngestAnswers(t *testing.T) {
	lp := []byte("m v=1\nm\nm v=2\n")
	big := bytes.Repeat([]byte(" "), 2048)
	cases := []struct {
		name    string
		cfg     WSConfig
		setup   func(*pipeline)
		auth    string
		body    []byte
		hdr     []string
		status  int
		code    string   // error.code
		rejIdx  []string // error.rejected[i].index, as text
		retry   bool     // Retry-After and retry_after_ms expected
		readers int      // readings consumed
	}{
		{name: "json", body: []byte(`{"metrics":{"t":1}}`), status: 200, readers: 1},
		{name: "gzip senml", body: gz(t, []byte(`[{"n":"a","v":1},{"n":"b","vs":"x"}]`)), hdr: []string{"Content-Encoding", "gzip"}, status: 200, readers: 2},
		{name: "cbor", body: []byte{0xa1, 0x67, 'm', 'e', 't', 'r', 'i', 'c', 's', 0xa1, 0x61, 'a', 0x01}, status: 200, readers: 1},
		{name: "line protocol, bad line alone", body: lp, status: 200, code: CodeRejected, rejIdx: []string{"1"}, readers: 3},
		{name: "decoder and pipeline rejections merged", setup: func(p *pipeline) { p.rejectAt = map[int]bool{0: true} },
			body: []byte(`{"readings":[{"metrics":{"a":1}},{"metrics":{"a":null}}]}`), status: 200, code: CodeRejected, rejIdx: []string{"0", "1"}, readers: 2},
		{name: "undecodable", body: []byte(`{"metrics":`), status: 400, code: CodeInvalidPayload},
		{name: "too many readings", cfg: WSConfig{Limits: limitsReadings(1)}, body: []byte("m v=1\nm v=2"), status: 400, code: CodeTooManyReadings},
		{name: "no token", auth: "-", body: []byte(`{"metrics":{"t":1}}`), status: 401, code: CodeUnauthorized},
		{name: "too large", cfg: WSConfig{MaxFrameSize: 1024}, body: append([]byte(`{"metrics":{"t":1}}`), big...), status: 413, code: CodePayloadTooLarge},
		{name: "too large once inflated", cfg: WSConfig{MaxFrameSize: 1024}, body: gz(t, append([]byte(`{"metrics":{"t":1}}`), big...)), hdr: []string{"Content-Encoding", "gzip"}, status: 413, code: CodePayloadTooLarge},
		{name: "bad gzip", body: []byte("nope"), hdr: []string{"Content-Encoding", "gzip"}, status: 400, code: CodeInvalidPayload},
		{name: "unknown encoding", body: []byte("x"), hdr: []string{"Content-Encoding", "br"}, status: 415, code: CodeBadEncoding},
		{name: "overloaded", setup: func(p *pipeline) { p.err = telemetry.ErrOverloaded }, body: []byte(`{"metrics":{"t":1}}`), status: 503, code: CodeOverloaded, retry: true},
		{name: "not stored", setup: func(p *pipeline) { p.outcome.Err = errors.New("influx down") }, body: []byte(`{"metrics":{"t":1}}`), status: 503, code: CodeNotStored, retry: true, readers: 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv, p := newHTTPHarness(t, c.cfg)
			if c.setup != nil {
				c.setup(p)
			}
			auth := c.auth
			switch auth {
			case "":
				auth = "Bearer tok-1"
			case "-":
				auth = ""
			}
			a := post(t, srv.URL+"/v1/ingest", auth, c.body, c.hdr...)
			if a.status != c.status || get(a.body, "error", "code") != nilIfEmpty(c.code) {
				t.Fatalf("answer %d %v, want %d %q", a.status, a.body, c.status, c.code)
			}
			for i, idx := range c.rejIdx {
				if got := get(a.body, "error", "rejected", string(rune('0'+i)), "index"); got != float64(idx[0]-'0') {
					t.Errorf("rejected[%d].index = %v, want %s (%v)", i, got, idx, a.body)
				}
			}
			if c.retry != (a.header.Get("Retry-After") != "") || c.retry != (get(a.body, "error", "retry_after_ms") != nil) {
				t.Errorf("Retry-After %q, body %v; want retry %v", a.header.Get("Retry-After"), a.body, c.retry)
			}
			n := 0
			for _, f := range p.frames {
				n += len(f.Readings)
			}
			if n != c.readers {
				t.Errorf("%d readings consumed, want %d", n, c.readers)
			}
		})
	}
}

func limitsReadings(n int) payload.Limits { return payload.Limits{MaxReadings: n} }

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// The HTTP requests and the sockets of a device draw on one bucket.
func TestHTTPIngestRateLimit(t *testing.T) {
	srv, _ := newHTTPHarness(t, WSConfig{FrameRate: 0.5, FrameBurst: 1})
	body := []byte(`{"metrics":{"t":1}}`)
	if a := post(t, srv.URL+"/v1/ingest", "Bearer tok-1", body); a.status != 200 {
		t.Fatalf("first: %+v", a)
	}
	a := post(t, srv.URL+"/v1/ingest", "Bearer tok-1", body)
	if a.status != http.StatusTooManyRequests || a.header.Get("Retry-After") != "2" || get(a.body, "error", "code") != CodeRateLimited {
		t.Fatalf("second: %+v", a)
	}
	a = post(t, srv.URL+"/api/v2/write?org=o&bucket=b", "Token tok-1", []byte("m v=1"))
	if a.status != http.StatusTooManyRequests || a.header.Get("Retry-After") == "" || get(a.body, "code") != "too many requests" {
		t.Fatalf("v2: %+v", a)
	}
}

func TestInfluxWriteAnswers(t *testing.T) {
	cases := []struct {
		name    string
		path    string
		auth    string
		setup   func(*pipeline)
		body    string
		status  int
		v2code  string // v2 body "code"
		v1error string // substring of a v1 body's "error"
		readers int
		time0   int64 // the first reading's time
	}{
		{name: "v2 ok, seconds", path: "/api/v2/write?org=o&bucket=b&precision=s", auth: "Token tok-1", body: "m v=1 1763820000\nm v=2i", status: 204, readers: 2, time0: 1763820000e9},
		{name: "v2 bad line is a partial write", path: "/api/v2/write?org=o&bucket=b", auth: "Token tok-1", body: "m v=1\nm v=\nm v=3", status: 400, v2code: "invalid", readers: 3},
		{name: "v2 refused point is 422", path: "/api/v2/write?org=o&bucket=b", auth: "Token tok-1", setup: func(p *pipeline) { p.rejectAt = map[int]bool{1: true} }, body: "m v=1\nm v=2", status: 422, v2code: "unprocessable entity", readers: 2},
		{name: "v2 no bucket", path: "/api/v2/write?org=o", auth: "Token tok-1", body: "m v=1", status: 400, v2code: "invalid"},
		{name: "v2 bad precision", path: "/api/v2/write?bucket=b&precision=h", auth: "Token tok-1", body: "m v=1", status: 400, v2code: "invalid"},
		{name: "v2 bad token", path: "/api/v2/write?bucket=b", auth: "Token nope", body: "m v=1", status: 401, v2code: "unauthorized"},
		{name: "v2 empty body", path: "/api/v2/write?bucket=b", auth: "Token tok-1", body: "\n# nothing\n", status: 204},
		{name: "v2 overloaded", path: "/api/v2/write?bucket=b", auth: "Token tok-1", setup: func(p *pipeline) { p.err = telemetry.ErrOverloaded }, body: "m v=1", status: 503, v2code: "unavailable"},
		{name: "v1 u/p, ms", path: "/write?db=x&u=dev-1&p=tok-1&precision=ms", body: "m v=1 1763820000123", status: 204, readers: 1, time0: 1763820000123e6},
		{name: "v1 basic auth", path: "/write?db=x", auth: "Basic ZGV2LTE6dG9rLTE=", body: "m v=1", status: 204, readers: 1},
		{name: "v1 partial write", path: "/write?db=x&p=tok-1", setup: func(p *pipeline) { p.rejectAt = map[int]bool{0: true} }, body: "m v=1\nm v=2", status: 400, v1error: "partial write: point 1", readers: 2},
		{name: "v1 no db", path: "/write?p=tok-1", body: "m v=1", status: 400, v1error: "database is required"},
		{name: "v1 bad token", path: "/write?db=x&p=nope", body: "m v=1", status: 401, v1error: "token"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv, p := newHTTPHarness(t, WSConfig{})
			if c.setup != nil {
				c.setup(p)
			}
			a := post(t, srv.URL+c.path, c.auth, []byte(c.body))
			if a.status != c.status {
				t.Fatalf("status %d %v, want %d", a.status, a.body, c.status)
			}
			if c.v2code != "" && (get(a.body, "code") != c.v2code || get(a.body, "message") == "") {
				t.Errorf("body %v, want code %q", a.body, c.v2code)
			}
			if c.v1error != "" {
				if e, _ := get(a.body, "error").(string); !strings.Contains(e, c.v1error) {
					t.Errorf("body %v, want error with %q", a.body, c.v1error)
				}
			}
			if c.status == 204 && a.body != nil {
				t.Errorf("204 with body %v", a.body)
			}
			n := 0
			for _, f := range p.frames {
				n += len(f.Readings)
			}
			if n != c.readers {
				t.Errorf("%d readings consumed, want %d", n, c.readers)
			}
			if c.time0 != 0 && p.frames[0].Readings[0].Time != c.time0 {
				t.Errorf("time %d, want %d", p.frames[0].Readings[0].Time, c.time0)
			}
		})
	}
}
