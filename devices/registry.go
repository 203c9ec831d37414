package devices

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/telemetryd/telemetryd/telemetry"
)

// Config tunes a Registry. The zero value of each field means its default.
type Config struct {
	// RotationGrace is how long a rotated token stays valid when the
	// rotation names no grace (default 1h).
	RotationGrace time.Duration
	// AdminToken, when set, is the operator's token: it guards the admin
	// API and is accepted as an unrestricted viewer.
	AdminToken string
	// MaxLabels bounds a device's labels and a viewer's scope (default 16).
	MaxLabels int
	// MaxLabelValueLen bounds a label value in bytes (default 256, the
	// bridge's tag value limit).
	MaxLabelValueLen int
	// LastSeenInterval is how often Run persists last-seen times (default 30s).
	LastSeenInterval time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	if c.RotationGrace <= 0 {
		c.RotationGrace = time.Hour
	}
	if c.MaxLabels <= 0 {
		c.MaxLabels = 16
	}
	if c.MaxLabelValueLen <= 0 {
		c.MaxLabelValueLen = 256
	}
	if c.LastSeenInterval <= 0 {
		c.LastSeenInterval = 30 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// EventType says what changed in the registry.
type EventType int

const (
	DeviceCreated EventType = iota + 1
	DeviceUpdated
	DeviceRotated
	DeviceRevoked
	DeviceDeleted
	ViewerCreated
	ViewerRevoked
	ViewerDeleted
)

// Event announces a change; exactly one of Device and Viewer is set.
type Event struct {
	Type   EventType
	Device telemetry.DeviceID
	Viewer string
}

// Revokes reports whether the event ends a principal's access, so that its
// open connections must be closed.
func (e Event) Revokes() bool {
	switch e.Type {
	case DeviceRevoked, DeviceDeleted, ViewerRevoked, ViewerDeleted:
		return true
	}
	return false
}

// RegistryStats are the registry's counters and sizes.
type RegistryStats struct {
	Devices, Viewers   int
	DeviceAuthFailures uint64
	ViewerAuthFailures uint64
	AdminAuthFailures  uint64
}

// Registry is the device and viewer registry. All methods are safe for
// concurrent use.
type Registry struct {
	cfg       Config
	store     Store
	log       *slog.Logger
	adminHash TokenHash

	wmu sync.Mutex   // serializes mutations: store write, then memory
	mu  sync.RWMutex // guards the maps below (writers also hold wmu)

	devices map[telemetry.DeviceID]*deviceEntry
	order   []telemetry.DeviceID // sorted, for paging
	viewers map[string]*Viewer
	byHash  map[TokenHash]*credEntry
	creds   map[string][]Credential // owner → credentials, oldest first

	lmu       sync.Mutex
	listeners []func(Event)

	flushMu sync.Mutex // one last-seen flush at a time

	deviceAuthFailures, viewerAuthFailures, adminAuthFailures atomic.Uint64
}

type deviceEntry struct {
	d             Device          // replaced as a whole under mu
	tags          []telemetry.Tag // d.Labels sorted by key; never modified, replaced
	lastSeen      atomic.Int64    // Unix ns
	persistedSeen atomic.Int64
}

type credEntry struct {
	Credential
	viewer bool
}

// Open loads the registry from store. The Registry owns store from then on
// and closes it in Close.
func Open(ctx context.Context, store Store, cfg Config, log *slog.Logger) (*Registry, error) {
	cfg = cfg.withDefaults()
	st, err := store.Load(ctx)
	if err != nil {
		return nil, err
	}
	r := &Registry{
		cfg:     cfg,
		store:   store,
		log:     log,
		devices: make(map[telemetry.DeviceID]*deviceEntry, len(st.Devices)),
		viewers: make(map[string]*Viewer, len(st.Viewers)),
		byHash:  make(map[TokenHash]*credEntry, len(st.Credentials)),
		creds:   make(map[string][]Credential),
	}
	if cfg.AdminToken != "" {
		r.adminHash = HashToken(cfg.AdminToken)
	}
	for _, d := range st.Devices {
		e := &deviceEntry{d: cloneDevice(d), tags: labelTags(d.Labels)}
		e.lastSeen.Store(nanos(d.LastSeenAt))
		e.persistedSeen.Store(nanos(d.LastSeenAt))
		r.devices[d.ID] = e
		r.order = append(r.order, d.ID)
	}
	slices.Sort(r.order)
	for _, v := range st.Viewers {
		v := cloneViewer(v)
		r.viewers[v.ID] = &v
	}
	for _, c := range st.Credentials {
		_, isViewer := r.viewers[c.Owner]
		r.creds[c.Owner] = append(r.creds[c.Owner], c)
		r.byHash[c.Hash] = &credEntry{Credential: c, viewer: isViewer}
	}
	return r, nil
}

// Close persists last-seen times and closes the store.
func (r *Registry) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.flushLastSeen(ctx); err != nil {
		r.log.Warn("registry: last-seen times not saved", "error", err)
	}
	return r.store.Close()
}

// Subscribe registers fn to be called after every change, outside the
// registry's locks, on the goroutine that made the change. fn must not
// block (closing sockets asynchronously is fine).
func (r *Registry) Subscribe(fn func(Event)) {
	r.lmu.Lock()
	r.listeners = append(r.listeners, fn)
	r.lmu.Unlock()
}

func (r *Registry) emit(e Event) {
	r.lmu.Lock()
	ls := slices.Clone(r.listeners)
	r.lmu.Unlock()
	for _, fn := range ls {
		fn(e)
	}
}

// Run persists last-seen times and prunes expired credentials every
// LastSeenInterval until ctx is done. On a SharedStore it also follows the
// changes made through other processes (remote.go).
func (r *Registry) Run(ctx context.Context) error {
	if s, ok := r.store.(SharedStore); ok {
		done := make(chan struct{})
		go func() {
			defer close(done)
			r.watch(ctx, s)
		}()
		defer func() { <-done }()
	}
	t := time.NewTicker(r.cfg.LastSeenInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := r.flushLastSeen(ctx); err != nil {
				r.log.Warn("registry: saving last-seen times failed", "error", err)
			}
			if err := r.pruneExpired(ctx); err != nil {
				r.log.Warn("registry: pruning expired credentials failed", "error", err)
			}
		}
	}
}

