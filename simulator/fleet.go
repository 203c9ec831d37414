package simulator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/telemetryd/telemetryd/devices/adminclient"
)

// Credential is one provisioned device or gateway as the credentials file
// keeps it. Slot is the simulator's stable name for the position in the
// fleet (e.g. "sim-dev-00001"); ID and Token are what the service issued.
type Credential struct {
	Slot    string `json:"slot"`
	ID      string `json:"id"`
	Token   string `json:"token"`
	Kind    string `json:"kind"`              // "device" or "gateway"
	Gateway string `json:"gateway,omitempty"` // the gateway's id, for a child
}

// CredentialsFile is the JSON document behind -creds. It holds secrets:
// it is written with mode 0600.
type CredentialsFile struct {
	Version int          `json:"version"`
	Service string       `json:"service,omitempty"`
	Devices []Credential `json:"devices"`
}

// slot is one position of the fleet layout.
type slot struct {
	name    string
	kind    string
	gateway string // the gateway slot of a child
}

// layout names every slot a run needs: direct devices, gateways, and each
// gateway's children, in that order. Without a credentials file the run id
// goes into the names, so fresh fleets never look like earlier ones.
func layout(cfg *Config, runID string) (direct, gateways []slot, children [][]slot) {
	prefix := cfg.Fleet
	if cfg.CredsFile == "" {
		prefix += "-" + runID
	}
	n := cfg.Devices
	if cfg.Transport == TransportGateway {
		n = 0
	}
	for i := range n {
		direct = append(direct, slot{name: fmt.Sprintf("%s-dev-%05d", prefix, i+1), kind: "device"})
	}
	for g := range cfg.Gateways {
		gw := slot{name: fmt.Sprintf("%s-gw-%04d", prefix, g+1), kind: "gateway"}
		gateways = append(gateways, gw)
		var kids []slot
		for c := range cfg.ChildrenPerGateway {
			kids = append(kids, slot{name: fmt.Sprintf("%s-c%03d", gw.name, c+1), kind: "device", gateway: gw.name})
		}
		children = append(children, kids)
	}
	return direct, gateways, children
}

// LoadCredentials reads a credentials file; a missing file is empty.
func LoadCredentials(path string) (*CredentialsFile, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &CredentialsFile{Version: 1}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	var f CredentialsFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("credentials %s: %w", path, err)
	}
	if f.Version != 1 {
		return nil, fmt.Errorf("credentials %s: version %d, want 1", path, f.Version)
	}
	return &f, nil
}

// SaveCredentials writes f atomically with mode 0600.
func SaveCredentials(path string, f *CredentialsFile) error {
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("credentials: %w", err)
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".creds-*")
	if err != nil {
		return fmt.Errorf("credentials: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("credentials: %w", err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("credentials: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("credentials: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("credentials: %w", err)
	}
	return nil
}

// provision returns a credential for every slot of the run: from the
// credentials file when it has one (a child only if it still belongs to
// the same gateway), otherwise created through the admin API — gateways
// before their children. The file is rewritten whenever something was
// created, even if provisioning fails part-way, so nothing issued is lost.
func provision(ctx context.Context, cfg *Config, runID string, log *slog.Logger) (map[string]Credential, error) {
	file := &CredentialsFile{Version: 1}
	if cfg.CredsFile != "" {
		f, err := LoadCredentials(cfg.CredsFile)
		if err != nil {
			return nil, err
		}
		file = f
	}
	have := make(map[string]Credential, len(file.Devices))
	for _, c := range file.Devices {
		have[c.Slot] = c
	}
	direct, gateways, children := layout(cfg, runID)
	var missing []slot
	for _, s := range append(append([]slot(nil), direct...), gateways...) {
		if c, ok := have[s.name]; !ok || c.Kind != s.kind {
			missing = append(missing, s)
		}
	}
	// One client for both rounds (gateways, then their children), so that
	// its connections are reused; its error matters only if a round needs it.
	api, apiErr := adminclient.New(cfg.ServiceURL, cfg.AdminToken, nil)
	var mu sync.Mutex
	issued := 0
	save := func() error {
		if cfg.CredsFile == "" || issued == 0 {
			return nil
		}
		file.Service = cfg.ServiceURL
		file.Devices = file.Devices[:0]
		for _, c := range have {
			file.Devices = append(file.Devices, c)
		}
		sortCreds(file.Devices)
		return SaveCredentials(cfg.CredsFile, file)
	}
	create := func(batch []slot) error {
		if len(batch) == 0 {
			return nil
		}
		if cfg.AdminToken == "" {
			where := "no credentials file"
			if cfg.CredsFile != "" {
				where = "not in " + cfg.CredsFile
			}
			return fmt.Errorf("%d devices to provision (%s) and no admin token: set TELEMETRY_ADMIN_TOKEN or -admin-token", len(batch), where)
		}
		if apiErr != nil {
			return apiErr
		}
		log.Info("provisioning devices through the admin API", "count", len(batch), "service", cfg.ServiceURL)
		work := make(chan slot)
		errc := make(chan error, 1)
		var wg sync.WaitGroup
		for range min(8, len(batch)) {
			wg.Go(func() {
				for s := range work {
					req := adminclient.NewDevice{Name: s.name, Kind: s.kind, Labels: map[string]string{"sim_fleet": cfg.Fleet}}
					if s.gateway != "" {
						mu.Lock()
						req.Gateway = have[s.gateway].ID
						mu.Unlock()
					}
					created, err := api.CreateDevice(ctx, req)
					if err != nil {
						select {
						case errc <- fmt.Errorf("provision %s: %w", s.name, err):
						default:
						}
						continue
					}
					mu.Lock()
					have[s.name] = Credential{Slot: s.name, ID: created.Device.ID, Token: created.Token, Kind: s.kind, Gateway: req.Gateway}
					issued++
					mu.Unlock()
				}
			})
		}
	feed:
		for _, s := range batch {
			select {
			case work <- s:
			case <-ctx.Done():
				break feed
			case err := <-errc:
				errc <- err
				break feed
			}
		}
		close(work)
		wg.Wait()
		select {
		case err := <-errc:
			return err
		default:
		}
		return ctx.Err()
	}
	if err := create(missing); err != nil {
		return nil, errors.Join(err, save())
	}
	missing = missing[:0]
	for g, kids := range children {
		gwID := have[gateways[g].name].ID
		for _, s := range kids {
			if c, ok := have[s.name]; !ok || c.Kind != s.kind || c.Gateway != gwID {
				missing = append(missing, s)
			}
		}
	}
	if err := create(missing); err != nil {
		return nil, errors.Join(err, save())
	}
	if err := save(); err != nil {
		return nil, err
	}
	return have, nil
}

func sortCreds(cs []Credential) {
	slices.SortFunc(cs, func(a, b Credential) int { return strings.Compare(a.Slot, b.Slot) })
}
