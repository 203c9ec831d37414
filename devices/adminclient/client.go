package adminclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// MaxAnswerBytes bounds an answer the client reads: a full page of 1000
// devices, each with the most labels the registry allows, fits with room.
const MaxAnswerBytes = 16 << 20

// DefaultTimeout bounds one request when New is given no *http.Client.
const DefaultTimeout = 30 * time.Second

// ErrAnswerTooLarge: the service answered more than MaxAnswerBytes.
var ErrAnswerTooLarge = errors.New("admin API: answer over the size limit")

// APIError is an admin API error answer ({"error":{"code","message"}}).
// Code is the API's stable code ("not_found", "unauthorized", …), or
// "http_error" when the body was not the API's JSON (a proxy's page).
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("admin API: %s (HTTP %d): %s", e.Code, e.Status, e.Message)
}

// Device is a device as the admin API shows it.
type Device struct {
	ID         string            `json:"id"`
	Name       string            `json:"name"`
	Kind       string            `json:"kind"`
	Labels     map[string]string `json:"labels"`
	Gateway    string            `json:"gateway"`
	CreatedAt  time.Time         `json:"created_at"`
	LastSeenAt *time.Time        `json:"last_seen_at"`
	Revoked    bool              `json:"revoked"`
}

// Viewer is a dashboard viewer as the admin API shows it.
type Viewer struct {
	ID        string            `json:"id"`
	Name      string            `json:"name"`
	Scope     map[string]string `json:"scope"`
	CreatedAt time.Time         `json:"created_at"`
	Revoked   bool              `json:"revoked"`
}

// DeviceToken is a device with the token just issued for it; the token is
// shown exactly once.
type DeviceToken struct {
	Device Device `json:"device"`
	Token  string `json:"token"`
}

// ViewerToken is a viewer with the token just issued for it.
type ViewerToken struct {
	Viewer Viewer `json:"viewer"`
	Token  string `json:"token"`
}

// DevicePage is one page of a device listing; NextCursor is empty on the
// last page.
type DevicePage struct {
	Devices    []Device `json:"devices"`
	NextCursor string   `json:"next_cursor"`
}

// NewDevice is what CreateDevice registers.
type NewDevice struct {
	Name    string            `json:"name"`
	Kind    string            `json:"kind"` // "device" or "gateway"
	Labels  map[string]string `json:"labels,omitempty"`
	Gateway string            `json:"gateway,omitempty"` // the gateway's id, for a child
}

// DeviceFilter selects devices for ListDevices; zero fields select all.
type DeviceFilter struct {
	Labels  map[string]string // all must match
	Kind    string
	Gateway string
	Limit   int    // page size; 0: the server's default
	Cursor  string // a previous page's NextCursor
}

// DeviceChange is a partial update: nil fields stay as they are. Labels
// replace all labels; a non-nil empty map removes them. Gateway "" unassigns.
type DeviceChange struct {
	Name    *string
	Labels  map[string]string
	Gateway *string
}

// Client calls one service's admin API. It is safe for concurrent use.
type Client struct {
	base  string
	token string
	http  *http.Client
}

// New returns a client for the service at baseURL (http(s)://host:port)
// authenticating with the operator token. hc nil means a client with
// DefaultTimeout.
func New(baseURL, token string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("admin API: base URL %q: want http(s)://host:port", baseURL)
	}
	if token == "" {
		return nil, errors.New("admin API: no admin token")
	}
	if hc == nil {
		hc = &http.Client{Timeout: DefaultTimeout}
	}
	return &Client{base: strings.TrimSuffix(baseURL, "/"), token: token, http: hc}, nil
}

// CreateDevice registers a device and returns it with its first token.
func (c *Client) CreateDevice(ctx context.Context, d NewDevice) (DeviceToken, error) {
	var out DeviceToken
	if err := c.do(ctx, http.MethodPost, "/api/v1/devices", d, &out); err != nil {
		return DeviceToken{}, err
	}
	if out.Device.ID == "" || out.Token == "" {
		return DeviceToken{}, errors.New("admin API: created device without id or token")
	}
	return out, nil
}

