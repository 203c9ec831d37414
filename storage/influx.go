package storage

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
	influxhttp "github.com/influxdata/influxdb-client-go/v2/api/http"

	"github.com/telemetryd/telemetryd/telemetry"
)

// DefaultTimeout is the per-request timeout used when Config.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// maxMessage bounds the server text kept in a WriteError (a proxy may answer
// with a whole HTML page).
const maxMessage = 1024

// Config says which InfluxDB to write to.
type Config struct {
	// URL is the server's base URL, e.g. http://127.0.0.1:8086.
	URL string
	// Token is "user:password" (or "" without auth) on 1.8, an API token
	// on 2.x and 3.x. It is never logged.
	Token string
	// Org is the organization's name on 2.x, "" on 1.8 and 3.x.
	Org string
	// Bucket is "db/rp" (or "db") on 1.8, the bucket's name on 2.x (its
	// InfluxQL queries go through the DBRP mapping of the same name, which
	// 2.x creates virtually for every bucket), the database's name on 3.x.
	Bucket string
	// Timeout bounds each HTTP request, including reading the response.
	// Zero means DefaultTimeout.
	Timeout time.Duration
	// Gzip compresses write bodies.
	Gzip bool
	// TLS is used for https:// URLs (for example with a custom CA). Optional.
	TLS *tls.Config
}

// Influx writes line protocol to one InfluxDB bucket. It is safe for
// concurrent use.
type Influx struct {
	log    *slog.Logger
	cfg    Config // cfg.Token is a secret: never log cfg
	base   *url.URL
	httpc  *http.Client
	client influxdb2.Client
	// Writes go through the client's HTTP service (its auth, user agent
	// and error decoding) to the client's write URL, not through its write
	// APIs: they take the batch as a string, a copy of every batch.
	http     influxhttp.Service
	writeURL string
	closed   atomic.Bool
	once     sync.Once
	db, rp   string // InfluxQL database and retention policy ("": default)

	// Connection state (connect.go): connected is closed once Connect
	// succeeded, and server is set before it is.
	connectMu sync.Mutex // one Connect at a time
	connected chan struct{}
	server    atomic.Pointer[Server]
	state     atomic.Pointer[ConnState]
}

