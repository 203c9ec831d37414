package telemetry

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestWriteHTTPError(t *testing.T) {
	tests := []struct {
		name      string
		write     func(w http.ResponseWriter)
		status    int
		body      string
		challenge string // WWW-Authenticate
	}{
		{"shutting down", RefuseShuttingDown, 503, `{"error":{"code":"shutting_down","message":"server is shutting down"}}` + "\n", ""},
		{"origin", RefuseOrigin, 403, `{"error":{"code":"origin_not_allowed","message":"origin not allowed"}}` + "\n", ""},
		{"unauthorized", func(w http.ResponseWriter) { RefuseUnauthorized(w, "viewer") }, 401,
			`{"error":{"code":"unauthorized","message":"a valid viewer token is required"}}` + "\n", `Bearer realm="telemetryd"`},
		{"own challenge kept", func(w http.ResponseWriter) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="admin"`)
			WriteHTTPError(w, 401, CodeUnauthorized, "admin token required")
		}, 401, `{"error":{"code":"unauthorized","message":"admin token required"}}` + "\n", `Bearer realm="admin"`},
		{"escaped", func(w http.ResponseWriter) { WriteHTTPError(w, 400, CodeInvalidRequest, `"<x>"`) }, 400,
			`{"error":{"code":"invalid_request","message":"\"\u003cx\u003e\""}}` + "\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			tt.write(rec)
			h := rec.Header()
			if rec.Code != tt.status || rec.Body.String() != tt.body {
				t.Errorf("got %d %q, want %d %q", rec.Code, rec.Body.String(), tt.status, tt.body)
			}
			if h.Get("Content-Type") != "application/json" || h.Get("Cache-Control") != "no-store" || h.Get("WWW-Authenticate") != tt.challenge {
				t.Errorf("headers %v", h)
			}
		})
	}
}

func TestBearerToken(t *testing.T) {
	tests := []struct {
		header, url, want string
	}{
		{"Bearer abc", "/", "abc"},
		{"bearer  abc ", "/?token=q", "abc"},
		{"Basic abc", "/?token=q", "q"},
		{"", "/?token=q", "q"},
		{"Bearer", "/", ""},
		{"", "/", ""},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodGet, tt.url, nil)
		if tt.header != "" {
			r.Header.Set("Authorization", tt.header)
		}
		if got := BearerToken(r); got != tt.want {
			t.Errorf("%q %s: got %q, want %q", tt.header, tt.url, got, tt.want)
		}
	}
}