// ListDevices returns one page of the devices f selects, in id order.
func (c *Client) ListDevices(ctx context.Context, f DeviceFilter) (DevicePage, error) {
	q := url.Values{}
	for _, k := range slices.Sorted(maps.Keys(f.Labels)) {
		q.Add("label", k+"="+f.Labels[k])
	}
	if f.Kind != "" {
		q.Set("kind", f.Kind)
	}
	if f.Gateway != "" {
		q.Set("gateway", f.Gateway)
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	if f.Cursor != "" {
		q.Set("cursor", f.Cursor)
	}
	path := "/api/v1/devices"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out DevicePage
	if err := c.do(ctx, http.MethodGet, path, nil, &out); err != nil {
		return DevicePage{}, err
	}
	return out, nil
}

// Device returns one device.
func (c *Client) Device(ctx context.Context, id string) (Device, error) {
	return c.device(ctx, http.MethodGet, devicePath(id), nil)
}

// UpdateDevice changes what ch names and returns the device as it is now.
func (c *Client) UpdateDevice(ctx context.Context, id string, ch DeviceChange) (Device, error) {
	body := map[string]any{}
	if ch.Name != nil {
		body["name"] = *ch.Name
	}
	if ch.Labels != nil {
		body["labels"] = ch.Labels
	}
	if ch.Gateway != nil {
		body["gateway"] = *ch.Gateway
	}
	return c.device(ctx, http.MethodPatch, devicePath(id), body)
}

// RotateDevice issues a new token; the previous one keeps working for
// grace. A negative grace means the server's configured default.
func (c *Client) RotateDevice(ctx context.Context, id string, grace time.Duration) (DeviceToken, error) {
	body := map[string]any{}
	if grace >= 0 {
		body["grace"] = grace.String()
	}
	var out DeviceToken
	if err := c.do(ctx, http.MethodPost, devicePath(id)+"/rotate", body, &out); err != nil {
		return DeviceToken{}, err
	}
	return out, nil
}

// RevokeDevice ends the device's access at once (its sockets are closed).
func (c *Client) RevokeDevice(ctx context.Context, id string) (Device, error) {
	return c.device(ctx, http.MethodPost, devicePath(id)+"/revoke", nil)
}

// DeleteDevice removes the device and its credentials.
func (c *Client) DeleteDevice(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, devicePath(id), nil, nil)
}

// CreateViewer registers a dashboard viewer restricted to readings carrying
// every scope tag (none: unrestricted) and returns it with its token.
func (c *Client) CreateViewer(ctx context.Context, name string, scope map[string]string) (ViewerToken, error) {
	var out ViewerToken
	if err := c.do(ctx, http.MethodPost, "/api/v1/viewers", map[string]any{"name": name, "scope": scope}, &out); err != nil {
		return ViewerToken{}, err
	}
	return out, nil
}

// Viewers lists every viewer.
func (c *Client) Viewers(ctx context.Context) ([]Viewer, error) {
	var out struct {
		Viewers []Viewer `json:"viewers"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/viewers", nil, &out); err != nil {
		return nil, err
	}
	return out.Viewers, nil
}

// Viewer returns one viewer.
func (c *Client) Viewer(ctx context.Context, id string) (Viewer, error) {
	return c.viewer(ctx, http.MethodGet, viewerPath(id))
}

// RevokeViewer ends the viewer's access at once (its dashboards are closed).
func (c *Client) RevokeViewer(ctx context.Context, id string) (Viewer, error) {
	return c.viewer(ctx, http.MethodPost, viewerPath(id)+"/revoke")
}

// DeleteViewer removes the viewer.
func (c *Client) DeleteViewer(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, viewerPath(id), nil, nil)
}

func devicePath(id string) string { return "/api/v1/devices/" + url.PathEscape(id) }
func viewerPath(id string) string { return "/api/v1/viewers/" + url.PathEscape(id) }

func (c *Client) device(ctx context.Context, method, path string, body any) (Device, error) {
	var out struct {
		Device Device `json:"device"`
	}
	if err := c.do(ctx, method, path, body, &out); err != nil {
		return Device{}, err
	}
	return out.Device, nil
}

func (c *Client) viewer(ctx context.Context, method, path string) (Viewer, error) {
	var out struct {
		Viewer Viewer `json:"viewer"`
	}
	if err := c.do(ctx, method, path, nil, &out); err != nil {
		return Viewer{}, err
	}
	return out.Viewer, nil
}

// do sends one request and decodes a 2xx JSON answer into out (when not nil).
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("admin API: %s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	// The header only: a token in a URL ends up in proxies' logs.
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, MaxAnswerBytes+1))
	if err != nil {
		return fmt.Errorf("admin API: %s %s: %w", method, path, err)
	}
	if len(raw) > MaxAnswerBytes {
		return fmt.Errorf("%w (%s %s)", ErrAnswerTooLarge, method, path)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(raw, &e) != nil || e.Error.Code == "" {
			// Not the API's answer (a proxy's error page): keep a readable head.
			return &APIError{Status: resp.StatusCode, Code: "http_error", Message: strings.TrimSpace(string(raw[:min(len(raw), 200)]))}
		}
		return &APIError{Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message}
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("admin API: %s %s answer: %w", method, path, err)
		}
	}
	return nil
}
