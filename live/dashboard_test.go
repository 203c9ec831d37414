package live

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/telemetryd/telemetryd/telemetry"
)

// TestFeedsRefuseAlike: the WebSocket and SSE feeds share one preamble, so
// a refusal (foreign origin, no valid token, shutting down) is the same
// JSON answer on both (telemetry.Refuse*, which the device endpoint uses too).
func TestFeedsRefuseAlike(t *testing.T) {
	tests := []struct {
		name     string
		shutdown bool
		header   http.Header
		status   int
		code     string
	}{
		{"foreign origin", false, http.Header{"Origin": {"https://evil.example"}, "Authorization": {"Bearer good"}}, http.StatusForbidden, telemetry.CodeOriginNotAllowed},
		{"no token", false, nil, http.StatusUnauthorized, telemetry.CodeUnauthorized},
		{"unknown token", false, http.Header{"Authorization": {"Bearer bad"}}, http.StatusUnauthorized, telemetry.CodeUnauthorized},
		{"shutting down", true, http.Header{"Authorization": {"Bearer good"}}, http.StatusServiceUnavailable, telemetry.CodeShuttingDown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startHub(t, HubConfig{})
			d := NewDashboards(DashboardConfig{
				Viewers:     fakeViewers{"good": {ID: "v", Name: "good"}},
				CheckOrigin: func(r *http.Request) bool { return r.Header.Get("Origin") == "" },
			}, h, slog.New(slog.DiscardHandler))
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { _ = d.Run(ctx); close(done) }()
			t.Cleanup(func() { cancel(); <-done })
			if tt.shutdown {
				cancel()
				<-done // Run has marked the feeds closing
			}
			for feed, handler := range map[string]http.Handler{"websocket": d, "sse": d.SSE()} {
				req := httptest.NewRequest(http.MethodGet, "/v1/live", nil)
				for k, v := range tt.header {
					req.Header[k] = v
				}
				rec := httptest.NewRecorder()
				handler.ServeHTTP(rec, req)
				var body telemetry.ErrorResponse
				if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
					t.Fatalf("%s: answer %q is not JSON: %v", feed, rec.Body.String(), err)
				}
				if rec.Code != tt.status || body.Error.Code != tt.code || rec.Header().Get("Content-Type") != "application/json" {
					t.Errorf("%s: %d %+v (%s), want %d %s", feed, rec.Code, body, rec.Header().Get("Content-Type"), tt.status, tt.code)
				}
			}
		})
	}
}