// Stats returns the registry's counters.
func (r *Registry) Stats() RegistryStats {
	r.mu.RLock()
	nd, nv := len(r.devices), len(r.viewers)
	r.mu.RUnlock()
	return RegistryStats{
		Devices: nd, Viewers: nv,
		DeviceAuthFailures: r.deviceAuthFailures.Load(),
		ViewerAuthFailures: r.viewerAuthFailures.Load(),
		AdminAuthFailures:  r.adminAuthFailures.Load(),
	}
}

// ---- hot path ----

// AuthenticateDevice returns the device a token belongs to; an unknown,
// expired or revoked token is an error wrapping telemetry.ErrUnauthorized.
func (r *Registry) AuthenticateDevice(_ context.Context, token string) (telemetry.DeviceID, error) {
	if strings.HasPrefix(token, DeviceTokenPrefix) && len(token) <= 128 {
		h := HashToken(token)
		now := r.cfg.Now()
		r.mu.RLock()
		var e *deviceEntry
		if c := r.byHash[h]; c != nil && !c.viewer && c.Hash.Equal(h) && !c.expired(now) {
			e = r.devices[telemetry.DeviceID(c.Owner)]
		}
		var id telemetry.DeviceID
		if e != nil && !e.d.Revoked {
			id = e.d.ID
		}
		r.mu.RUnlock()
		if id != "" {
			e.seen(now)
			return id, nil
		}
	}
	r.deviceAuthFailures.Add(1)
	return "", fmt.Errorf("devices: unknown, expired or revoked device token: %w", telemetry.ErrUnauthorized)
}

// Active reports whether id is a registered device that is not revoked (the
// MQTT consumer asks this for every message's topic device).
func (r *Registry) Active(id telemetry.DeviceID) bool {
	r.mu.RLock()
	e := r.devices[id]
	ok := e != nil && !e.d.Revoked
	r.mu.RUnlock()
	if ok {
		e.seen(r.cfg.Now())
	}
	return ok
}

// MayReportFor reports whether gateway may send readings for device: both
// active, gateway of kind gateway, device assigned to it.
func (r *Registry) MayReportFor(gateway, device telemetry.DeviceID) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	g, d := r.devices[gateway], r.devices[device]
	return g != nil && d != nil && !g.d.Revoked && !d.d.Revoked && g.d.Kind == KindGateway && d.d.Gateway == gateway
}

