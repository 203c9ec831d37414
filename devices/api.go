package devices

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/telemetryd/telemetryd/devices/adminclient"
	"github.com/telemetryd/telemetryd/telemetry"
)

// Error codes of the admin API, answered as a telemetry.ErrorResponse.
const (
	APICodeNotFound         = "not_found"
	APICodeInvalidRequest   = telemetry.CodeInvalidRequest
	APICodeUnauthorized     = telemetry.CodeUnauthorized
	APICodeConflict         = "conflict"
	APICodeMethodNotAllowed = "method_not_allowed"
	APICodeTooLarge         = "request_too_large"
	APICodeInternal         = "internal"
	APICodeUnavailable      = "unavailable"
)

// maxAPIBody bounds an admin request body.
const maxAPIBody = 64 << 10

// maxRotationGrace bounds the grace a rotation may ask for.
const maxRotationGrace = 30 * 24 * time.Hour

// DeviceJSON and ViewerJSON are a device and a viewer as the admin API
// shows them. They are the client's types, so that the wire shape is
// stated once for both ends.
type (
	DeviceJSON = adminclient.Device
	ViewerJSON = adminclient.Viewer
)

// ToJSON converts d for the API.
func (d Device) ToJSON() DeviceJSON {
	d = cloneDevice(d)
	j := DeviceJSON{ID: string(d.ID), Name: d.Name, Kind: string(d.Kind), Labels: d.Labels, Gateway: string(d.Gateway),
		CreatedAt: d.CreatedAt.UTC(), Revoked: d.Revoked}
	if !d.LastSeenAt.IsZero() {
		t := d.LastSeenAt.UTC()
		j.LastSeenAt = &t
	}
	return j
}

// ToJSON converts v for the API.
func (v Viewer) ToJSON() ViewerJSON {
	v = cloneViewer(v)
	return ViewerJSON{ID: v.ID, Name: v.Name, Scope: v.Scope, CreatedAt: v.CreatedAt.UTC(), Revoked: v.Revoked}
}

// AdminAPI serves /api/v1/devices and /api/v1/viewers for the operator.
type AdminAPI struct {
	reg *Registry
	log *slog.Logger
	mux *http.ServeMux
}

// NewAdminAPI returns the admin API handler, to be mounted at /api/v1/.
// Every request needs "Authorization: Bearer <admin token>"; without a
// configured admin token the API answers 404 to everything.
func NewAdminAPI(reg *Registry, log *slog.Logger) *AdminAPI {
	a := &AdminAPI{reg: reg, log: log, mux: http.NewServeMux()}
	m := a.mux
	m.HandleFunc("POST /api/v1/devices", a.createDevice)
	m.HandleFunc("GET /api/v1/devices", a.listDevices)
	m.HandleFunc("GET /api/v1/devices/{id}", a.getDevice)
	m.HandleFunc("PATCH /api/v1/devices/{id}", a.updateDevice)
	m.HandleFunc("DELETE /api/v1/devices/{id}", a.deleteDevice)
	m.HandleFunc("POST /api/v1/devices/{id}/rotate", a.rotateDevice)
	m.HandleFunc("POST /api/v1/devices/{id}/revoke", a.revokeDevice)
	m.HandleFunc("POST /api/v1/viewers", a.createViewer)
	m.HandleFunc("GET /api/v1/viewers", a.listViewers)
	m.HandleFunc("GET /api/v1/viewers/{id}", a.getViewer)
	m.HandleFunc("POST /api/v1/viewers/{id}/revoke", a.revokeViewer)
	m.HandleFunc("DELETE /api/v1/viewers/{id}", a.deleteViewer)
	// Known paths with another method: 405 in JSON rather than the mux's text.
	for _, p := range []string{"/api/v1/devices", "/api/v1/devices/{id}", "/api/v1/devices/{id}/rotate", "/api/v1/devices/{id}/revoke",
		"/api/v1/viewers", "/api/v1/viewers/{id}", "/api/v1/viewers/{id}/revoke"} {
		m.HandleFunc(p, func(w http.ResponseWriter, _ *http.Request) {
			telemetry.WriteHTTPError(w, http.StatusMethodNotAllowed, APICodeMethodNotAllowed, "method not allowed on this resource")
		})
	}
	m.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		telemetry.WriteHTTPError(w, http.StatusNotFound, APICodeNotFound, "no such API resource")
	})
	return a
}

