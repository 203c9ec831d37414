package simulator

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/telemetryd/telemetryd/devices/adminclient"
)

// createDeviceReq is the body of POST /api/v1/devices, as the client sends it.
type createDeviceReq = adminclient.NewDevice

// fakeAdmin implements POST /api/v1/devices of the admin API contract.
type fakeAdmin struct {
	mu       sync.Mutex
	token    string
	devices  map[string]createDeviceReq // id → request
	order    []string                   // kinds in creation order
	failFrom int                        // answer 500 from this creation on (0: never)
}

func (f *fakeAdmin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fail := func(status int, code, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"error":{"code":%q,"message":%q}}`, code, msg)
	}
	if r.Method != http.MethodPost || r.URL.Path != "/api/v1/devices" {
		fail(404, "not_found", "no such route")
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+f.token {
		fail(401, "unauthorized", "admin token required")
		return
	}
	var req createDeviceReq
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Name == "" || (req.Kind != "device" && req.Kind != "gateway") {
		fail(400, "invalid_request", "bad body")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if req.Gateway != "" && f.devices[req.Gateway].Kind != "gateway" {
		fail(400, "invalid_request", "unknown gateway "+req.Gateway)
		return
	}
	if f.failFrom > 0 && len(f.devices)+1 >= f.failFrom {
		fail(500, "internal", "disk full")
		return
	}
	id := fmt.Sprintf("id-%d", len(f.devices)+1)
	f.devices[id] = req
	f.order = append(f.order, req.Kind)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	fmt.Fprintf(w, `{"device":{"id":%q,"name":%q,"kind":%q,"labels":{},"gateway":%q,"created_at":"2026-01-01T00:00:00Z","last_seen_at":null,"revoked":false},"token":"tdv_%s"}`,
		id, req.Name, req.Kind, req.Gateway, id)
}

func (f *fakeAdmin) created() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.devices)
}

func newFakeAdmin(t *testing.T) (*fakeAdmin, string) {
	f := &fakeAdmin{token: "admin-secret-0123456789", devices: map[string]createDeviceReq{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv.URL
}

func TestProvisionCreatesAndReuses(t *testing.T) {
	admin, url := newFakeAdmin(t)
	creds := filepath.Join(t.TempDir(), "sub", "creds.json")
	cfg := Config{ServiceURL: url, AdminToken: admin.token, Devices: 2, Gateways: 1, ChildrenPerGateway: 2, CredsFile: creds}.withDefaults()
	log := slog.New(slog.DiscardHandler)

	got, err := provision(context.Background(), &cfg, "run1", log)
	if err != nil {
		t.Fatal(err)
	}
	if admin.created() != 5 || len(got) != 5 {
		t.Fatalf("created %d, returned %d; want 5 and 5", admin.created(), len(got))
	}
	// Gateways exist before their children, and children name them.
	gw := got["sim-gw-0001"]
	for _, c := range []string{"sim-gw-0001-c001", "sim-gw-0001-c002"} {
		if got[c].Gateway != gw.ID || admin.devices[got[c].ID].Gateway != gw.ID {
			t.Fatalf("%s: gateway %q, want %q", c, got[c].Gateway, gw.ID)
		}
	}
	if admin.devices[gw.ID].Labels["sim_fleet"] != "sim" {
		t.Fatalf("labels %v", admin.devices[gw.ID].Labels)
	}
	st, err := os.Stat(creds)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file: %v, mode %v", err, st.Mode())
	}

	// The same fleet again: nothing new.
	if _, err := provision(context.Background(), &cfg, "run2", log); err != nil || admin.created() != 5 {
		t.Fatalf("reuse: %v, created %d", err, admin.created())
	}
	// A bigger fleet: only the difference; no admin token is needed for
	// what the file already has.
	cfg.Devices = 3
	if _, err := provision(context.Background(), &cfg, "run3", log); err != nil || admin.created() != 6 {
		t.Fatalf("grow: %v, created %d", err, admin.created())
	}
	cfg.Devices, cfg.AdminToken = 2, ""
	if got, err := provision(context.Background(), &cfg, "run4", log); err != nil || len(got) != 6 {
		t.Fatalf("without token, all cached: %v, %d credentials", err, len(got))
	}
}

func TestProvisionErrors(t *testing.T) {
	admin, url := newFakeAdmin(t)
	log := slog.New(slog.DiscardHandler)
	dir := t.TempDir()

	cfg := Config{ServiceURL: url, Devices: 3, CredsFile: filepath.Join(dir, "a.json")}.withDefaults()
	if _, err := provision(context.Background(), &cfg, "r", log); err == nil || !strings.Contains(err.Error(), "TELEMETRY_ADMIN_TOKEN") {
		t.Fatalf("no token: %v", err)
	}
	cfg.AdminToken = "wrong-token"
	if _, err := provision(context.Background(), &cfg, "r", log); err == nil || !strings.Contains(err.Error(), "unauthorized") {
		t.Fatalf("wrong token: %v", err)
	}
	// A failure part-way keeps what was issued.
	admin.failFrom = 3
	cfg.AdminToken = admin.token
	_, err := provision(context.Background(), &cfg, "r", log)
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("partial failure: %v", err)
	}
	f, lerr := LoadCredentials(cfg.CredsFile)
	if lerr != nil || len(f.Devices) != admin.created() || admin.created() != 2 {
		t.Fatalf("saved %d credentials (%v), service issued %d", len(f.Devices), lerr, admin.created())
	}
	// A corrupt file is an error, not an empty fleet.
	bad := filepath.Join(dir, "bad.json")
	_ = os.WriteFile(bad, []byte("{"), 0o600)
	cfg.CredsFile = bad
	if _, err := provision(context.Background(), &cfg, "r", log); err == nil {
		t.Fatal("corrupt credentials file accepted")
	}
}