// Labels returns the labels of device as tags sorted by key (nil for an
// unknown device). The slice must not be modified.
func (r *Registry) Labels(device telemetry.DeviceID) []telemetry.Tag {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if e := r.devices[device]; e != nil {
		return e.tags
	}
	return nil
}

// AuthenticateViewer returns the viewer a token belongs to. The admin
// token is an unrestricted viewer with id "admin".
func (r *Registry) AuthenticateViewer(_ context.Context, token string) (telemetry.Viewer, error) {
	if r.isAdmin(token) {
		return telemetry.Viewer{ID: "admin", Name: "admin", Scope: map[string]string{}}, nil
	}
	if strings.HasPrefix(token, ViewerTokenPrefix) && len(token) <= 128 {
		h := HashToken(token)
		now := r.cfg.Now()
		r.mu.RLock()
		var v *Viewer
		if c := r.byHash[h]; c != nil && c.viewer && c.Hash.Equal(h) && !c.expired(now) {
			v = r.viewers[c.Owner]
		}
		var out telemetry.Viewer
		ok := v != nil && !v.Revoked
		if ok {
			out = cloneViewer(*v).Viewer
		}
		r.mu.RUnlock()
		if ok {
			return out, nil
		}
	}
	r.viewerAuthFailures.Add(1)
	return telemetry.Viewer{}, fmt.Errorf("devices: unknown or revoked viewer token: %w", telemetry.ErrUnauthorized)
}

// ViewerActive reports whether viewer id may still watch ("admin" always
// may while an admin token is configured).
func (r *Registry) ViewerActive(id string) bool {
	if id == "admin" {
		return r.cfg.AdminToken != ""
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	v := r.viewers[id]
	return v != nil && !v.Revoked
}

// AuthenticateAdmin reports whether token is the operator token (constant
// time; false when none is configured).
func (r *Registry) AuthenticateAdmin(token string) bool {
	if r.isAdmin(token) {
		return true
	}
	r.adminAuthFailures.Add(1)
	return false
}

func (r *Registry) isAdmin(token string) bool {
	return r.cfg.AdminToken != "" && token != "" && HashToken(token).Equal(r.adminHash)
}

// AdminEnabled reports whether an operator token is configured.
func (r *Registry) AdminEnabled() bool { return r.cfg.AdminToken != "" }

func (e *deviceEntry) seen(now time.Time) {
	// At most one store per second per device: no cache-line ping-pong on
	// a busy device.
	if n := now.UnixNano(); n-e.lastSeen.Load() > int64(time.Second) {
		e.lastSeen.Store(n)
	}
}

func (e *deviceEntry) snapshot() Device {
	d := cloneDevice(e.d)
	d.LastSeenAt = fromNanos(e.lastSeen.Load())
	return d
}

func labelTags(labels map[string]string) []telemetry.Tag {
	if len(labels) == 0 {
		return nil
	}
	tags := make([]telemetry.Tag, 0, len(labels))
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		tags = append(tags, telemetry.Tag{Key: k, Value: labels[k]})
	}
	return tags
}

// ---- devices ----

// DeviceSpec describes a device to create.
type DeviceSpec struct {
	Name    string
	Kind    Kind // default KindDevice
	Labels  map[string]string
	Gateway telemetry.DeviceID
}

// DeviceUpdate changes a device; nil fields are left as they are.
type DeviceUpdate struct {
	Name *string
	// Labels replace all labels when not nil.
	Labels map[string]string
	// Gateway reassigns the device ("" unassigns it).
	Gateway *telemetry.DeviceID
}

// checkGateway validates assigning a device of kind to gateway. Callers
// hold wmu.
func (r *Registry) checkGateway(kind Kind, gateway telemetry.DeviceID) error {
	if gateway == "" {
		return nil
	}
	if kind != KindDevice {
		return fmt.Errorf("%w: only a device of kind %q may have a gateway", ErrInvalid, KindDevice)
	}
	g := r.devices[gateway]
	switch {
	case g == nil:
		return fmt.Errorf("%w: gateway %q does not exist", ErrInvalid, clip(string(gateway)))
	case g.d.Kind != KindGateway:
		return fmt.Errorf("%w: %s is not a gateway", ErrInvalid, gateway)
	case g.d.Revoked:
		return fmt.Errorf("%w: gateway %s is revoked", ErrInvalid, gateway)
	}
	return nil
}

