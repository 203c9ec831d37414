// Package web is telemetryd's dashboard: the page served at / (HTML, CSS
// and plain JavaScript embedded in the binary; no build step) and the JSON
// endpoints it reads besides the live feeds, /api/v1/history,
// /api/v1/series and /api/v1/fleet.
//
// Contract: cmd/telemetryd builds the handlers once (Handler, NewAPI) and
// mounts them on its mux. The page handler only serves the embedded files
// and never blocks. The API reaches storage and the device list through the
// small interfaces declared here (HistoryReader, DeviceLister), which
// cmd/telemetryd adapts; each request blocks at most APIConfig.Timeout on
// them. Errors are answered as telemetry.ErrorResponse, like every other
// endpoint. The API owns nothing but its configuration.
//
// Security: the page is public (it holds no data); every API call needs a
// viewer token when an authenticator is configured, and a restricted
// viewer's scope is applied to every answer. The page and its assets carry
// a strict Content-Security-Policy (scripts from 'self' only, no inline
// script, connections to 'self' only) and Referrer-Policy: no-referrer,
// because the page may be opened with ?token= in its URL.
package web