func (a *AdminAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store") // responses may carry tokens
	if !a.reg.AdminEnabled() {
		telemetry.WriteHTTPError(w, http.StatusNotFound, APICodeNotFound, "the admin API is disabled: no admin token is configured")
		return
	}
	// The header only: a token in a URL ends up in proxies' logs.
	tok, ok := bearer(r)
	if !ok || !a.reg.AuthenticateAdmin(tok) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="telemetryd admin"`)
		telemetry.WriteHTTPError(w, http.StatusUnauthorized, APICodeUnauthorized, "the admin token is required (Authorization: Bearer …)")
		return
	}
	a.mux.ServeHTTP(w, r)
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:]), true
	}
	return "", false
}

func writeAPIJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// fail answers err with its status and stable code; anything unexpected is
// logged and answered without detail.
func (a *AdminAPI) fail(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		telemetry.WriteHTTPError(w, http.StatusNotFound, APICodeNotFound, err.Error())
	case errors.Is(err, ErrInvalid):
		telemetry.WriteHTTPError(w, http.StatusBadRequest, APICodeInvalidRequest, err.Error())
	case errors.Is(err, ErrConflict):
		telemetry.WriteHTTPError(w, http.StatusConflict, APICodeConflict, err.Error())
	case errors.Is(err, ErrUnavailable):
		a.log.Warn("admin API request refused: registry store unavailable", "error", err)
		w.Header().Set("Retry-After", "5")
		telemetry.WriteHTTPError(w, http.StatusServiceUnavailable, APICodeUnavailable, "the registry store is unavailable; nothing was changed, retry later")
	default:
		a.log.Error("admin API request failed", "error", err)
		telemetry.WriteHTTPError(w, http.StatusInternalServerError, APICodeInternal, "internal error; see the server log")
	}
}

// decode reads one JSON object into v: unknown fields, trailing data and
// bodies over 64 KiB are refused. An empty body is allowed when optional.
func decode(w http.ResponseWriter, r *http.Request, v any, optional bool) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAPIBody))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			telemetry.WriteHTTPError(w, http.StatusRequestEntityTooLarge, APICodeTooLarge, "request body over 64 KiB")
		} else {
			telemetry.WriteHTTPError(w, http.StatusBadRequest, APICodeInvalidRequest, "reading the request body failed")
		}
		return false
	}
	if optional && len(bytes.TrimSpace(body)) == 0 {
		return true
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		telemetry.WriteHTTPError(w, http.StatusBadRequest, APICodeInvalidRequest, "invalid JSON body: "+err.Error())
		return false
	}
	if dec.More() {
		telemetry.WriteHTTPError(w, http.StatusBadRequest, APICodeInvalidRequest, "invalid JSON body: trailing data")
		return false
	}
	return true
}

type createDeviceRequest struct {
	Name    string            `json:"name"`
	Kind    Kind              `json:"kind"`
	Labels  map[string]string `json:"labels"`
	Gateway string            `json:"gateway"`
}

type deviceTokenResponse struct {
	Device DeviceJSON `json:"device"`
	Token  string     `json:"token,omitempty"`
}

func (a *AdminAPI) createDevice(w http.ResponseWriter, r *http.Request) {
	var req createDeviceRequest
	if !decode(w, r, &req, false) {
		return
	}
	d, token, err := a.reg.CreateDevice(r.Context(), DeviceSpec{
		Name: req.Name, Kind: req.Kind, Labels: req.Labels, Gateway: telemetry.DeviceID(req.Gateway),
	})
	if err != nil {
		a.fail(w, err)
		return
	}
	w.Header().Set("Location", "/api/v1/devices/"+string(d.ID))
	writeAPIJSON(w, http.StatusCreated, deviceTokenResponse{Device: d.ToJSON(), Token: token})
}

type listDevicesResponse struct {
	Devices    []DeviceJSON `json:"devices"`
	NextCursor string       `json:"next_cursor"`
}

func (a *AdminAPI) listDevices(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	o := ListOptions{Kind: Kind(q.Get("kind")), Gateway: telemetry.DeviceID(q.Get("gateway"))}
	if o.Kind != "" && o.Kind != KindDevice && o.Kind != KindGateway {
		telemetry.WriteHTTPError(w, http.StatusBadRequest, APICodeInvalidRequest, `kind must be "device" or "gateway"`)
		return
	}
	for _, l := range q["label"] {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			telemetry.WriteHTTPError(w, http.StatusBadRequest, APICodeInvalidRequest, "label filters are key=value")
			return
		}
		if o.Labels == nil {
			o.Labels = map[string]string{}
		}
		o.Labels[k] = v
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			telemetry.WriteHTTPError(w, http.StatusBadRequest, APICodeInvalidRequest, "limit must be 1 to 1000")
			return
		}
		o.Limit = n
	}
	if c := q.Get("cursor"); c != "" {
		after, err := base64.RawURLEncoding.DecodeString(c)
		if err != nil || len(after) == 0 || len(after) > 128 {
			telemetry.WriteHTTPError(w, http.StatusBadRequest, APICodeInvalidRequest, "invalid cursor")
			return
		}
		o.After = telemetry.DeviceID(after)
	}
	devs, more := a.reg.ListDevices(o)
	resp := listDevicesResponse{Devices: make([]DeviceJSON, 0, len(devs))}
	for _, d := range devs {
		resp.Devices = append(resp.Devices, d.ToJSON())
	}
	if more && len(devs) > 0 {
		resp.NextCursor = base64.RawURLEncoding.EncodeToString([]byte(devs[len(devs)-1].ID))
	}
	writeAPIJSON(w, http.StatusOK, resp)
}

type deviceResponse struct {
	Device DeviceJSON `json:"device"`
}

func (a *AdminAPI) getDevice(w http.ResponseWriter, r *http.Request) {
	d, err := a.reg.Device(telemetry.DeviceID(r.PathValue("id")))
	if err != nil {
		a.fail(w, err)
		return
	}
	writeAPIJSON(w, http.StatusOK, deviceResponse{Device: d.ToJSON()})
}

type updateDeviceRequest struct {
	Name    *string            `json:"name"`
	Labels  *map[string]string `json:"labels"`
	Gateway *string            `json:"gateway"`
}

func (a *AdminAPI) updateDevice(w http.ResponseWriter, r *http.Request) {
	var req updateDeviceRequest
	if !decode(w, r, &req, false) {
		return
	}
	u := DeviceUpdate{Name: req.Name}
	if req.Labels != nil {
		u.Labels = *req.Labels
		if u.Labels == nil {
			u.Labels = map[string]string{}
		}
	}
	if req.Gateway != nil {
		g := telemetry.DeviceID(*req.Gateway)
		u.Gateway = &g
	}
	d, err := a.reg.UpdateDevice(r.Context(), telemetry.DeviceID(r.PathValue("id")), u)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeAPIJSON(w, http.StatusOK, deviceResponse{Device: d.ToJSON()})
}

func (a *AdminAPI) deleteDevice(w http.ResponseWriter, r *http.Request) {
	if err := a.reg.DeleteDevice(r.Context(), telemetry.DeviceID(r.PathValue("id"))); err != nil {
		a.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

type rotateRequest struct {
	Grace *string `json:"grace"`
}

func (a *AdminAPI) rotateDevice(w http.ResponseWriter, r *http.Request) {
	var req rotateRequest
	if !decode(w, r, &req, true) {
		return
	}
	grace := time.Duration(-1) // the configured default
	if req.Grace != nil {
		g, err := time.ParseDuration(*req.Grace)
		if err != nil || g < 0 || g > maxRotationGrace {
			telemetry.WriteHTTPError(w, http.StatusBadRequest, APICodeInvalidRequest, fmt.Sprintf("grace must be a duration from 0s to %s, e.g. \"10m\"", maxRotationGrace))
			return
		}
		grace = g
	}
	d, token, err := a.reg.RotateDevice(r.Context(), telemetry.DeviceID(r.PathValue("id")), grace)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeAPIJSON(w, http.StatusOK, deviceTokenResponse{Device: d.ToJSON(), Token: token})
}

func (a *AdminAPI) revokeDevice(w http.ResponseWriter, r *http.Request) {
	d, err := a.reg.RevokeDevice(r.Context(), telemetry.DeviceID(r.PathValue("id")))
	if err != nil {
		a.fail(w, err)
		return
	}
	writeAPIJSON(w, http.StatusOK, deviceResponse{Device: d.ToJSON()})
}

type createViewerRequest struct {
	Name  string            `json:"name"`
	Scope map[string]string `json:"scope"`
}

type viewerTokenResponse struct {
	Viewer ViewerJSON `json:"viewer"`
	Token  string     `json:"token,omitempty"`
}

type viewerResponse struct {
	Viewer ViewerJSON `json:"viewer"`
}

type listViewersResponse struct {
	Viewers []ViewerJSON `json:"viewers"`
}

func (a *AdminAPI) createViewer(w http.ResponseWriter, r *http.Request) {
	var req createViewerRequest
	if !decode(w, r, &req, false) {
		return
	}
	v, token, err := a.reg.CreateViewer(r.Context(), req.Name, req.Scope)
	if err != nil {
		a.fail(w, err)
		return
	}
	w.Header().Set("Location", "/api/v1/viewers/"+v.ID)
	writeAPIJSON(w, http.StatusCreated, viewerTokenResponse{Viewer: v.ToJSON(), Token: token})
}

func (a *AdminAPI) listViewers(w http.ResponseWriter, _ *http.Request) {
	vs := a.reg.Viewers()
	resp := listViewersResponse{Viewers: make([]ViewerJSON, 0, len(vs))}
	for _, v := range vs {
		resp.Viewers = append(resp.Viewers, v.ToJSON())
	}
	writeAPIJSON(w, http.StatusOK, resp)
}

func (a *AdminAPI) getViewer(w http.ResponseWriter, r *http.Request) {
	v, err := a.reg.Viewer(r.PathValue("id"))
	if err != nil {
		a.fail(w, err)
		return
	}
	writeAPIJSON(w, http.StatusOK, viewerResponse{Viewer: v.ToJSON()})
}

func (a *AdminAPI) revokeViewer(w http.ResponseWriter, r *http.Request) {
	v, err := a.reg.RevokeViewer(r.Context(), r.PathValue("id"))
	if err != nil {
		a.fail(w, err)
		return
	}
	writeAPIJSON(w, http.StatusOK, viewerResponse{Viewer: v.ToJSON()})
}

func (a *AdminAPI) deleteViewer(w http.ResponseWriter, r *http.Request) {
	if err := a.reg.DeleteViewer(r.Context(), r.PathValue("id")); err != nil {
		a.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
