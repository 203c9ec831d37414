package authguard

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestGuardBlocksAfterFailures(t *testing.T) {
	clk := &clock{t: time.Unix(1000, 0)}
	g := New(Config{MaxFailures: 3, Window: time.Minute, Block: 30 * time.Second, Now: clk.now})
	steps := []struct {
		name    string
		at      time.Duration // advance the clock first
		fail    string
		check   string
		blocked bool
	}{
		{"first failures", 0, "10.0.0.1:1", "10.0.0.1:2", false},
		{"second", 0, "10.0.0.1:3", "10.0.0.1:2", false},
		{"third blocks", 0, "10.0.0.1:4", "10.0.0.1:9", true},
		{"other address free", 0, "", "10.0.0.2:1", false},
		{"still blocked", 29 * time.Second, "", "10.0.0.1:1", true},
		{"block over", 2 * time.Second, "", "10.0.0.1:1", false},
		{"ipv6 /64 shares", 0, "[2001:db8::1]:1", "[2001:db8::2]:1", false},
		{"ipv6 2", 0, "[2001:db8::3]:1", "[2001:db8::4]:1", false},
		{"ipv6 3 blocks the /64", 0, "[2001:db8::5]:1", "[2001:db8::ffff]:1", true},
		{"other /64 free", 0, "", "[2001:db8:0:1::1]:1", false},
	}
	for _, st := range steps {
		clk.add(st.at)
		if st.fail != "" {
			g.Fail(st.fail)
		}
		if got, _ := g.Blocked(st.check); got != st.blocked {
			t.Fatalf("%s: Blocked(%s) = %v, want %v", st.name, st.check, got, st.blocked)
		}
	}
	// Failures spread beyond the window never block.
	for range 10 {
		g.Fail("10.0.0.3:1")
		g.Fail("10.0.0.3:1")
		clk.add(61 * time.Second)
	}
	if b, _ := g.Blocked("10.0.0.3:1"); b {
		t.Fatal("failures spread over windows blocked")
	}
}

func TestGuardBoundedMemory(t *testing.T) {
	clk := &clock{t: time.Unix(1000, 0)}
	g := New(Config{MaxFailures: 2, MaxTracked: 100, Now: clk.now})
	g.Fail("192.0.2.1:1")
	g.Fail("192.0.2.1:1") // blocked
	for i := range 10000 {
		g.Fail("10." + strconv.Itoa(i>>16&255) + "." + strconv.Itoa(i>>8&255) + "." + strconv.Itoa(i&255) + ":1")
	}
	s := g.Stats()
	if s.Tracked > 100 || s.Evicted < 9900 {
		t.Fatalf("stats %+v: want at most 100 tracked and the rest evicted", s)
	}
	if b, _ := g.Blocked("192.0.2.1:5"); !b {
		t.Fatal("a blocked address was evicted before single failures")
	}
}

func TestWrap(t *testing.T) {
	g := New(Config{MaxFailures: 2, Block: 10 * time.Second})
	h := g.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer good" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	do := func(remote, auth string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", "/x", nil)
		r.RemoteAddr = remote
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	tests := []struct {
		remote, auth string
		status       int
	}{
		{"127.0.0.1:1", "Bearer bad", 401},
		{"127.0.0.1:1", "Bearer bad", 401},
		{"127.0.0.1:1", "Bearer bad", 429},
		{"127.0.0.1:1", "Bearer good", 429}, // the address, not the token, is blocked
		{"127.0.0.1:1", "", 401},            // no credential: not a guess, never refused
		{"127.0.0.2:1", "Bearer good", 200},
	}
	for i, tt := range tests {
		w := do(tt.remote, tt.auth)
		if w.Code != tt.status {
			t.Fatalf("request %d: %d, want %d", i, w.Code, tt.status)
		}
		if tt.status == 429 {
			if ra, err := strconv.Atoi(w.Header().Get("Retry-After")); err != nil || ra < 1 || ra > 10 {
				t.Fatalf("Retry-After %q", w.Header().Get("Retry-After"))
			}
		}
	}
	if s := g.Stats(); s.Throttled != 2 || s.Failures != 2 {
		t.Fatalf("stats %+v", s)
	}
}

func TestHasCredential(t *testing.T) {
	tests := []struct {
		name string
		req  func() *http.Request
		want bool
	}{
		{"none", func() *http.Request { return httptest.NewRequest("GET", "/v1/live", nil) }, false},
		{"bearer", func() *http.Request {
			r := httptest.NewRequest("GET", "/v1/ingest", nil)
			r.Header.Set("Authorization", "Bearer x")
			return r
		}, true},
		{"basic", func() *http.Request {
			r := httptest.NewRequest("POST", "/write", nil)
			r.SetBasicAuth("u", "p")
			return r
		}, true},
		{"token query", func() *http.Request { return httptest.NewRequest("GET", "/v1/live/sse?token=x", nil) }, true},
		{"influx v1 password", func() *http.Request { return httptest.NewRequest("POST", "/write?db=x&u=d&p=secret", nil) }, true},
	}
	for _, tt := range tests {
		if got := HasCredential(tt.req()); got != tt.want {
			t.Errorf("%s: HasCredential = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestClientBehindTrustedProxy(t *testing.T) {
	g := New(Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.0.0.0/8")}})
	plain := New(Config{})
	tests := []struct {
		name, remote string
		xff          []string
		want         string
		wantPlain    string
	}{
		{"direct client", "192.0.2.7:5000", nil, "192.0.2.7:5000", "192.0.2.7:5000"},
		{"untrusted peer's header ignored", "192.0.2.7:5000", []string{"198.51.100.1"}, "192.0.2.7:5000", "192.0.2.7:5000"},
		{"through the balancer", "127.0.0.1:40000", []string{"198.51.100.1"}, "198.51.100.1", "127.0.0.1:40000"},
		{"spoofed left part skipped", "127.0.0.1:40000", []string{"203.0.113.9, 198.51.100.1"}, "198.51.100.1", "127.0.0.1:40000"},
		{"two trusted hops", "127.0.0.1:40000", []string{"198.51.100.1", "10.1.2.3"}, "198.51.100.1", "127.0.0.1:40000"},
		{"garbage stops the walk", "127.0.0.1:40000", []string{"198.51.100.1, nonsense"}, "127.0.0.1:40000", "127.0.0.1:40000"},
		{"balancer without header", "127.0.0.1:40000", nil, "127.0.0.1:40000", "127.0.0.1:40000"},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "/v1/ingest", nil)
		r.RemoteAddr = tt.remote
		for _, v := range tt.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := g.client(r); got != tt.want {
			t.Errorf("%s: client = %q, want %q", tt.name, got, tt.want)
		}
		if got := plain.client(r); got != tt.wantPlain {
			t.Errorf("%s (no trusted proxies): client = %q, want %q", tt.name, got, tt.wantPlain)
		}
	}
}
