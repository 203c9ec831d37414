package devices

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

const testAdmin = "admin-token-for-tests-0123456789"

func newTestAPI(t *testing.T, cfg Config) (*testReg, *httptest.Server) {
	t.Helper()
	r := newTestRegistry(t, cfg)
	srv := httptest.NewServer(NewAdminAPI(r.Registry, discard()))
	t.Cleanup(srv.Close)
	return r, srv
}

type apiResult struct {
	status int
	body   map[string]any
	raw    string
	header http.Header
}

func call(t *testing.T, srv *httptest.Server, token, method, path, body string) apiResult {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	res := apiResult{status: resp.StatusCode, raw: string(raw), header: resp.Header}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &res.body); err != nil {
			t.Fatalf("%s %s: non-JSON answer %q", method, path, raw)
		}
	}
	return res
}

func (r apiResult) code() string {
	e, _ := r.body["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

func (r apiResult) str(path ...string) string {
	var v any = r.body
	for _, p := range path {
		m, _ := v.(map[string]any)
		v = m[p]
	}
	if v == nil {
		return "<nil>"
	}
	return fmt.Sprint(v)
}

func TestAdminAPIErrors(t *testing.T) {
	_, srv := newTestAPI(t, Config{AdminToken: testAdmin})
	gw := call(t, srv, testAdmin, "POST", "/api/v1/devices", `{"name":"gw","kind":"gateway"}`)
	call(t, srv, testAdmin, "POST", "/api/v1/devices", `{"name":"c","gateway":"`+gw.str("device", "id")+`"}`)
	tests := []struct {
		name, token, method, path, body string
		status                          int
		code                            string
	}{
		{"no token", "", "GET", "/api/v1/devices", "", 401, "unauthorized"},
		{"wrong token", testAdmin + "x", "GET", "/api/v1/devices", "", 401, "unauthorized"},
		{"device token is no admin token", "tdv_x", "GET", "/api/v1/devices", "", 401, "unauthorized"},
		{"unknown path needs auth first", "", "GET", "/api/v1/secret", "", 401, "unauthorized"},
		{"unknown path", testAdmin, "GET", "/api/v1/nothing", "", 404, "not_found"},
		{"unknown device", testAdmin, "GET", "/api/v1/devices/0190", "", 404, "not_found"},
		{"unknown device revoke", testAdmin, "POST", "/api/v1/devices/0190/revoke", "", 404, "not_found"},
		{"unknown device delete", testAdmin, "DELETE", "/api/v1/devices/0190", "", 404, "not_found"},
		{"unknown viewer", testAdmin, "POST", "/api/v1/viewers/x/revoke", "", 404, "not_found"},
		{"wrong method", testAdmin, "PUT", "/api/v1/devices", "{}", 405, "method_not_allowed"},
		{"wrong method on item", testAdmin, "POST", "/api/v1/devices/x", "{}", 405, "method_not_allowed"},
		{"not JSON", testAdmin, "POST", "/api/v1/devices", "name=x", 400, "invalid_request"},
		{"unknown field", testAdmin, "POST", "/api/v1/devices", `{"name":"x","token":"mine"}`, 400, "invalid_request"},
		{"trailing data", testAdmin, "POST", "/api/v1/devices", `{"name":"x"}{}`, 400, "invalid_request"},
		{"empty body", testAdmin, "POST", "/api/v1/devices", ``, 400, "invalid_request"},
		{"missing name", testAdmin, "POST", "/api/v1/devices", `{"kind":"device"}`, 400, "invalid_request"},
		{"bad kind", testAdmin, "POST", "/api/v1/devices", `{"name":"x","kind":"robot"}`, 400, "invalid_request"},
		{"label injection", testAdmin, "POST", "/api/v1/devices", `{"name":"x","labels":{"site":"a\nevil v=1"}}`, 400, "invalid_request"},
		{"label key injection", testAdmin, "POST", "/api/v1/devices", `{"name":"x","labels":{"site,device_id=y":"a"}}`, 400, "invalid_request"},
		{"labels not strings", testAdmin, "POST", "/api/v1/devices", `{"name":"x","labels":{"n":1}}`, 400, "invalid_request"},
		{"huge body", testAdmin, "POST", "/api/v1/devices", `{"name":"` + strings.Repeat("x", 70<<10) + `"}`, 413, "request_too_large"},
		{"bad limit", testAdmin, "GET", "/api/v1/devices?limit=0", "", 400, "invalid_request"},
		{"bad limit 2", testAdmin, "GET", "/api/v1/devices?limit=1001", "", 400, "invalid_request"},
		{"bad cursor", testAdmin, "GET", "/api/v1/devices?cursor=%21%21", "", 400, "invalid_request"},
		{"bad label filter", testAdmin, "GET", "/api/v1/devices?label=site", "", 400, "invalid_request"},
		{"bad kind filter", testAdmin, "GET", "/api/v1/devices?kind=x", "", 400, "invalid_request"},
		{"bad grace", testAdmin, "POST", "/api/v1/devices/x/rotate", `{"grace":"soon"}`, 400, "invalid_request"},
		{"negative grace", testAdmin, "POST", "/api/v1/devices/x/rotate", `{"grace":"-1m"}`, 400, "invalid_request"},
		{"gateway with children", testAdmin, "DELETE", "/api/v1/devices/" + gw.str("device", "id"), "", 409, "conflict"},
		{"viewer bad scope", testAdmin, "POST", "/api/v1/viewers", `{"name":"v","scope":{"site":"x\u0000"}}`, 400, "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := call(t, srv, tt.token, tt.method, tt.path, tt.body)
			if res.status != tt.status || res.code() != tt.code {
				t.Fatalf("%d %s, want %d %s: %s", res.status, res.code(), tt.status, tt.code, res.raw)
			}
			if strings.Contains(res.raw, testAdmin) {
				t.Fatal("the admin token was echoed")
			}
			if res.status == 401 && res.header.Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
		})
	}
}

func TestAdminAPIDisabledWithoutToken(t *testing.T) {
	_, srv := newTestAPI(t, Config{})
	for _, tok := range []string{"", "anything"} {
		if res := call(t, srv, tok, "GET", "/api/v1/devices", ""); res.status != 404 || res.code() != "not_found" {
			t.Fatalf("disabled API answered %d %s", res.status, res.raw)
		}
	}
}

func TestAdminAPIContract(t *testing.T) {
	r, srv := newTestAPI(t, Config{AdminToken: testAdmin})
	res := call(t, srv, testAdmin, "POST", "/api/v1/devices", `{"name":"n","kind":"device","labels":{"site":"plant-3"}}`)
	if res.status != 201 {
		t.Fatalf("create: %d %s", res.status, res.raw)
	}
	id, tok := res.str("device", "id"), res.str("token")
	if !strings.HasPrefix(tok, "tdv_") || res.str("device", "kind") != "device" || res.str("device", "labels", "site") != "plant-3" ||
		res.str("device", "gateway") != "" || res.str("device", "revoked") != "false" || res.str("device", "last_seen_at") != "<nil>" {
		t.Fatalf("create answer %s", res.raw)
	}
	if res.header.Get("Cache-Control") != "no-store" {
		t.Fatal("token answer cacheable")
	}
	dev := res.body["device"].(map[string]any)
	for _, k := range []string{"id", "name", "kind", "labels", "gateway", "created_at", "last_seen_at", "revoked"} {
		if _, ok := dev[k]; !ok {
			t.Fatalf("device JSON lacks %q: %s", k, res.raw)
		}
	}
	if _, err := r.AuthenticateDevice(t.Context(), tok); err != nil {
		t.Fatalf("issued token refused: %v", err)
	}
	if res := call(t, srv, testAdmin, "GET", "/api/v1/devices/"+id, ""); res.status != 200 || res.str("device", "id") != id || res.str("token") != "<nil>" {
		t.Fatalf("get: %s", res.raw)
	}
	if res := call(t, srv, testAdmin, "PATCH", "/api/v1/devices/"+id, `{"labels":{"site":"plant-4","model":"x"}}`); res.status != 200 ||
		res.str("device", "labels", "site") != "plant-4" || res.str("device", "name") != "n" {
		t.Fatalf("patch: %s", res.raw)
	}
	for i := range 4 {
		call(t, srv, testAdmin, "POST", "/api/v1/devices", fmt.Sprintf(`{"name":"d%d","labels":{"site":"plant-4","model":"x"}}`, i))
	}
	// Paging with two label filters.
	var ids []string
	cursor := ""
	for {
		res := call(t, srv, testAdmin, "GET", "/api/v1/devices?label=site=plant-4&label=model=x&limit=2&cursor="+cursor, "")
		if res.status != 200 {
			t.Fatalf("list: %s", res.raw)
		}
		for _, d := range res.body["devices"].([]any) {
			ids = append(ids, d.(map[string]any)["id"].(string))
		}
		cursor = res.str("next_cursor")
		if cursor == "" {
			break
		}
	}
	if len(ids) != 5 || ids[0] != id {
		t.Fatalf("listed %v", ids)
	}
	if res := call(t, srv, testAdmin, "GET", "/api/v1/devices?label=site=nowhere", ""); res.raw != "{\"devices\":[],\"next_cursor\":\"\"}\n" {
		t.Fatalf("empty list: %q", res.raw)
	}
	res = call(t, srv, testAdmin, "POST", "/api/v1/devices/"+id+"/rotate", `{"grace":"10m"}`)
	if res.status != 200 || !strings.HasPrefix(res.str("token"), "tdv_") || res.str("token") == tok {
		t.Fatalf("rotate: %s", res.raw)
	}
	if res := call(t, srv, testAdmin, "POST", "/api/v1/devices/"+id+"/rotate", ``); res.status != 200 {
		t.Fatalf("rotate without body: %s", res.raw)
	}
	if res := call(t, srv, testAdmin, "POST", "/api/v1/devices/"+id+"/revoke", ``); res.status != 200 || res.str("device", "revoked") != "true" {
		t.Fatalf("revoke: %s", res.raw)
	}
	if res := call(t, srv, testAdmin, "POST", "/api/v1/devices/"+id+"/rotate", ``); res.status != 409 || res.code() != "conflict" {
		t.Fatalf("rotate revoked: %s", res.raw)
	}
	if res := call(t, srv, testAdmin, "DELETE", "/api/v1/devices/"+id, ``); res.status != 204 || res.raw != "" {
		t.Fatalf("delete: %d %s", res.status, res.raw)
	}

	res = call(t, srv, testAdmin, "POST", "/api/v1/viewers", `{"name":"ops","scope":{"site":"plant-3"}}`)
	vid := res.str("viewer", "id")
	if res.status != 201 || !strings.HasPrefix(res.str("token"), "tvw_") || res.str("viewer", "scope", "site") != "plant-3" || res.str("viewer", "revoked") != "false" {
		t.Fatalf("create viewer: %s", res.raw)
	}
	if res := call(t, srv, testAdmin, "GET", "/api/v1/viewers", ""); res.status != 200 || len(res.body["viewers"].([]any)) != 1 || strings.Contains(res.raw, "tvw_") {
		t.Fatalf("list viewers: %s", res.raw)
	}
	if res := call(t, srv, testAdmin, "POST", "/api/v1/viewers/"+vid+"/revoke", ""); res.status != 200 || res.str("viewer", "revoked") != "true" {
		t.Fatalf("revoke viewer: %s", res.raw)
	}
	if res := call(t, srv, testAdmin, "DELETE", "/api/v1/viewers/"+vid, ""); res.status != 204 {
		t.Fatalf("delete viewer: %s", res.raw)
	}
}
