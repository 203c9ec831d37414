package devices

import (
	"context"
	"maps"
	"slices"

	"github.com/telemetryd/telemetryd/telemetry"
)

// Changes made through other processes sharing the store (SharedStore)
// reach this Registry here: the changed owners are re-read and memory is
// brought in step with the store, announcing to subscribers what a local
// change would have announced — so a device revoked on another instance has
// its sockets here closed through the same Subscribe callback.

// watch follows a shared store's changes until ctx is done.
func (r *Registry) watch(ctx context.Context, s SharedStore) {
	_ = s.Watch(ctx, r.applyChanges)
}

// applyChanges re-reads what changed and applies it. It holds wmu while it
// reads, so that a local change cannot interleave between the read and the
// apply (memory never goes back to an older state).
func (r *Registry) applyChanges(ctx context.Context, c Changes) error {
	s, ok := r.store.(SharedStore)
	if !ok {
		return nil
	}
	r.wmu.Lock()
	var st State
	var err error
	if c.All {
		st, err = s.Load(ctx)
	} else {
		st, err = s.LoadOwners(ctx, c.IDs)
	}
	if err != nil {
		r.wmu.Unlock()
		return err
	}
	events := r.syncLocked(st, c)
	r.wmu.Unlock()
	for _, e := range events {
		r.emit(e)
	}
	return nil
}

// syncLocked makes memory hold st for the owners c names (all of them when
// c.All) and returns the events the differences amount to. Callers hold wmu.
func (r *Registry) syncLocked(st State, c Changes) []Event {
	devs := make(map[string]Device, len(st.Devices))
	for _, d := range st.Devices {
		devs[string(d.ID)] = d
	}
	viewers := make(map[string]Viewer, len(st.Viewers))
	for _, v := range st.Viewers {
		viewers[v.ID] = v
	}
	creds := map[string][]Credential{}
	for _, cr := range st.Credentials {
		creds[cr.Owner] = append(creds[cr.Owner], cr)
	}
	scope := c.IDs
	if c.All {
		set := map[string]struct{}{}
		for id := range r.devices {
			set[string(id)] = struct{}{}
		}
		for id := range r.viewers {
			set[id] = struct{}{}
		}
		for id := range r.creds {
			set[id] = struct{}{}
		}
		for id := range devs {
			set[id] = struct{}{}
		}
		for id := range viewers {
			set[id] = struct{}{}
		}
		scope = slices.Sorted(maps.Keys(set))
	}
	// Find what differs first, without the read lock's writer side: only
	// wmu holders (this one) change the maps, and authentication must not
	// wait for a comparison of the whole registry.
	scope = slices.DeleteFunc(scope, func(id string) bool {
		return r.unchanged(id, devs, viewers, creds)
	})
	if len(scope) == 0 {
		return nil
	}
	var events []Event
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range scope {
		nd, hasD := devs[id]
		nv, hasV := viewers[id]
		nc := creds[id]
		switch {
		case hasD:
			events = append(events, r.syncDeviceLocked(nd, nc)...)
		case hasV:
			events = append(events, r.syncViewerLocked(nv, nc)...)
		default:
			if e := r.devices[telemetry.DeviceID(id)]; e != nil {
				delete(r.devices, e.d.ID)
				if i, found := slices.BinarySearch(r.order, e.d.ID); found {
					r.order = slices.Delete(r.order, i, i+1)
				}
				events = append(events, Event{Type: DeviceDeleted, Device: e.d.ID})
			}
			if r.viewers[id] != nil {
				delete(r.viewers, id)
				events = append(events, Event{Type: ViewerDeleted, Viewer: id})
			}
			r.setCredsLocked(id, nil, false)
		}
	}
	if len(events) > 0 {
		r.log.Info("registry: applied changes made through other instances", "events", len(events), "full_reload", c.All)
	}
	return events
}