func (r *Registry) newDeviceCredential(id telemetry.DeviceID, now time.Time) (Credential, string) {
	token := NewToken(DeviceTokenPrefix)
	return Credential{Hash: HashToken(token), Owner: string(id), MosquittoHash: MosquittoHash(token), CreatedAt: now}, token
}

// CreateDevice registers a device and returns it with its token, which is
// not stored and cannot be shown again.
func (r *Registry) CreateDevice(ctx context.Context, spec DeviceSpec) (Device, string, error) {
	if spec.Kind == "" {
		spec.Kind = KindDevice
	}
	if spec.Kind != KindDevice && spec.Kind != KindGateway {
		return Device{}, "", fmt.Errorf("%w: kind must be %q or %q", ErrInvalid, KindDevice, KindGateway)
	}
	if !validName(spec.Name) {
		return Device{}, "", fmt.Errorf("%w: name must be 1 to 128 bytes of printable UTF-8", ErrInvalid)
	}
	if err := checkLabels("label", spec.Labels, r.cfg.MaxLabels, r.cfg.MaxLabelValueLen, false); err != nil {
		return Device{}, "", err
	}
	u, err := uuid.NewV7()
	if err != nil {
		return Device{}, "", fmt.Errorf("devices: new id: %w", err)
	}
	now := r.cfg.Now().UTC()
	d := cloneDevice(Device{
		ID: telemetry.DeviceID(u.String()), Name: spec.Name, Kind: spec.Kind, Labels: spec.Labels,
		Gateway: spec.Gateway, CreatedAt: now,
	})
	cred, token := r.newDeviceCredential(d.ID, now)

	r.wmu.Lock()
	defer r.wmu.Unlock()
	if err := r.checkGateway(d.Kind, d.Gateway); err != nil {
		return Device{}, "", err
	}
	err = r.store.Update(ctx, func(ctx context.Context, tx Tx) error {
		if err := tx.PutDevice(ctx, d); err != nil {
			return err
		}
		return tx.SetCredentials(ctx, string(d.ID), []Credential{cred})
	})
	if err != nil {
		return Device{}, "", err
	}
	e := &deviceEntry{d: d, tags: labelTags(d.Labels)}
	r.mu.Lock()
	r.devices[d.ID] = e
	if i, found := slices.BinarySearch(r.order, d.ID); !found {
		r.order = slices.Insert(r.order, i, d.ID)
	}
	r.setCredsLocked(string(d.ID), []Credential{cred}, false)
	r.mu.Unlock()
	r.log.Info("device created", "device", d.ID, "kind", d.Kind, "gateway", d.Gateway)
	defer r.emit(Event{Type: DeviceCreated, Device: d.ID})
	return cloneDevice(d), token, nil
}

// setCredsLocked replaces owner's credentials in memory. Callers hold mu.
func (r *Registry) setCredsLocked(owner string, creds []Credential, viewer bool) {
	for _, c := range r.creds[owner] {
		delete(r.byHash, c.Hash)
	}
	if len(creds) == 0 {
		delete(r.creds, owner)
		return
	}
	r.creds[owner] = creds
	for _, c := range creds {
		r.byHash[c.Hash] = &credEntry{Credential: c, viewer: viewer}
	}
}

// Device returns a device.
func (r *Registry) Device(id telemetry.DeviceID) (Device, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e := r.devices[id]
	if e == nil {
		return Device{}, fmt.Errorf("device %q: %w", clip(string(id)), ErrNotFound)
	}
	return e.snapshot(), nil
}

// ListOptions selects and pages devices.
type ListOptions struct {
	// Labels must all match.
	Labels  map[string]string
	Kind    Kind               // "" for any
	Gateway telemetry.DeviceID // "" for any
	// After is the last id of the previous page ("" for the first page).
	After telemetry.DeviceID
	// Limit is the page size (default 100, at most 1000).
	Limit int
}

