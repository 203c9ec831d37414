package main

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/telemetryd/telemetryd/bridge"
	"github.com/telemetryd/telemetryd/devices"
	"github.com/telemetryd/telemetryd/ingest"
	"github.com/telemetryd/telemetryd/live"
	"github.com/telemetryd/telemetryd/telemetry"
)

// Interface guards: the registry is what the transports, the bridge and the
// dashboards authenticate and authorize against.
var (
	_ ingest.Authenticator     = (*devices.Registry)(nil)
	_ ingest.DeviceChecker     = (*devices.Registry)(nil)
	_ bridge.ChildAuthorizer   = (*devices.Registry)(nil)
	_ bridge.LabelSource       = (*devices.Registry)(nil)
	_ ingest.Authenticator     = (*devices.StaticTokens)(nil)
	_ ingest.Authenticator     = deviceAuth{}
	_ ingest.DeviceChecker     = deviceAuth{}
	_ live.ViewerAuthenticator = (*devices.Registry)(nil)
)

func registryPath(cfg config) string { return filepath.Join(cfg.DataDir, "registry.db") }

// openRegistry opens the device registry (the store -registry-url selects).
func openRegistry(ctx context.Context, cfg config, log *slog.Logger) (*devices.Registry, error) {
	store, where, err := openRegistryStore(ctx, cfg, log) // registrystore.go
	if err != nil {
		return nil, err
	}
	reg, err := devices.Open(ctx, store, devices.Config{
		RotationGrace: cfg.Sec.RotationGrace,
		AdminToken:    cfg.Sec.AdminToken,
		MaxLabels:     cfg.Sec.MaxLabels,
	}, log.With("component", "registry"))
	if err != nil {
		store.Close()
		return nil, err
	}
	st := reg.Stats()
	log.Info("device registry open", "path", where, "devices", st.Devices, "viewers", st.Viewers,
		"admin_api", reg.AdminEnabled(), "static_tokens", cfg.DeviceTokens != "")
	return reg, nil
}

// closeRegistry persists last-seen times and closes the registry.
func closeRegistry(reg *devices.Registry, log *slog.Logger) {
	if err := reg.Close(); err != nil {
		log.Warn("closing the device registry", "error", err)
	}
}

// deviceAuth authenticates devices against the registry and, for
// development, the optional static token list (-device-tokens).
type deviceAuth struct {
	reg    *devices.Registry
	static *devices.StaticTokens // nil without -device-tokens
}

// newDeviceAuth loads the static token list at path ("" means none).
func newDeviceAuth(reg *devices.Registry, path string) (deviceAuth, error) {
	a := deviceAuth{reg: reg}
	if path != "" {
		var err error
		if a.static, err = devices.LoadStaticTokens(path); err != nil {
			return deviceAuth{}, err
		}
	}
	return a, nil
}

// AuthenticateDevice: the registry, then the static list. A registry-shaped
// token never falls through: the registry's answer is final for it.
func (a deviceAuth) AuthenticateDevice(ctx context.Context, token string) (telemetry.DeviceID, error) {
	dev, err := a.reg.AuthenticateDevice(ctx, token)
	if err != nil && a.static != nil && !strings.HasPrefix(token, devices.DeviceTokenPrefix) {
		return a.static.AuthenticateDevice(ctx, token)
	}
	return dev, err
}

// Active: registered and not revoked, or in the static list.
func (a deviceAuth) Active(dev telemetry.DeviceID) bool {
	return a.reg.Active(dev) || (a.static != nil && a.static.Active(dev))
}

// closeOnRevoke closes the sockets of revoked devices and viewers as soon
// as the registry reports the change, not at their next frame.
func closeOnRevoke(reg *devices.Registry, ws *ingest.WS, dash *live.Dashboards) {
	reg.Subscribe(func(e devices.Event) {
		if !e.Revokes() {
			return
		}
		if e.Device != "" {
			ws.Disconnect(e.Device, telemetry.ClosePolicy, "credential revoked")
		} else {
			dash.Disconnect(e.Viewer, telemetry.ClosePolicy, "credential revoked")
		}
	})
}

// openMosquittoSync keeps the broker's password and ACL files in step with
// the registry; nil when -mosquitto-password-file is not set.
func openMosquittoSync(reg *devices.Registry, cfg config, log *slog.Logger) (*devices.MosquittoSync, error) {
	if cfg.Sec.MosquittoPasswordFile == "" {
		return nil, nil
	}
	return devices.NewMosquittoSync(reg, devices.MosquittoSyncConfig{
		PasswordFile: cfg.Sec.MosquittoPasswordFile,
		ACLFile:      cfg.Sec.MosquittoACLFile,
		PIDFile:      cfg.Sec.MosquittoPIDFile,
		Topic:        cfg.MQTTTopic,
		Service:      devices.MosquittoAccount{Username: cfg.MQTTUsername, Password: cfg.MQTTPassword},
		Leader:       reg.Leader("mosquitto-files"), // one writer per shared registry
	}, log.With("component", "mosquitto"))
}