// unchanged reports whether memory already holds the stored state of id.
// Callers hold wmu.
func (r *Registry) unchanged(id string, devs map[string]Device, viewers map[string]Viewer, creds map[string][]Credential) bool {
	if !slices.EqualFunc(r.creds[id], creds[id], sameCredential) {
		return false
	}
	d, hasD := devs[id]
	e := r.devices[telemetry.DeviceID(id)]
	if hasD != (e != nil) || hasD && !sameDevice(e.d, d) {
		return false
	}
	v, hasV := viewers[id]
	old := r.viewers[id]
	return hasV == (old != nil) && (!hasV || sameViewer(*old, v))
}

func sameDevice(a, b Device) bool {
	return a.ID == b.ID && a.Name == b.Name && a.Kind == b.Kind && a.Gateway == b.Gateway && a.Revoked == b.Revoked &&
		a.CreatedAt.Equal(b.CreatedAt) && maps.Equal(a.Labels, b.Labels)
}

func sameViewer(a, b Viewer) bool {
	return a.ID == b.ID && a.Name == b.Name && a.Revoked == b.Revoked && a.CreatedAt.Equal(b.CreatedAt) && maps.Equal(a.Scope, b.Scope)
}

func (r *Registry) syncDeviceLocked(d Device, creds []Credential) []Event {
	d = cloneDevice(d)
	var events []Event
	e := r.devices[d.ID]
	if e == nil {
		e = &deviceEntry{d: d, tags: labelTags(d.Labels)}
		e.lastSeen.Store(nanos(d.LastSeenAt))
		e.persistedSeen.Store(nanos(d.LastSeenAt))
		r.devices[d.ID] = e
		if i, found := slices.BinarySearch(r.order, d.ID); !found {
			r.order = slices.Insert(r.order, i, d.ID)
		}
		t := DeviceCreated
		if d.Revoked {
			t = DeviceRevoked
		}
		events = append(events, Event{Type: t, Device: d.ID})
	} else {
		old := e.d
		switch {
		case d.Revoked && !old.Revoked:
			events = append(events, Event{Type: DeviceRevoked, Device: d.ID})
		case !sameDevice(old, d):
			events = append(events, Event{Type: DeviceUpdated, Device: d.ID})
		}
		if n := nanos(d.LastSeenAt); n > e.lastSeen.Load() {
			e.lastSeen.Store(n)
		}
		if n := nanos(d.LastSeenAt); n > e.persistedSeen.Load() {
			e.persistedSeen.Store(n)
		}
		d.LastSeenAt = old.LastSeenAt
		e.d = d
		e.tags = labelTags(d.Labels)
	}
	if !slices.EqualFunc(r.creds[string(d.ID)], creds, sameCredential) {
		r.setCredsLocked(string(d.ID), creds, false)
		if len(events) == 0 {
			events = append(events, Event{Type: DeviceRotated, Device: d.ID})
		}
	}
	return events
}

func (r *Registry) syncViewerLocked(v Viewer, creds []Credential) []Event {
	v = cloneViewer(v)
	var events []Event
	switch old := r.viewers[v.ID]; {
	case old == nil:
		t := ViewerCreated
		if v.Revoked {
			t = ViewerRevoked
		}
		events = append(events, Event{Type: t, Viewer: v.ID})
	case v.Revoked && !old.Revoked:
		events = append(events, Event{Type: ViewerRevoked, Viewer: v.ID})
	}
	r.viewers[v.ID] = &v
	if !slices.EqualFunc(r.creds[v.ID], creds, sameCredential) {
		r.setCredsLocked(v.ID, creds, true)
	}
	return events
}

func sameCredential(a, b Credential) bool {
	return a.Hash == b.Hash && a.Owner == b.Owner && a.MosquittoHash == b.MosquittoHash &&
		a.CreatedAt.Equal(b.CreatedAt) && a.ExpiresAt.Equal(b.ExpiresAt)
}
