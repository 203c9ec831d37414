package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var staticFiles embed.FS

// contentSecurityPolicy is sent with every page and asset. connect-src
// 'self' covers the page's fetches, its EventSource and (in every current
// browser) its same-origin ws:// or wss:// socket.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

type asset struct {
	name, contentType, etag string
	body                    []byte
	version                 string // short content hash, the ?v= that makes a URL immutable
}

type pages struct {
	index  asset
	assets map[string]*asset
}

// Handler serves the dashboard page at / and its assets at /static/…; any
// other path is 404. Mount it for "GET /{$}" and "GET /static/".
//
// Asset URLs in the page carry their content hash (?v=…): such a URL is
// cached for a year as immutable; the page itself is revalidated (ETag) on
// every load, so a new binary is picked up at once.
func Handler() http.Handler {
	p := &pages{assets: map[string]*asset{}}
	err := fs.WalkDir(staticFiles, "static", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := staticFiles.ReadFile(name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		a := &asset{
			name:        strings.TrimPrefix(name, "static/"),
			contentType: contentType(name),
			body:        body,
			version:     hex.EncodeToString(sum[:6]),
		}
		a.etag = `"` + a.version + `"`
		p.assets[a.name] = a
		return nil
	})
	if err != nil {
		panic("web: embedded files unreadable: " + err.Error()) // impossible: they are compiled in
	}
	idx, ok := p.assets["index.html"]
	if !ok {
		panic("web: static/index.html is missing")
	}
	html := idx.body
	for name, a := range p.assets {
		html = bytes.ReplaceAll(html, []byte(`"/static/`+name+`"`), []byte(`"/static/`+name+`?v=`+a.version+`"`))
	}
	sum := sha256.Sum256(html)
	p.index = asset{name: "index.html", contentType: idx.contentType, body: html, version: hex.EncodeToString(sum[:6])}
	p.index.etag = `"` + p.index.version + `"`
	return p
}

func contentType(name string) string {
	switch path.Ext(name) {
	case ".html":
		return "text/html; charset=utf-8"
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".svg":
		return "image/svg+xml"
	case ".png":
		return "image/png"
	case ".txt", ".md":
		return "text/plain; charset=utf-8"
	}
	return "application/octet-stream"
}

func (p *pages) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	securityHeaders(w.Header())
	var a *asset
	switch {
	case r.URL.Path == "/" || r.URL.Path == "/index.html":
		a = &p.index
		w.Header().Set("Cache-Control", "no-cache")
	case strings.HasPrefix(r.URL.Path, "/static/"):
		a = p.assets[strings.TrimPrefix(r.URL.Path, "/static/")]
		if a == nil || a.name == "index.html" {
			http.NotFound(w, r)
			return
		}
		if r.URL.Query().Get("v") == a.version {
			w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
		} else {
			w.Header().Set("Cache-Control", "no-cache")
		}
	default:
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", a.contentType)
	w.Header().Set("ETag", a.etag)
	http.ServeContent(w, r, a.name, time.Time{}, bytes.NewReader(a.body))
}

func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
}
