package devices

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite" // pure Go: CGO_ENABLED=0 builds keep working

	"github.com/telemetryd/telemetryd/telemetry"
)

// migrations are applied in order, each once; schema_version records how
// many have been. Never edit or reorder a released migration: append one.
var migrations = []string{
	// 1: devices, viewers and their credentials. Times are Unix nanoseconds
	// (0: none); labels and scopes are JSON objects.
	`CREATE TABLE devices (
		id           TEXT PRIMARY KEY,
		name         TEXT NOT NULL,
		kind         TEXT NOT NULL CHECK (kind IN ('device', 'gateway')),
		labels       TEXT NOT NULL DEFAULT '{}',
		gateway      TEXT NOT NULL DEFAULT '',
		created_at   INTEGER NOT NULL,
		last_seen_at INTEGER NOT NULL DEFAULT 0,
		revoked      INTEGER NOT NULL DEFAULT 0
	);
	CREATE INDEX devices_gateway ON devices (gateway) WHERE gateway <> '';
	CREATE TABLE viewers (
		id         TEXT PRIMARY KEY,
		name       TEXT NOT NULL,
		scope      TEXT NOT NULL DEFAULT '{}',
		created_at INTEGER NOT NULL,
		revoked    INTEGER NOT NULL DEFAULT 0
	);
	CREATE TABLE credentials (
		hash           BLOB PRIMARY KEY,
		owner          TEXT NOT NULL,
		mosquitto_hash TEXT NOT NULL DEFAULT '',
		created_at     INTEGER NOT NULL,
		expires_at     INTEGER NOT NULL DEFAULT 0
	);
	CREATE INDEX credentials_owner ON credentials (owner);`,
}

// SQLite is the default Store: one database file, safe to read from other
// processes (telemetryd mosquitto-auth) while the service writes (WAL).
type SQLite struct {
	db *sql.DB
}

// OpenSQLite opens (creating it and its directory, mode 0700, if needed) the
// database at path and brings its schema up to date.
func OpenSQLite(ctx context.Context, path string) (*SQLite, error) {
	return openSQLite(ctx, path, migrations)
}

func openSQLite(ctx context.Context, path string, migs []string) (*SQLite, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("devices: registry directory: %w", err)
	}
	// The database holds token hashes: readable by its owner only.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("devices: registry database: %w", err)
	}
	f.Close()
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("devices: open registry: %w", err)
	}
	s := &SQLite{db: db}
	if err := s.migrate(ctx, migs); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// SchemaVersion returns how many migrations the database has.
func (s *SQLite) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.db.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("devices: schema version: %w", err)
	}
	return v, nil
}

// migrate applies the missing migrations in one transaction: a failure
// leaves the database as it was.
func (s *SQLite) migrate(ctx context.Context, migs []string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("devices: migrate: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("devices: migrate: %w", err)
	}
	var v int
	switch err := tx.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v); {
	case errors.Is(err, sql.ErrNoRows):
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (0)`); err != nil {
			return fmt.Errorf("devices: migrate: %w", err)
		}
	case err != nil:
		return fmt.Errorf("devices: migrate: %w", err)
	}
	if v > len(migs) {
		return fmt.Errorf("devices: registry schema version %d is newer than this telemetryd knows (%d): refusing to downgrade", v, len(migs))
	}
	for i := v; i < len(migs); i++ {
		if _, err := tx.ExecContext(ctx, migs[i]); err != nil {
			return fmt.Errorf("devices: migration %d: %w", i+1, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE schema_version SET version = ?`, len(migs)); err != nil {
		return fmt.Errorf("devices: migrate: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("devices: migrate: %w", err)
	}
	return nil
}