// Open creates the client (New) and connects it (Connect): it asks the
// server which InfluxDB it is and, on 1.x, creates the bucket's database.
// It does not retry: the caller decides whether to try again, and an error
// matching telemetry.ErrPermanent (a server that is no known InfluxDB, a
// refused token) will not change. A service that must start before its
// database uses New, then Connect once and KeepConnecting in the
// background (connect.go).
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Influx, error) {
	s, err := New(cfg, log)
	if err != nil {
		return nil, err
	}
	if err := s.Connect(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// New creates the client without contacting the server. Its errors are
// the configuration's (bucket, URL). Writes fail with ErrNotConnected,
// which is transient, until Connect succeeds; queries go to the server
// at once.
func New(cfg Config, log *slog.Logger) (*Influx, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Bucket == "" {
		return nil, errors.New("storage: open influxdb: bucket is empty")
	}
	base, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("storage: open influxdb: parse URL: %w", err)
	}
	if (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("storage: open influxdb: URL %q is not http(s)://host[:port]", base.Redacted())
	}

	// One http.Client for writes, pings and queries: it shares the connection
	// pool, and its Timeout is exact (the client's SetHTTPRequestTimeout only
	// takes whole seconds and is ignored once an http.Client is supplied).
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	tr.MaxIdleConns = 100
	tr.MaxIdleConnsPerHost = 100
	tr.TLSHandshakeTimeout = 5 * time.Second
	if cfg.TLS != nil {
		tr.TLSClientConfig = cfg.TLS.Clone()
	}
	var rt http.RoundTripper = tr
	if cfg.Gzip {
		rt = newGzipTransport(tr) // faster than the client's own gzip
	}
	httpc := &http.Client{Timeout: cfg.Timeout, Transport: rt}

	opts := influxdb2.DefaultOptions().
		SetUseGZip(false).
		SetPrecision(time.Nanosecond).
		SetHTTPClient(httpc).
		SetApplicationName("telemetryd")
	client := influxdb2.NewClientWithOptions(cfg.URL, cfg.Token, opts)

	s := &Influx{
		log:       log,
		cfg:       cfg,
		base:      base,
		httpc:     httpc,
		client:    client,
		http:      client.HTTPService(),
		connected: make(chan struct{}),
	}
	if s.writeURL, err = writeURL(s.http.ServerAPIURL(), cfg.Org, cfg.Bucket); err != nil {
		client.Close()
		return nil, fmt.Errorf("storage: open influxdb: %w", err)
	}
	s.db, s.rp = splitBucket(cfg.Bucket)
	s.setState(ConnState{Err: ErrNotConnected})
	return s, nil
}

// splitBucket returns the InfluxQL database and retention policy a bucket
// stands for: "db/rp" on 1.x; on 2.x the same rule gives the bucket's
// virtual DBRP mapping ("telemetry" → database "telemetry", default
// policy); on 3.x the bucket is the database.
func splitBucket(bucket string) (db, rp string) {
	db, rp, _ = strings.Cut(bucket, "/")
	return db, rp
}

// Write sends one batch of newline-separated line protocol (nanosecond
// timestamps) in one HTTP request. The error, if any, is a *WriteError.
func (s *Influx) Write(ctx context.Context, lines []byte) error {
	if s.closed.Load() {
		return &WriteError{Message: "storage is closed", err: telemetry.ErrClosed}
	}
	if len(lines) == 0 {
		return nil
	}
	if !s.Connected() {
		// Before Connect a 1.x database may not exist yet: a write would be
		// refused for good (404) instead of waiting.
		return &WriteError{err: ErrNotConnected}
	}
	perr := s.http.DoPostRequest(ctx, s.writeURL, bytes.NewReader(lines), nil, func(r *http.Response) error {
		return r.Body.Close()
	})
	if perr == nil {
		return nil
	}
	return newWriteError(ctx, perr)
}

// writeURL is the v2 write endpoint for org and bucket, nanosecond
// precision, as the client's write API builds it.
func writeURL(apiURL, org, bucket string) (string, error) {
	u, err := url.Parse(apiURL)
	if err != nil {
		return "", err
	}
	if u, err = u.Parse("write"); err != nil {
		return "", err
	}
	q := u.Query()
	q.Set("org", org)
	q.Set("bucket", bucket)
	q.Set("precision", "ns")
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// newWriteError classifies an error returned by the HTTP service's write.
func newWriteError(ctx context.Context, err error) *WriteError {
	var he *influxhttp.Error
	if !errors.As(err, &he) {
		return &WriteError{err: withContext(ctx, err)}
	}
	if he.StatusCode == 0 {
		cause := he.Err
		if cause == nil {
			cause = errors.New(he.Error())
		}
		return &WriteError{err: withContext(ctx, cause)}
	}
	we := &WriteError{
		Status:     he.StatusCode,
		RetryAfter: parseRetryAfter(he.Header.Get("Retry-After"), time.Now()),
		Message:    serverMessage(he),
	}
	if we.RetryAfter == 0 && he.RetryAfter > 0 {
		we.RetryAfter = time.Duration(he.RetryAfter) * time.Second
	}
	return we
}

// withContext makes sure a failure caused by ctx matches ctx.Err() with
// errors.Is (the HTTP client normally wraps it already).
func withContext(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return errors.Join(err, cerr)
	}
	return err
}

// serverMessage extracts the server's error text: the X-Influxdb-Error
// header (1.x; the client ignores it when the status is 429 or 503), the
// JSON "message" (2.x), or the plain-text body.
func serverMessage(he *influxhttp.Error) string {
	var msg string
	if he.Header != nil {
		msg = he.Header.Get("X-Influxdb-Error")
	}
	if msg == "" {
		msg = he.Message
	}
	if msg == "" && he.Err != nil {
		msg = he.Err.Error()
	}
	if msg == "" {
		msg = http.StatusText(he.StatusCode)
	}
	msg = strings.TrimSpace(msg)
	if len(msg) > maxMessage {
		msg = msg[:maxMessage] + "…"
	}
	return msg
}

// parseRetryAfter parses a Retry-After header: delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseUint(v, 10, 64); err == nil {
		const maxSecs = uint64(24 * time.Hour / time.Second)
		return time.Duration(min(secs, maxSecs)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d.Round(time.Second)
		}
	}
	return 0
}

// Ping reports whether InfluxDB answers /ping.
func (s *Influx) Ping(ctx context.Context) error {
	u := s.base.JoinPath("ping")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("influxdb ping: %w", err)
	}
	setAuth(req, s.cfg.Token)
	req.Header.Set("User-Agent", "telemetryd")
	resp, err := s.httpc.Do(req)
	if err != nil {
		return fmt.Errorf("influxdb ping: %w", withContext(ctx, err))
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		msg := resp.Header.Get("X-Influxdb-Error")
		if msg == "" {
			msg = http.StatusText(resp.StatusCode)
		}
		return fmt.Errorf("influxdb ping: status %d: %s", resp.StatusCode, msg)
	}
	return nil
}

