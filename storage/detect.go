package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/telemetryd/telemetryd/telemetry"
)

// Server is what an InfluxDB said about itself.
type Server struct {
	// Major is 1, 2 or 3.
	Major int
	// Version is the version as the server reported it ("1.8.10",
	// "v2.7.11", "3.0.1", or "unknown" for a 1.x built without stamping).
	Version string
}

// ErrUnknownServer is matched (errors.Is) by Detect's error when the server
// answered, but in none of the ways InfluxDB 1.x, 2.x or 3.x do. It also
// matches telemetry.ErrPermanent: asking again gives the same answer.
var ErrUnknownServer = errors.New("not an InfluxDB 1.x, 2.x or 3.x server")

type unknownServerError struct{ msg string }

func (e *unknownServerError) Error() string { return e.msg }
func (e *unknownServerError) Unwrap() []error {
	return []error{ErrUnknownServer, telemetry.ErrPermanent}
}

// maxProbeBody bounds what Detect reads of an answer.
const maxProbeBody = 64 << 10

// Detect asks the server at base which InfluxDB it is, by what it says:
//
//   - GET /ping: 1.x and 2.x answer 204 with X-Influxdb-Version ("1.8.10",
//     "v2.7.11"); 3.x answers 200 with the same header ("3.0.1") and a JSON
//     body {"version":..,"revision":..}. influxd 1.x built without version
//     stamping reports "unknown" (its default; 2.x's is "dev").
//   - GET /health, when /ping gave no usable version: 1.8 and 2.x answer
//     {"name":"influxdb","status":"pass","version":..}.
//
// token authenticates the probes (3.x may require it for /ping): "user:password"
// is sent as basic auth, anything else as "Token". A network failure is
// returned as is (the caller may retry); a server that answers but says
// nothing known fails with ErrUnknownServer, which retrying will not change.
// Detect keeps no state, so it can be retried in the background.
func Detect(ctx context.Context, httpc *http.Client, base *url.URL, token string) (Server, error) {
	status, hdr, body, err := probe(ctx, httpc, base, "ping", token)
	if err != nil {
		return Server{}, fmt.Errorf("influxdb ping: %w", err)
	}
	if status == http.StatusUnauthorized || status == http.StatusForbidden {
		return Server{}, fmt.Errorf("influxdb ping: status %d: the token was refused: %w", status, telemetry.ErrPermanent)
	}
	var pingVersion string
	if status >= 200 && status < 300 {
		pingVersion = hdr.Get("X-Influxdb-Version")
		if pingVersion == "" {
			pingVersion = jsonVersion(body, false)
		}
		if s, ok := parseServer(pingVersion); ok {
			return s, nil
		}
	}
	hstatus, _, hbody, err := probe(ctx, httpc, base, "health", token)
	if err != nil {
		return Server{}, fmt.Errorf("influxdb health: %w", err)
	}
	if hstatus >= 200 && hstatus < 300 || hstatus == http.StatusServiceUnavailable {
		if s, ok := parseServer(jsonVersion(hbody, true)); ok {
			return s, nil
		}
	}
	return Server{}, &unknownServerError{msg: fmt.Sprintf(
		"influxdb at %s: /ping answered %d (version %q), /health answered %d: %s",
		base.Redacted(), status, clipQ(pingVersion), hstatus, ErrUnknownServer)}
}

func probe(ctx context.Context, httpc *http.Client, base *url.URL, path, token string) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base.JoinPath(path).String(), nil)
	if err != nil {
		return 0, nil, nil, err
	}
	setAuth(req, token)
	req.Header.Set("User-Agent", "telemetryd")
	resp, err := httpc.Do(req)
	if err != nil {
		return 0, nil, nil, withContext(ctx, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxProbeBody))
	if err != nil {
		return 0, nil, nil, withContext(ctx, err)
	}
	return resp.StatusCode, resp.Header, body, nil
}

// setAuth authenticates a request the way every version accepts:
// "user:password" as basic auth (1.x), otherwise "Token" (2.x, and 3.x,
// which accepts it on its compatibility APIs).
func setAuth(req *http.Request, token string) {
	if token == "" {
		return
	}
	if user, pass, ok := strings.Cut(token, ":"); ok {
		req.SetBasicAuth(user, pass)
		return
	}
	req.Header.Set("Authorization", "Token "+token)
}

// jsonVersion returns body's "version"; with influx set, only when "name"
// is "influxdb" (the /health shape).
func jsonVersion(body []byte, influx bool) string {
	var v struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	}
	if json.Unmarshal(body, &v) != nil || (influx && v.Name != "influxdb") {
		return ""
	}
	return v.Version
}

// parseServer reads the major version from a reported version.
func parseServer(v string) (Server, bool) {
	if v == "unknown" {
		return Server{Major: 1, Version: v}, true
	}
	num, _, _ := strings.Cut(strings.TrimPrefix(v, "v"), ".")
	major, err := strconv.Atoi(num)
	if err != nil || major < 1 || major > 3 {
		return Server{}, false
	}
	return Server{Major: major, Version: v}, true
}