// ListDevices returns devices in id order (creation order: ids are UUIDv7)
// and whether more follow the page.
func (r *Registry) ListDevices(o ListOptions) ([]Device, bool) {
	if o.Limit <= 0 {
		o.Limit = 100
	}
	o.Limit = min(o.Limit, 1000)
	r.mu.RLock()
	defer r.mu.RUnlock()
	i := 0
	if o.After != "" {
		var found bool
		i, found = slices.BinarySearch(r.order, o.After)
		if found {
			i++
		}
	}
	var out []Device
	for ; i < len(r.order); i++ {
		e := r.devices[r.order[i]]
		if !matches(e, o) {
			continue
		}
		if len(out) == o.Limit {
			return out, true
		}
		out = append(out, e.snapshot())
	}
	return out, false
}

func matches(e *deviceEntry, o ListOptions) bool {
	if o.Kind != "" && e.d.Kind != o.Kind || o.Gateway != "" && e.d.Gateway != o.Gateway {
		return false
	}
	for k, v := range o.Labels {
		if got, ok := e.d.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// Devices returns every device, in id order.
func (r *Registry) Devices() []Device {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Device, 0, len(r.order))
	for _, id := range r.order {
		out = append(out, r.devices[id].snapshot())
	}
	return out
}

// UpdateDevice changes a device's name, labels or gateway.
func (r *Registry) UpdateDevice(ctx context.Context, id telemetry.DeviceID, u DeviceUpdate) (Device, error) {
	if u.Name != nil && !validName(*u.Name) {
		return Device{}, fmt.Errorf("%w: name must be 1 to 128 bytes of printable UTF-8", ErrInvalid)
	}
	if u.Labels != nil {
		if err := checkLabels("label", u.Labels, r.cfg.MaxLabels, r.cfg.MaxLabelValueLen, false); err != nil {
			return Device{}, err
		}
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	e := r.devices[id]
	if e == nil {
		return Device{}, fmt.Errorf("device %q: %w", clip(string(id)), ErrNotFound)
	}
	d := cloneDevice(e.d)
	if u.Name != nil {
		d.Name = *u.Name
	}
	if u.Labels != nil {
		d.Labels = maps.Clone(u.Labels)
	}
	if u.Gateway != nil && *u.Gateway != d.Gateway {
		if err := r.checkGateway(d.Kind, *u.Gateway); err != nil {
			return Device{}, err
		}
		d.Gateway = *u.Gateway
	}
	d.LastSeenAt = fromNanos(e.lastSeen.Load())
	if err := r.store.Update(ctx, func(ctx context.Context, tx Tx) error { return tx.PutDevice(ctx, d) }); err != nil {
		return Device{}, err
	}
	r.mu.Lock()
	e.d = cloneDevice(d)
	e.tags = labelTags(d.Labels)
	out := e.snapshot()
	r.mu.Unlock()
	defer r.emit(Event{Type: DeviceUpdated, Device: id})
	return out, nil
}

// RotateDevice issues a new token for a device. The device's other tokens
// stay valid for grace (negative: the configured RotationGrace; 0: they end
// now). The new token is returned once.
func (r *Registry) RotateDevice(ctx context.Context, id telemetry.DeviceID, grace time.Duration) (Device, string, error) {
	if grace < 0 {
		grace = r.cfg.RotationGrace
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	e := r.devices[id]
	if e == nil {
		return Device{}, "", fmt.Errorf("device %q: %w", clip(string(id)), ErrNotFound)
	}
	if e.d.Revoked {
		return Device{}, "", fmt.Errorf("%w: device %s is revoked; register a new device", ErrConflict, id)
	}
	now := r.cfg.Now().UTC()
	until := now.Add(grace)
	var creds []Credential
	if grace > 0 {
		for _, c := range r.creds[string(id)] {
			if c.expired(now) {
				continue
			}
			if c.ExpiresAt.IsZero() || c.ExpiresAt.After(until) {
				c.ExpiresAt = until
			}
			creds = append(creds, c)
		}
	}
	cred, token := r.newDeviceCredential(id, now)
	creds = append(creds, cred)
	if err := r.store.Update(ctx, func(ctx context.Context, tx Tx) error {
		return tx.SetCredentials(ctx, string(id), creds)
	}); err != nil {
		return Device{}, "", err
	}
	r.mu.Lock()
	r.setCredsLocked(string(id), creds, false)
	d := e.snapshot()
	r.mu.Unlock()
	r.log.Info("device token rotated", "device", id, "grace", grace)
	defer r.emit(Event{Type: DeviceRotated, Device: id})
	return d, token, nil
}

// RevokeDevice ends a device's access for good: its tokens are deleted and
// subscribers are told to close its connections. Revoking a revoked device
// is not an error.
func (r *Registry) RevokeDevice(ctx context.Context, id telemetry.DeviceID) (Device, error) {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	e := r.devices[id]
	if e == nil {
		return Device{}, fmt.Errorf("device %q: %w", clip(string(id)), ErrNotFound)
	}
	d := cloneDevice(e.d)
	d.Revoked = true
	d.LastSeenAt = fromNanos(e.lastSeen.Load())
	if err := r.store.Update(ctx, func(ctx context.Context, tx Tx) error {
		if err := tx.PutDevice(ctx, d); err != nil {
			return err
		}
		return tx.SetCredentials(ctx, string(id), nil)
	}); err != nil {
		return Device{}, err
	}
	r.mu.Lock()
	e.d = cloneDevice(d)
	r.setCredsLocked(string(id), nil, false)
	r.mu.Unlock()
	r.log.Info("device revoked", "device", id)
	defer r.emit(Event{Type: DeviceRevoked, Device: id})
	return d, nil
}

// DeleteDevice removes a device and its tokens (its stored readings stay
// in InfluxDB). A gateway with assigned devices cannot be deleted.
func (r *Registry) DeleteDevice(ctx context.Context, id telemetry.DeviceID) error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	e := r.devices[id]
	if e == nil {
		return fmt.Errorf("device %q: %w", clip(string(id)), ErrNotFound)
	}
	if e.d.Kind == KindGateway {
		n := 0
		for _, c := range r.devices {
			if c.d.Gateway == id {
				n++
			}
		}
		if n > 0 {
			return fmt.Errorf("%w: gateway %s still has %d assigned device(s); reassign or delete them first", ErrConflict, id, n)
		}
	}
	if err := r.store.Update(ctx, func(ctx context.Context, tx Tx) error { return tx.DeleteDevice(ctx, id) }); err != nil {
		return err
	}
	r.mu.Lock()
	delete(r.devices, id)
	if i, found := slices.BinarySearch(r.order, id); found {
		r.order = slices.Delete(r.order, i, i+1)
	}
	r.setCredsLocked(string(id), nil, false)
	r.mu.Unlock()
	r.log.Info("device deleted", "device", id)
	defer r.emit(Event{Type: DeviceDeleted, Device: id})
	return nil
}

// ---- viewers ----

// CreateViewer registers a dashboard viewer restricted to scope (nil or
// empty: unrestricted) and returns its token, shown once.
func (r *Registry) CreateViewer(ctx context.Context, name string, scope map[string]string) (Viewer, string, error) {
	if !validName(name) {
		return Viewer{}, "", fmt.Errorf("%w: name must be 1 to 128 bytes of printable UTF-8", ErrInvalid)
	}
	if err := checkLabels("scope", scope, r.cfg.MaxLabels, r.cfg.MaxLabelValueLen, true); err != nil {
		return Viewer{}, "", err
	}
	u, err := uuid.NewV7()
	if err != nil {
		return Viewer{}, "", fmt.Errorf("devices: new id: %w", err)
	}
	now := r.cfg.Now().UTC()
	v := cloneViewer(Viewer{Viewer: telemetry.Viewer{ID: u.String(), Name: name, Scope: scope}, CreatedAt: now})
	token := NewToken(ViewerTokenPrefix)
	cred := Credential{Hash: HashToken(token), Owner: v.ID, CreatedAt: now}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if err := r.store.Update(ctx, func(ctx context.Context, tx Tx) error {
		if err := tx.PutViewer(ctx, v); err != nil {
			return err
		}
		return tx.SetCredentials(ctx, v.ID, []Credential{cred})
	}); err != nil {
		return Viewer{}, "", err
	}
	r.mu.Lock()
	stored := cloneViewer(v)
	r.viewers[v.ID] = &stored
	r.setCredsLocked(v.ID, []Credential{cred}, true)
	r.mu.Unlock()
	r.log.Info("viewer created", "viewer", v.ID, "scope", v.Scope)
	defer r.emit(Event{Type: ViewerCreated, Viewer: v.ID})
	return v, token, nil
}

// Viewer returns a viewer.
func (r *Registry) Viewer(id string) (Viewer, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	v := r.viewers[id]
	if v == nil {
		return Viewer{}, fmt.Errorf("viewer %q: %w", clip(id), ErrNotFound)
	}
	return cloneViewer(*v), nil
}

// Viewers returns every viewer in id order.
func (r *Registry) Viewers() []Viewer {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Viewer, 0, len(r.viewers))
	for _, v := range r.viewers {
		out = append(out, cloneViewer(*v))
	}
	slices.SortFunc(out, func(a, b Viewer) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// RevokeViewer ends a viewer's access; subscribers close its dashboards.
func (r *Registry) RevokeViewer(ctx context.Context, id string) (Viewer, error) {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	cur := r.viewers[id]
	if cur == nil {
		return Viewer{}, fmt.Errorf("viewer %q: %w", clip(id), ErrNotFound)
	}
	v := cloneViewer(*cur)
	v.Revoked = true
	if err := r.store.Update(ctx, func(ctx context.Context, tx Tx) error {
		if err := tx.PutViewer(ctx, v); err != nil {
			return err
		}
		return tx.SetCredentials(ctx, id, nil)
	}); err != nil {
		return Viewer{}, err
	}
	r.mu.Lock()
	stored := cloneViewer(v)
	r.viewers[id] = &stored
	r.setCredsLocked(id, nil, true)
	r.mu.Unlock()
	r.log.Info("viewer revoked", "viewer", id)
	defer r.emit(Event{Type: ViewerRevoked, Viewer: id})
	return v, nil
}

// DeleteViewer removes a viewer; subscribers close its dashboards.
func (r *Registry) DeleteViewer(ctx context.Context, id string) error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if r.viewers[id] == nil {
		return fmt.Errorf("viewer %q: %w", clip(id), ErrNotFound)
	}
	if err := r.store.Update(ctx, func(ctx context.Context, tx Tx) error { return tx.DeleteViewer(ctx, id) }); err != nil {
		return err
	}
	r.mu.Lock()
	delete(r.viewers, id)
	r.setCredsLocked(id, nil, true)
	r.mu.Unlock()
	r.log.Info("viewer deleted", "viewer", id)
	defer r.emit(Event{Type: ViewerDeleted, Viewer: id})
	return nil
}

// ---- housekeeping ----

func (r *Registry) flushLastSeen(ctx context.Context) error {
	r.flushMu.Lock()
	defer r.flushMu.Unlock()
	seen := map[telemetry.DeviceID]time.Time{}
	entries := map[telemetry.DeviceID]*deviceEntry{}
	r.mu.RLock()
	for id, e := range r.devices {
		if n := e.lastSeen.Load(); n > e.persistedSeen.Load() {
			seen[id] = fromNanos(n)
			entries[id] = e
		}
	}
	r.mu.RUnlock()
	if len(seen) == 0 {
		return nil
	}
	if err := r.store.SetLastSeen(ctx, seen); err != nil {
		return err
	}
	for id, e := range entries {
		e.persistedSeen.Store(nanos(seen[id]))
	}
	return nil
}

// pruneExpired deletes credentials whose rotation grace has ended (they
// are already refused; this only reclaims the space).
func (r *Registry) pruneExpired(ctx context.Context) error {
	now := r.cfg.Now()
	if s, ok := r.store.(SharedStore); ok {
		// Computed by the store, not from memory that may not have heard of
		// another instance's rotation yet; the change feed updates memory.
		return s.PruneExpired(ctx, now)
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	for owner, creds := range r.creds {
		keep := slices.DeleteFunc(slices.Clone(creds), func(c Credential) bool { return c.expired(now) })
		if len(keep) == len(creds) {
			continue
		}
		if err := r.store.Update(ctx, func(ctx context.Context, tx Tx) error { return tx.SetCredentials(ctx, owner, keep) }); err != nil {
			return err
		}
		_, viewer := r.viewers[owner]
		r.mu.Lock()
		r.setCredsLocked(owner, keep, viewer)
		r.mu.Unlock()
	}
	return nil
}