// Version is the server's version as Connect detected it, for example
// "1.8.10" (or "unknown" for an influxd 1.x built without version
// information); "" before.
func (s *Influx) Version() string {
	if srv := s.server.Load(); srv != nil {
		return srv.Version
	}
	return ""
}

// Major is the server's major version (1, 2 or 3) as Connect detected it;
// 0 before.
func (s *Influx) Major() int {
	if srv := s.server.Load(); srv != nil {
		return srv.Major
	}
	return 0
}

// Close releases idle connections. Writes after Close fail with an error
// matching telemetry.ErrClosed. Close is idempotent.
func (s *Influx) Close() {
	s.once.Do(func() {
		s.closed.Store(true)
		s.client.Close()
		s.httpc.CloseIdleConnections()
	})
}

// createDatabase runs CREATE DATABASE on a 1.x server.
func (s *Influx) createDatabase(ctx context.Context, db string) error {
	if db == "" {
		return errors.New("create database: bucket names no database")
	}
	form := url.Values{"q": {"CREATE DATABASE " + quoteIdent(db)}}
	u := s.base.JoinPath("query")
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), strings.NewReader(form.Encode()))
	if err != nil {
		return fmt.Errorf("create database: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("User-Agent", "telemetryd")
	setAuth(req, s.cfg.Token)
	resp, err := s.httpc.Do(req)
	if err != nil {
		return fmt.Errorf("create database: %w", withContext(ctx, err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("create database: read response: %w", withContext(ctx, err))
	}
	var out struct {
		Error   string `json:"error"`
		Results []struct {
			Error string `json:"error"`
		} `json:"results"`
	}
	_ = json.Unmarshal(body, &out) // the status code decides when the body is not JSON
	msg := out.Error
	for _, r := range out.Results {
		if msg == "" {
			msg = r.Error
		}
	}
	if msg == "" {
		msg = resp.Header.Get("X-Influxdb-Error")
	}
	switch {
	case resp.StatusCode == http.StatusForbidden:
		// The user may write but not administer; the database may exist.
		s.log.Warn("influxdb: not allowed to create the database; assuming it exists",
			"database", db, "error", msg)
		return nil
	case resp.StatusCode < 200 || resp.StatusCode >= 300:
		if msg == "" {
			msg = http.StatusText(resp.StatusCode)
		}
		return fmt.Errorf("create database %q: status %d: %s", db, resp.StatusCode, msg)
	case msg != "":
		return fmt.Errorf("create database %q: %s", db, msg)
	}
	return nil
}

// WriteError is the error returned by Write.
type WriteError struct {
	// Status is the HTTP status code, 0 for a network error or timeout.
	Status int
	// RetryAfter is the server's Retry-After (429, 503), 0 when absent.
	RetryAfter time.Duration
	// Message is the server's error text ("" for network errors).
	Message string

	err error // cause for Status 0 (network, timeout, context)
}

// permanent reports whether resending the same batch will fail again:
// a 4xx status other than 408 and 429.
func (e *WriteError) permanent() bool {
	return e.Status >= 400 && e.Status < 500 &&
		e.Status != http.StatusRequestTimeout && e.Status != http.StatusTooManyRequests
}

func (e *WriteError) Error() string {
	var b strings.Builder
	b.WriteString("influxdb write: ")
	switch {
	case e.Status != 0:
		fmt.Fprintf(&b, "status %d", e.Status)
		if e.Message != "" {
			b.WriteString(": ")
			b.WriteString(e.Message)
		}
	case e.err != nil:
		b.WriteString(e.err.Error())
	default:
		b.WriteString(e.Message)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
	}
	return b.String()
}

// Unwrap returns the cause and, for permanent failures, telemetry.ErrPermanent.
func (e *WriteError) Unwrap() []error {
	var errs []error
	if e.err != nil {
		errs = append(errs, e.err)
	}
	if e.permanent() {
		errs = append(errs, telemetry.ErrPermanent)
	}
	return errs
}

// RetryAfterDelay is the server's Retry-After, for retry loops that honour
// it without knowing this type.
func (e *WriteError) RetryAfterDelay() time.Duration { return e.RetryAfter }
