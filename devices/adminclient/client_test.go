package adminclient_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/telemetryd/telemetryd/devices"
	"github.com/telemetryd/telemetryd/devices/adminclient"
	"github.com/telemetryd/telemetryd/telemetry"
)

const adminToken = "admin-secret-0123456789"

// newService serves the real admin API over a real registry on a temporary
// SQLite database.
func newService(t *testing.T) (*devices.Registry, string) {
	t.Helper()
	store, err := devices.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	reg, err := devices.Open(t.Context(), store, devices.Config{AdminToken: adminToken}, log)
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	srv := httptest.NewServer(devices.NewAdminAPI(reg, log))
	t.Cleanup(srv.Close)
	return reg, srv.URL
}

func newClient(t *testing.T, url, token string) *adminclient.Client {
	t.Helper()
	c, err := adminclient.New(url, token, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func apiCode(err error) string {
	var e *adminclient.APIError
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

func TestDevices(t *testing.T) {
	reg, url := newService(t)
	c := newClient(t, url+"/", adminToken) // a trailing slash is accepted
	ctx := t.Context()

	gw, err := c.CreateDevice(ctx, adminclient.NewDevice{Name: "gw", Kind: "gateway", Labels: map[string]string{"site": "a"}})
	if err != nil {
		t.Fatal(err)
	}
	child, err := c.CreateDevice(ctx, adminclient.NewDevice{Name: "child", Kind: "device", Gateway: gw.Device.ID})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(gw.Token, devices.DeviceTokenPrefix) || child.Device.Gateway != gw.Device.ID {
		t.Fatalf("created %+v and %+v", gw, child)
	}
	// The token the client got is one the registry accepts.
	if id, err := reg.AuthenticateDevice(ctx, child.Token); err != nil || id != telemetry.DeviceID(child.Device.ID) {
		t.Fatalf("token of %s authenticates as %q: %v", child.Device.ID, id, err)
	}

	// The client's wire type says what the server's says.
	d, err := reg.Device(telemetry.DeviceID(gw.Device.ID))
	if err != nil {
		t.Fatal(err)
	}
	server, _ := json.Marshal(d.ToJSON())
	client, _ := json.Marshal(gw.Device)
	var sm, cm map[string]any
	_ = json.Unmarshal(server, &sm)
	_ = json.Unmarshal(client, &cm)
	if !reflect.DeepEqual(sm, cm) {
		t.Fatalf("wire types differ:\nserver %s\nclient %s", server, client)
	}

	// Filters and paging.
	page, err := c.ListDevices(ctx, adminclient.DeviceFilter{Labels: map[string]string{"site": "a"}})
	if err != nil || len(page.Devices) != 1 || page.Devices[0].ID != gw.Device.ID || page.NextCursor != "" {
		t.Fatalf("label filter: %+v %v", page, err)
	}
	page, err = c.ListDevices(ctx, adminclient.DeviceFilter{Limit: 1})
	if err != nil || len(page.Devices) != 1 || page.NextCursor == "" {
		t.Fatalf("first page: %+v %v", page, err)
	}
	next, err := c.ListDevices(ctx, adminclient.DeviceFilter{Limit: 1, Cursor: page.NextCursor})
	if err != nil || len(next.Devices) != 1 || next.Devices[0].ID == page.Devices[0].ID || next.NextCursor != "" {
		t.Fatalf("second page: %+v %v", next, err)
	}
	if kids, err := c.ListDevices(ctx, adminclient.DeviceFilter{Gateway: gw.Device.ID, Kind: "device"}); err != nil || len(kids.Devices) != 1 {
		t.Fatalf("gateway filter: %+v %v", kids, err)
	}

	name := "child 2"
	got, err := c.UpdateDevice(ctx, child.Device.ID, adminclient.DeviceChange{Name: &name, Labels: map[string]string{"x": "1"}})
	if err != nil || got.Name != name || got.Labels["x"] != "1" || got.Gateway != gw.Device.ID {
		t.Fatalf("update: %+v %v", got, err)
	}
	unassign := ""
	got, err = c.UpdateDevice(ctx, child.Device.ID, adminclient.DeviceChange{Labels: map[string]string{}, Gateway: &unassign})
	if err != nil || len(got.Labels) != 0 || got.Gateway != "" || got.Name != name {
		t.Fatalf("clear labels and gateway: %+v %v", got, err)
	}

	rot, err := c.RotateDevice(ctx, child.Device.ID, 0)
	if err != nil || rot.Token == child.Token {
		t.Fatalf("rotate: %+v %v", rot, err)
	}
	if _, err := reg.AuthenticateDevice(ctx, child.Token); err == nil {
		t.Fatal("the old token still works after a rotation with no grace")
	}
	if _, err := c.RotateDevice(ctx, child.Device.ID, -1); err != nil {
		t.Fatalf("rotate with the server's grace: %v", err)
	}
	if got, err := c.RevokeDevice(ctx, child.Device.ID); err != nil || !got.Revoked {
		t.Fatalf("revoke: %+v %v", got, err)
	}
	if err := c.DeleteDevice(ctx, child.Device.ID); err != nil {
		t.Fatal(err)
	}
	_, err = c.Device(ctx, child.Device.ID)
	var apiErr *adminclient.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusNotFound || apiErr.Code != devices.APICodeNotFound ||
		!strings.Contains(err.Error(), "not_found (HTTP 404)") {
		t.Fatalf("get deleted: %v", err)
	}
	if _, err := c.CreateDevice(ctx, adminclient.NewDevice{Name: "x", Kind: "toaster"}); apiCode(err) != devices.APICodeInvalidRequest {
		t.Fatalf("bad kind: %v", err)
	}
}

func TestViewers(t *testing.T) {
	reg, url := newService(t)
	c := newClient(t, url, adminToken)
	ctx := t.Context()
	v, err := c.CreateViewer(ctx, "ops", map[string]string{"site": "a"})
	if err != nil || v.Viewer.Scope["site"] != "a" || v.Token == "" {
		t.Fatalf("create: %+v %v", v, err)
	}
	if _, err := reg.AuthenticateViewer(ctx, v.Token); err != nil {
		t.Fatalf("the issued viewer token: %v", err)
	}
	list, err := c.Viewers(ctx)
	if err != nil || len(list) != 1 || list[0].ID != v.Viewer.ID {
		t.Fatalf("list: %+v %v", list, err)
	}
	if got, err := c.Viewer(ctx, v.Viewer.ID); err != nil || got.Name != "ops" {
		t.Fatalf("get: %+v %v", got, err)
	}
	if got, err := c.RevokeViewer(ctx, v.Viewer.ID); err != nil || !got.Revoked {
		t.Fatalf("revoke: %+v %v", got, err)
	}
	if err := c.DeleteViewer(ctx, v.Viewer.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Viewer(ctx, v.Viewer.ID); apiCode(err) != devices.APICodeNotFound {
		t.Fatalf("get deleted: %v", err)
	}
}

func TestErrors(t *testing.T) {
	_, url := newService(t)
	ctx := t.Context()
	if _, err := newClient(t, url, "wrong-token-0123456789").Viewers(ctx); apiCode(err) != devices.APICodeUnauthorized {
		t.Fatalf("wrong token: %v", err)
	}
	for _, bad := range []string{"", "127.0.0.1:8080", "ftp://x", "http://"} {
		if _, err := adminclient.New(bad, adminToken, nil); err == nil {
			t.Errorf("base URL %q accepted", bad)
		}
	}
	if _, err := adminclient.New(url, "", nil); err == nil {
		t.Error("empty token accepted")
	}

	// Not the API: a proxy's error page, and an answer over the limit.
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v1/viewers" {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"viewers":[`))
			_, _ = w.Write(bytes.Repeat([]byte(" "), adminclient.MaxAnswerBytes))
			_, _ = w.Write([]byte(`]}`))
			return
		}
		http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
	}))
	defer proxy.Close()
	c := newClient(t, proxy.URL, adminToken)
	_, err := c.Device(ctx, "x")
	var apiErr *adminclient.APIError
	if !errors.As(err, &apiErr) || apiErr.Code != "http_error" || apiErr.Status != http.StatusBadGateway || !strings.Contains(apiErr.Message, "bad gateway") {
		t.Fatalf("proxy page: %v", err)
	}
	if _, err := c.Viewers(ctx); !errors.Is(err, adminclient.ErrAnswerTooLarge) {
		t.Fatalf("oversized answer: %v", err)
	}

	// ctx is honoured.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := newClient(t, url, adminToken).Viewers(cctx); err == nil {
		t.Fatal("expired context: no error")
	}
}
