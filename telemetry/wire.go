package telemetry

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// WebSocket close codes (RFC 6455 §7.4.1) used by every socket the service
// serves, device and dashboard alike.
const (
	CloseGoingAway   = 1001 // server shutting down
	CloseUnsupported = 1003 // a message of a kind the endpoint does not take
	ClosePolicy      = 1008 // the credential was revoked
	CloseTooBig      = 1009 // a frame over the endpoint's size limit
	CloseInternal    = 1011 // the server failed
	CloseTryLater    = 1013 // too slow, overloaded or over a rate: reconnect later
)

// Error codes of the HTTP answers every endpoint shares. Endpoints add
// their own codes in the same ErrorResponse shape.
const (
	CodeShuttingDown     = "shutting_down"
	CodeOriginNotAllowed = "origin_not_allowed"
	CodeUnauthorized     = "unauthorized"
	CodeInvalidRequest   = "invalid_request"
)

// ErrorBody is the detail of an error answer: a stable code clients switch
// on and a message for people.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// RetryAfterMS, on answers that ask the client to come back (429,
	// 503), is the Retry-After header in milliseconds.
	RetryAfterMS int64 `json:"retry_after_ms,omitempty"`
}

// ErrorResponse is the JSON every HTTP endpoint answers an error with:
// {"error":{"code":…,"message":…}}.
type ErrorResponse struct {
	Error ErrorBody `json:"error"`
}

// WriteHTTPRetry answers like WriteHTTPError, asking the client to retry
// after wait: a Retry-After header in whole seconds (rounded up, at least 1)
// and the exact wait in the body.
func WriteHTTPRetry(w http.ResponseWriter, status int, code, message string, wait time.Duration) {
	secs := max(int64((wait+time.Second-1)/time.Second), 1)
	w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	writeError(w, status, ErrorBody{Code: code, Message: message, RetryAfterMS: wait.Milliseconds()})
}

// WriteHTTPError answers with status and an ErrorResponse. Error answers are
// never cached (Cache-Control: no-store), and a 401 carries the Bearer
// challenge RFC 7235 requires unless the caller has set its own
// WWW-Authenticate.
func WriteHTTPError(w http.ResponseWriter, status int, code, message string) {
	writeError(w, status, ErrorBody{Code: code, Message: message})
}

func writeError(w http.ResponseWriter, status int, body ErrorBody) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	if status == http.StatusUnauthorized && h.Get("WWW-Authenticate") == "" {
		h.Set("WWW-Authenticate", `Bearer realm="telemetryd"`)
	}
	w.WriteHeader(status)
	body.Message = ClipMessage(body.Message)
	_ = json.NewEncoder(w).Encode(ErrorResponse{Error: body})
}

// The refusals below are what every streaming endpoint (device WebSocket,
// dashboard WebSocket, SSE) answers before it upgrades or streams, so that
// a client sees the same answer whichever endpoint refused it.

// RefuseShuttingDown answers 503 shutting_down: the endpoint is draining.
func RefuseShuttingDown(w http.ResponseWriter) {
	WriteHTTPError(w, http.StatusServiceUnavailable, CodeShuttingDown, "server is shutting down")
}

// RefuseOrigin answers 403 origin_not_allowed.
func RefuseOrigin(w http.ResponseWriter) {
	WriteHTTPError(w, http.StatusForbidden, CodeOriginNotAllowed, "origin not allowed")
}

// RefuseUnauthorized answers 401 unauthorized; credential names the token
// the endpoint wants ("device", "viewer").
func RefuseUnauthorized(w http.ResponseWriter, credential string) {
	WriteHTTPError(w, http.StatusUnauthorized, CodeUnauthorized, "a valid "+credential+" token is required")
}

// BearerToken returns the token from "Authorization: Bearer …" or, for
// clients that cannot set headers (browsers' WebSocket and EventSource,
// constrained devices), "?token=".
func BearerToken(r *http.Request) string {
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return r.URL.Query().Get("token")
}
