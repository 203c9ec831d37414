package devices

import (
	"context"
	"errors"
	"net"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/telemetryd/telemetryd/telemetry"
)

// TestSyncEvents: what a re-read of the store announces, for each kind of
// change another instance can make (the store's rows are given directly).
func TestSyncEvents(t *testing.T) {
	created := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	dev := Device{ID: "01900000-0000-7000-8000-000000000001", Name: "d", Kind: KindDevice, Labels: map[string]string{"a": "1"}, CreatedAt: created}
	cred := Credential{Hash: HashToken("tdv_one"), Owner: string(dev.ID), CreatedAt: created}
	cred2 := Credential{Hash: HashToken("tdv_two"), Owner: string(dev.ID), CreatedAt: created.Add(time.Second)}
	graced := cred
	graced.ExpiresAt = created.Add(time.Hour)
	view := Viewer{Viewer: telemetry.Viewer{ID: "01900000-0000-7000-8000-0000000000aa", Name: "v"}, CreatedAt: created}
	vcred := Credential{Hash: HashToken("tvw_one"), Owner: view.ID, CreatedAt: created}
	revoked := func(d Device) Device { d.Revoked = true; return d }
	relabel := func(d Device) Device { d.Labels = map[string]string{"a": "2"}; return d }
	revokedV := view
	revokedV.Revoked = true
	known := State{Devices: []Device{dev}, Viewers: []Viewer{view}, Credentials: []Credential{cred, vcred}}

	tests := []struct {
		name   string
		before State
		after  State
		all    bool // a full reload rather than the two ids
		want   []Event
		auth   map[string]bool // token → authenticates as a device afterwards
	}{
		{"nothing changed", known, known, false, nil, map[string]bool{"tdv_one": true}},
		{"nothing changed, full reload", known, known, true, nil, map[string]bool{"tdv_one": true}},
		{"created", State{}, known, false,
			[]Event{{Type: DeviceCreated, Device: dev.ID}, {Type: ViewerCreated, Viewer: view.ID}}, map[string]bool{"tdv_one": true}},
		{"created, full reload", State{}, known, true,
			[]Event{{Type: DeviceCreated, Device: dev.ID}, {Type: ViewerCreated, Viewer: view.ID}}, map[string]bool{"tdv_one": true}},
		{"labels", known, State{Devices: []Device{relabel(dev)}, Viewers: []Viewer{view}, Credentials: []Credential{cred, vcred}}, false,
			[]Event{{Type: DeviceUpdated, Device: dev.ID}}, map[string]bool{"tdv_one": true}},
		{"rotated with grace", known, State{Devices: []Device{dev}, Viewers: []Viewer{view}, Credentials: []Credential{graced, cred2, vcred}}, false,
			[]Event{{Type: DeviceRotated, Device: dev.ID}}, map[string]bool{"tdv_one": true, "tdv_two": true}},
		{"rotated without grace", known, State{Devices: []Device{dev}, Viewers: []Viewer{view}, Credentials: []Credential{cred2, vcred}}, false,
			[]Event{{Type: DeviceRotated, Device: dev.ID}}, map[string]bool{"tdv_one": false, "tdv_two": true}},
		{"revoked", known, State{Devices: []Device{revoked(dev)}, Viewers: []Viewer{revokedV}}, false,
			[]Event{{Type: DeviceRevoked, Device: dev.ID}, {Type: ViewerRevoked, Viewer: view.ID}}, map[string]bool{"tdv_one": false}},
		{"revoked, full reload", known, State{Devices: []Device{revoked(dev)}, Viewers: []Viewer{revokedV}}, true,
			[]Event{{Type: DeviceRevoked, Device: dev.ID}, {Type: ViewerRevoked, Viewer: view.ID}}, map[string]bool{"tdv_one": false}},
		{"deleted", known, State{}, false,
			[]Event{{Type: DeviceDeleted, Device: dev.ID}, {Type: ViewerDeleted, Viewer: view.ID}}, map[string]bool{"tdv_one": false}},
		{"deleted, full reload", known, State{}, true,
			[]Event{{Type: DeviceDeleted, Device: dev.ID}, {Type: ViewerDeleted, Viewer: view.ID}}, map[string]bool{"tdv_one": false}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newTestRegistry(t, Config{})
			r.wmu.Lock()
			r.syncLocked(tc.before, Changes{IDs: []string{string(dev.ID), view.ID}})
			c := Changes{IDs: []string{string(dev.ID), view.ID}}
			if tc.all {
				c = Changes{All: true}
			}
			got := r.syncLocked(tc.after, c)
			r.wmu.Unlock()
			sortEvents(got)
			sortEvents(tc.want)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("events %v, want %v", got, tc.want)
			}
			for tok, ok := range tc.auth {
				_, err := r.AuthenticateDevice(context.Background(), tok)
				if (err == nil) != ok {
					t.Errorf("token %s: %v, want ok=%v", tok, err, ok)
				}
				if err != nil && !errors.Is(err, telemetry.ErrUnauthorized) {
					t.Errorf("token %s: %v", tok, err)
				}
			}
			if _, err := r.Device(dev.ID); (err == nil) != (len(tc.after.Devices) == 1) {
				t.Errorf("device present: %v", err)
			}
		})
	}
}

func sortEvents(es []Event) {
	slices.SortFunc(es, func(a, b Event) int { return int(a.Type) - int(b.Type) })
}

func TestPGUnavailable(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"refused", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, true},
		{"timeout", context.DeadlineExceeded, true},
		{"caller gave up", context.Canceled, false},
		{"admin shutdown", &pgconn.PgError{Code: "57P01"}, true},
		{"cannot connect now", &pgconn.PgError{Code: "57P03"}, true},
		{"connection failure", &pgconn.PgError{Code: "08006"}, true},
		{"too many connections", &pgconn.PgError{Code: "53300"}, true},
		{"unique violation", &pgconn.PgError{Code: "23505"}, false},
		{"syntax error", &pgconn.PgError{Code: "42601"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := pgError("op", tc.err)
			if got := errors.Is(err, ErrUnavailable); got != tc.want {
				t.Fatalf("%v: unavailable %v, want %v", err, got, tc.want)
			}
			if !errors.Is(err, tc.err) {
				t.Fatalf("%v does not wrap the driver error", err)
			}
		})
	}
}
