package web

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, path string, header http.Header) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestPage(t *testing.T) {
	h := Handler()
	page := get(t, h, "/", nil)
	if page.Code != http.StatusOK {
		t.Fatalf("GET /: %d", page.Code)
	}
	hdr := page.Header()
	for k, want := range map[string]string{
		"Content-Type":           "text/html; charset=utf-8",
		"Cache-Control":          "no-cache",
		"X-Content-Type-Options": "nosniff",
		"Referrer-Policy":        "no-referrer",
	} {
		if got := hdr.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	csp := hdr.Get("Content-Security-Policy")
	for _, d := range []string{"default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, d) {
			t.Errorf("CSP %q lacks %q", csp, d)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
		t.Errorf("CSP %q allows inline code", csp)
	}
	body := page.Body.String()
	// No inline script or style: everything comes from /static/ (the CSP
	// would block it anyway).
	if regexp.MustCompile(`<script>|<script [^>]*>[^<]|<style|style="|\son[a-z]+="`).MatchString(body) {
		t.Fatalf("inline script, style or handler in the page")
	}

	// Every asset the page names carries its version and is served with it.
	refs := regexp.MustCompile(`"/static/([a-z.]+)\?v=([0-9a-f]{12})"`).FindAllStringSubmatch(body, -1)
	if len(refs) < 4 {
		t.Fatalf("asset references %v", refs)
	}
	types := map[string]string{".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
	for _, ref := range refs {
		name, v := ref[1], ref[2]
		rec := get(t, h, "/static/"+name+"?v="+v, nil)
		if rec.Code != http.StatusOK || rec.Body.Len() == 0 {
			t.Fatalf("%s: %d", name, rec.Code)
		}
		if got := rec.Header().Get("Cache-Control"); got != "public, max-age=31536000, immutable" {
			t.Errorf("%s with its version: Cache-Control %q", name, got)
		}
		if got, want := rec.Header().Get("Content-Type"), types[name[strings.LastIndex(name, "."):]]; got != want {
			t.Errorf("%s: Content-Type %q, want %q", name, got, want)
		}
		// Without (or with another) version it must be revalidated.
		old := get(t, h, "/static/"+name+"?v=000000000000", nil)
		if got := old.Header().Get("Cache-Control"); got != "no-cache" {
			t.Errorf("%s with a stale version: Cache-Control %q", name, got)
		}
		// Revalidation by ETag.
		if nm := get(t, h, "/static/"+name, http.Header{"If-None-Match": {old.Header().Get("ETag")}}); nm.Code != http.StatusNotModified {
			t.Errorf("%s: If-None-Match gave %d", name, nm.Code)
		}
	}
	if nm := get(t, h, "/", http.Header{"If-None-Match": {hdr.Get("ETag")}}); nm.Code != http.StatusNotModified {
		t.Errorf("/: If-None-Match gave %d", nm.Code)
	}

	for _, p := range []string{"/static/nope.js", "/static/", "/static/index.html", "/other", "/static/../web.go"} {
		if rec := get(t, h, p, nil); rec.Code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, rec.Code)
		}
	}
	req := httptest.NewRequest(http.MethodPost, "/", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %d", rec.Code)
	}
}

func TestPageOnMux(t *testing.T) {
	mux := http.NewServeMux()
	h := Handler()
	mux.Handle("GET /{$}", h)
	mux.Handle("GET /static/", h)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for path, want := range map[string]int{"/": 200, "/static/app.js": 200, "/static/chart.js": 200, "/nothing": 404} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
}
