package authguard

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/telemetryd/telemetryd/telemetry"
)

// Config tunes the guard. The zero value of each field means its default.
type Config struct {
	// MaxFailures within Window (defaults 10 and 1 min) block the address
	// for Block (default 1 min). A negative MaxFailures turns the guard off.
	MaxFailures int
	Window      time.Duration
	Block       time.Duration
	// MaxTracked bounds the addresses tracked (default 16384).
	MaxTracked int
	// TrustedProxies are the balancers in front of the service. A request
	// from one of them is charged to the client its X-Forwarded-For names
	// (the rightmost address that is not itself a trusted proxy), so that
	// one bad client behind a balancer does not block every other one.
	// Empty: the TCP peer is the client, and X-Forwarded-For is ignored
	// (anyone could write it).
	TrustedProxies []netip.Prefix
	// Now is the clock (default time.Now); tests set it.
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	if c.MaxFailures == 0 {
		c.MaxFailures = 10
	}
	if c.Window <= 0 {
		c.Window = time.Minute
	}
	if c.Block <= 0 {
		c.Block = time.Minute
	}
	if c.MaxTracked <= 0 {
		c.MaxTracked = 16384
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// CodeTooManyFailures is the error code of the 429 answer.
const CodeTooManyFailures = "too_many_auth_failures"

// evictSample is how many entries an eviction compares.
const evictSample = 8

// Stats are the guard's counters.
type Stats struct {
	// Failures counts failed authentications seen; Throttled, requests
	// answered 429; Evicted, tracked addresses forgotten for room.
	Failures, Throttled, Evicted uint64
	Tracked                      int
}

// Guard tracks failed authentications per client address. Safe for
// concurrent use.
type Guard struct {
	cfg Config

	mu      sync.Mutex
	clients map[netip.Prefix]*entry

	failures, throttled, evicted atomic.Uint64
}

type entry struct {
	since        time.Time // start of the current window
	failures     int
	blockedUntil time.Time
}

// New returns a guard.
func New(cfg Config) *Guard {
	cfg = cfg.withDefaults()
	return &Guard{cfg: cfg, clients: make(map[netip.Prefix]*entry)}
}

// Stats returns the counters.
func (g *Guard) Stats() Stats {
	g.mu.Lock()
	n := len(g.clients)
	g.mu.Unlock()
	return Stats{Failures: g.failures.Load(), Throttled: g.throttled.Load(), Evicted: g.evicted.Load(), Tracked: n}
}

// key is the tracked unit of a "host:port" or bare address; ok is false
// when remote is not an IP address.
func key(remote string) (netip.Prefix, bool) {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p, true
}

// Blocked reports whether remote is blocked now, and for how long.
func (g *Guard) Blocked(remote string) (bool, time.Duration) {
	k, ok := key(remote)
	if !ok {
		return false, 0
	}
	now := g.cfg.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.clients[k]
	if e == nil || !now.Before(e.blockedUntil) {
		return false, 0
	}
	return true, e.blockedUntil.Sub(now)
}

// Fail records a failed authentication from remote.
func (g *Guard) Fail(remote string) {
	g.failures.Add(1)
	k, ok := key(remote)
	if !ok {
		return
	}
	now := g.cfg.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.clients[k]
	if e == nil {
		if len(g.clients) >= g.cfg.MaxTracked {
			g.evictOne(now)
		}
		e = &entry{since: now}
		g.clients[k] = e
	}
	if now.Sub(e.since) > g.cfg.Window {
		e.since, e.failures = now, 0
	}
	e.failures++
	if e.failures >= g.cfg.MaxFailures {
		e.blockedUntil = now.Add(g.cfg.Block)
		e.since, e.failures = now, 0
	}
}

// evictOne forgets a stale entry, or the weakest of a sample. g.mu is held.
func (g *Guard) evictOne(now time.Time) {
	var victim netip.Prefix
	var worst *entry
	n := 0
	for k, e := range g.clients { // map order: a pseudo-random sample
		if now.Sub(e.since) > g.cfg.Window && !now.Before(e.blockedUntil) {
			victim, worst = k, e
			break
		}
		if worst == nil || weaker(e, worst, now) {
			victim, worst = k, e
		}
		if n++; n >= evictSample {
			break
		}
	}
	delete(g.clients, victim)
	g.evicted.Add(1)
}

func weaker(a, b *entry, now time.Time) bool {
	ab, bb := now.Before(a.blockedUntil), now.Before(b.blockedUntil)
	if ab != bb {
		return bb
	}
	return a.failures < b.failures
}

// Sweep forgets entries whose window and block have passed; call it
// periodically so that the table only holds recent offenders.
func (g *Guard) Sweep() {
	now := g.cfg.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	for k, e := range g.clients {
		if now.Sub(e.since) > g.cfg.Window && !now.Before(e.blockedUntil) {
			delete(g.clients, k)
		}
	}
}

// Run sweeps every Window until ctx is done, so that the table only holds
// recent offenders.
func (g *Guard) Run(ctx context.Context) error {
	t := time.NewTicker(g.cfg.Window)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			g.Sweep()
		case <-ctx.Done():
			return nil
		}
	}
}

// HasCredential reports whether r carries a credential: an Authorization
// header (Bearer, Token or Basic), a token query parameter, or the password
// parameter of the InfluxDB 1.x write API (/write?p=).
func HasCredential(r *http.Request) bool {
	if r.Header.Get("Authorization") != "" {
		return true
	}
	q := r.URL.Query()
	return q.Get("token") != "" || q.Get("p") != ""
}

// client is the address a request is charged to: its TCP peer, or, when
// that is a trusted proxy, the client the proxies' X-Forwarded-For names.
func (g *Guard) client(r *http.Request) string {
	if len(g.cfg.TrustedProxies) == 0 || !g.trusted(r.RemoteAddr) {
		return r.RemoteAddr
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop := strings.TrimSpace(hops[i])
		if _, err := netip.ParseAddr(hop); err != nil {
			break // not an address: trust nothing further left
		}
		if !g.trusted(hop) {
			return hop
		}
	}
	return r.RemoteAddr
}

func (g *Guard) trusted(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, t := range g.cfg.TrustedProxies {
		if t.Contains(a) {
			return true
		}
	}
	return false
}

// Wrap guards next: a request with a credential from a blocked address is
// answered 429 with Retry-After; one that next answers 401 counts as a
// failure of its address.
func (g *Guard) Wrap(next http.Handler) http.Handler {
	if g.cfg.MaxFailures < 0 {
		return next // guard off
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !HasCredential(r) {
			next.ServeHTTP(w, r)
			return
		}
		client := g.client(r)
		if blocked, wait := g.Blocked(client); blocked {
			g.throttled.Add(1)
			telemetry.WriteHTTPRetry(w, http.StatusTooManyRequests, CodeTooManyFailures,
				"too many failed authentications from this address; retry later", wait)
			return
		}
		rec := &recorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		if rec.status == http.StatusUnauthorized {
			g.Fail(client)
		}
	})
}

// recorder notes the status a handler answers. It unwraps for
// http.ResponseController (hijacking for WebSocket upgrades, flushing for
// SSE).
type recorder struct {
	http.ResponseWriter
	status int
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(p)
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Hijack lets WebSocket upgraders that assert http.Hijacker keep working.
func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(r.ResponseWriter).Hijack()
}

// Flush lets handlers that assert http.Flusher keep working.
func (r *recorder) Flush() { _ = http.NewResponseController(r.ResponseWriter).Flush() }
