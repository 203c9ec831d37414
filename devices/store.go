package devices

import (
	"context"
	"errors"
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

// ErrUnavailable: the store cannot be reached now (a shared store's server
// is down or unreachable). Nothing was changed; the same request may succeed
// later. The admin API answers it with 503. Authentication is unaffected: it
// is served from memory.
var ErrUnavailable = errors.New("registry store unavailable")

// SharedStore is a Store that several processes write (PostgreSQL, see
// OpenPostgres). Each Registry on it keeps its memory in step with changes
// made through any of them: Run watches the store and re-reads what changed.
type SharedStore interface {
	Store
	// LoadOwners returns the stored state of the devices and viewers with
	// these ids and their credentials; an id that no longer exists is absent.
	LoadOwners(ctx context.Context, ids []string) (State, error)
	// Watch calls apply with the changes made through any process until ctx
	// is done. After every (re)connection, when changes may have been
	// missed, the first call has All set. apply is never called
	// concurrently; when it fails, the changes are handed again later.
	Watch(ctx context.Context, apply func(ctx context.Context, c Changes) error) error
	// PruneExpired deletes the credentials that expired before now, in one
	// statement (other processes' rotations are never undone by it).
	PruneExpired(ctx context.Context, now time.Time) error
}

// Changes says what to re-read from a SharedStore.
type Changes struct {
	// All: anything may have changed; reload everything.
	All bool
	// IDs are the devices and viewers that changed (their row or their
	// credentials), when not All.
	IDs []string
}
