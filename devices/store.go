package devices

import (
	"context"
	"time"

	"github.com/telemetryd/telemetryd/telemetry"
)

// Store persists the registry. The Registry is its only writer within a
// process and keeps its own copy in memory, so a Store is read in full once
// (Load) and then only written. Implementations must be safe for concurrent
// use; SQLite (OpenSQLite) is the default, and the interface is small enough
// for a PostgreSQL implementation serving several instances.
type Store interface {
	// Load returns everything stored.
	Load(ctx context.Context) (State, error)
	// Update runs fn in one transaction: every change fn makes is stored,
	// or none is (fn's error is returned).
	Update(ctx context.Context, fn func(ctx context.Context, tx Tx) error) error
	// SetLastSeen records when devices were last seen (best effort; a
	// device that no longer exists is ignored).
	SetLastSeen(ctx context.Context, seen map[telemetry.DeviceID]time.Time) error
	Close() error
}

// Tx is a Store transaction.
type Tx interface {
	// PutDevice inserts or replaces a device (its credentials are untouched).
	PutDevice(ctx context.Context, d Device) error
	// DeleteDevice removes a device and its credentials.
	DeleteDevice(ctx context.Context, id telemetry.DeviceID) error
	// PutViewer inserts or replaces a viewer.
	PutViewer(ctx context.Context, v Viewer) error
	// DeleteViewer removes a viewer and its credentials.
	DeleteViewer(ctx context.Context, id string) error
	// SetCredentials replaces every credential of owner with creds.
	SetCredentials(ctx context.Context, owner string, creds []Credential) error
}

// State is the registry's full content.
type State struct {
	Devices     []Device
	Viewers     []Viewer
	Credentials []Credential
}