// Close closes the database.
func (s *SQLite) Close() error { return s.db.Close() }

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// Load implements Store.
func (s *SQLite) Load(ctx context.Context) (State, error) {
	var st State
	// One read transaction: a consistent view even while another process writes.
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return st, fmt.Errorf("devices: load: %w", err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT id, name, kind, labels, gateway, created_at, last_seen_at, revoked FROM devices ORDER BY id`)
	if err != nil {
		return st, fmt.Errorf("devices: load devices: %w", err)
	}
	for rows.Next() {
		var d Device
		var labels string
		var created, seen int64
		if err := rows.Scan(&d.ID, &d.Name, &d.Kind, &labels, &d.Gateway, &created, &seen, &d.Revoked); err != nil {
			rows.Close()
			return st, fmt.Errorf("devices: load devices: %w", err)
		}
		if err := json.Unmarshal([]byte(labels), &d.Labels); err != nil {
			rows.Close()
			return st, fmt.Errorf("devices: labels of %s: %w", d.ID, err)
		}
		d.CreatedAt, d.LastSeenAt = fromNanos(created), fromNanos(seen)
		st.Devices = append(st.Devices, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("devices: load devices: %w", err)
	}
	rows, err = tx.QueryContext(ctx, `SELECT id, name, scope, created_at, revoked FROM viewers ORDER BY id`)
	if err != nil {
		return st, fmt.Errorf("devices: load viewers: %w", err)
	}
	for rows.Next() {
		var v Viewer
		var scope string
		var created int64
		if err := rows.Scan(&v.ID, &v.Name, &scope, &created, &v.Revoked); err != nil {
			rows.Close()
			return st, fmt.Errorf("devices: load viewers: %w", err)
		}
		if err := json.Unmarshal([]byte(scope), &v.Scope); err != nil {
			rows.Close()
			return st, fmt.Errorf("devices: scope of %s: %w", v.ID, err)
		}
		v.CreatedAt = fromNanos(created)
		st.Viewers = append(st.Viewers, v)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("devices: load viewers: %w", err)
	}
	rows, err = tx.QueryContext(ctx, `SELECT hash, owner, mosquitto_hash, created_at, expires_at FROM credentials ORDER BY owner, created_at`)
	if err != nil {
		return st, fmt.Errorf("devices: load credentials: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var c Credential
		var hash []byte
		var created, expires int64
		if err := rows.Scan(&hash, &c.Owner, &c.MosquittoHash, &created, &expires); err != nil {
			return st, fmt.Errorf("devices: load credentials: %w", err)
		}
		if len(hash) != len(c.Hash) {
			return st, fmt.Errorf("devices: credential of %s: bad hash length %d", c.Owner, len(hash))
		}
		copy(c.Hash[:], hash)
		c.CreatedAt, c.ExpiresAt = fromNanos(created), fromNanos(expires)
		st.Credentials = append(st.Credentials, c)
	}
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("devices: load credentials: %w", err)
	}
	return st, nil
}

// Update implements Store.
func (s *SQLite) Update(ctx context.Context, fn func(ctx context.Context, tx Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("devices: begin: %w", err)
	}
	defer tx.Rollback()
	if err := fn(ctx, sqliteTx{tx}); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("devices: commit: %w", err)
	}
	return nil
}

// SetLastSeen implements Store.
func (s *SQLite) SetLastSeen(ctx context.Context, seen map[telemetry.DeviceID]time.Time) error {
	if len(seen) == 0 {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("devices: last seen: %w", err)
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, `UPDATE devices SET last_seen_at = ? WHERE id = ? AND last_seen_at < ?`)
	if err != nil {
		return fmt.Errorf("devices: last seen: %w", err)
	}
	defer stmt.Close()
	for id, at := range seen {
		if _, err := stmt.ExecContext(ctx, nanos(at), string(id), nanos(at)); err != nil {
			return fmt.Errorf("devices: last seen: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("devices: last seen: %w", err)
	}
	return nil
}

type sqliteTx struct{ tx *sql.Tx }

func (t sqliteTx) exec(ctx context.Context, what, query string, args ...any) error {
	if _, err := t.tx.ExecContext(ctx, query, args...); err != nil {
		return fmt.Errorf("devices: %s: %w", what, err)
	}
	return nil
}

func (t sqliteTx) PutDevice(ctx context.Context, d Device) error {
	labels, err := json.Marshal(cloneDevice(d).Labels)
	if err != nil {
		return fmt.Errorf("devices: labels: %w", err)
	}
	return t.exec(ctx, "put device", `INSERT OR REPLACE INTO devices (id, name, kind, labels, gateway, created_at, last_seen_at, revoked)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		string(d.ID), d.Name, string(d.Kind), string(labels), string(d.Gateway), nanos(d.CreatedAt), nanos(d.LastSeenAt), d.Revoked)
}

func (t sqliteTx) DeleteDevice(ctx context.Context, id telemetry.DeviceID) error {
	if err := t.exec(ctx, "delete device credentials", `DELETE FROM credentials WHERE owner = ?`, string(id)); err != nil {
		return err
	}
	return t.exec(ctx, "delete device", `DELETE FROM devices WHERE id = ?`, string(id))
}

func (t sqliteTx) PutViewer(ctx context.Context, v Viewer) error {
	scope, err := json.Marshal(cloneViewer(v).Scope)
	if err != nil {
		return fmt.Errorf("devices: scope: %w", err)
	}
	return t.exec(ctx, "put viewer", `INSERT OR REPLACE INTO viewers (id, name, scope, created_at, revoked) VALUES (?, ?, ?, ?, ?)`,
		v.ID, v.Name, string(scope), nanos(v.CreatedAt), v.Revoked)
}

func (t sqliteTx) DeleteViewer(ctx context.Context, id string) error {
	if err := t.exec(ctx, "delete viewer credentials", `DELETE FROM credentials WHERE owner = ?`, id); err != nil {
		return err
	}
	return t.exec(ctx, "delete viewer", `DELETE FROM viewers WHERE id = ?`, id)
}

func (t sqliteTx) SetCredentials(ctx context.Context, owner string, creds []Credential) error {
	if err := t.exec(ctx, "clear credentials", `DELETE FROM credentials WHERE owner = ?`, owner); err != nil {
		return err
	}
	for _, c := range creds {
		if err := t.exec(ctx, "put credential", `INSERT INTO credentials (hash, owner, mosquitto_hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?)`,
			c.Hash[:], owner, c.MosquittoHash, nanos(c.CreatedAt), nanos(c.ExpiresAt)); err != nil {
			return err
		}
	}
	return nil
}
