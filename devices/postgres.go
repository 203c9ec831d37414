package devices

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/telemetryd/telemetryd/telemetry"
)

// pgNotifyChannel carries the id of every device or viewer whose row or
// credentials changed (the triggers of migration 1 send it on commit).
const pgNotifyChannel = "telemetryd_registry"

// pgMigrationLock serializes schema migrations of instances starting at once
// (a transaction-scoped advisory lock).
const pgMigrationLock int64 = 0x74656c656d657472 // "telemetr"

// pgMigrations are applied in order, each once; schema_version records how
// many have been. Never edit or reorder a released migration: append one.
// Times are Unix nanoseconds (0: none), as in SQLite, so that a value
// survives the round trip exactly.
var pgMigrations = []string{
	// 1: devices, viewers, credentials, and the triggers that announce
	// every change except last-seen times (which would flood the channel).
	`CREATE TABLE devices (
		id           TEXT PRIMARY KEY,
		name         TEXT NOT NULL,
		kind         TEXT NOT NULL CHECK (kind IN ('device', 'gateway')),
		labels       JSONB NOT NULL DEFAULT '{}',
		gateway      TEXT NOT NULL DEFAULT '',
		created_at   BIGINT NOT NULL,
		last_seen_at BIGINT NOT NULL DEFAULT 0,
		revoked      BOOLEAN NOT NULL DEFAULT false
	);
	CREATE INDEX devices_gateway ON devices (gateway) WHERE gateway <> '';
	CREATE TABLE viewers (
		id         TEXT PRIMARY KEY,
		name       TEXT NOT NULL,
		scope      JSONB NOT NULL DEFAULT '{}',
		created_at BIGINT NOT NULL,
		revoked    BOOLEAN NOT NULL DEFAULT false
	);
	CREATE TABLE credentials (
		hash           BYTEA PRIMARY KEY,
		owner          TEXT NOT NULL,
		mosquitto_hash TEXT NOT NULL DEFAULT '',
		created_at     BIGINT NOT NULL,
		expires_at     BIGINT NOT NULL DEFAULT 0
	);
	CREATE INDEX credentials_owner ON credentials (owner);
	CREATE FUNCTION telemetryd_notify_id() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		IF TG_OP = 'DELETE' THEN
			PERFORM pg_notify('` + pgNotifyChannel + `', OLD.id);
		ELSE
			PERFORM pg_notify('` + pgNotifyChannel + `', NEW.id);
		END IF;
		RETURN NULL;
	END $$;
	CREATE FUNCTION telemetryd_notify_owner() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		IF TG_OP = 'DELETE' THEN
			PERFORM pg_notify('` + pgNotifyChannel + `', OLD.owner);
		ELSE
			PERFORM pg_notify('` + pgNotifyChannel + `', NEW.owner);
		END IF;
		RETURN NULL;
	END $$;
	CREATE TRIGGER devices_notify AFTER INSERT OR DELETE ON devices
		FOR EACH ROW EXECUTE FUNCTION telemetryd_notify_id();
	CREATE TRIGGER devices_notify_update AFTER UPDATE ON devices
		FOR EACH ROW WHEN ((OLD.name, OLD.kind, OLD.labels, OLD.gateway, OLD.created_at, OLD.revoked)
			IS DISTINCT FROM (NEW.name, NEW.kind, NEW.labels, NEW.gateway, NEW.created_at, NEW.revoked))
		EXECUTE FUNCTION telemetryd_notify_id();
	CREATE TRIGGER viewers_notify AFTER INSERT OR DELETE OR UPDATE ON viewers
		FOR EACH ROW EXECUTE FUNCTION telemetryd_notify_id();
	CREATE TRIGGER credentials_notify AFTER INSERT OR DELETE OR UPDATE ON credentials
		FOR EACH ROW EXECUTE FUNCTION telemetryd_notify_owner();`,
}

// pgOpTimeout bounds one store operation: a server that stops answering
// (a partition, not a refusal) turns into ErrUnavailable, not a hung request.
const pgOpTimeout = 10 * time.Second

// pgListenIdle is how long the change feed waits in silence before it
// checks that its connection still works (pgListenPing bounds the check): a
// connection the network silently lost is replaced, and everything
// reloaded, within their sum.
const (
	pgListenIdle = 15 * time.Second
	pgListenPing = 5 * time.Second
)

// pgMaxPending bounds the ids a watch collects while the previous batch is
// applied; past it the batch becomes a full reload (same result, bounded
// memory).
const pgMaxPending = 10000

// Postgres is the shared Store: several telemetryd instances use one
// database, each keeping its registry in memory and learning of the others'
// changes through LISTEN/NOTIFY (Watch). Errors that mean the server cannot
// be reached wrap ErrUnavailable.
type Postgres struct {
	pool       *pgxpool.Pool
	log        *slog.Logger
	listenIdle time.Duration // pgListenIdle; shorter in tests
}

// OpenPostgres connects to the database at url (postgres://…) and brings
// its schema up to date.
func OpenPostgres(ctx context.Context, url string, log *slog.Logger) (*Postgres, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgconn redacts the password in its parse errors.
		return nil, fmt.Errorf("devices: registry URL: %w", err)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		// A server that does not answer must turn into ErrUnavailable, not a hang.
		cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	if cfg.PingTimeout == 0 {
		cfg.PingTimeout = 2 * time.Second
	}
	cfg.MaxConns = max(cfg.MaxConns, 4)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, pgError("connect", err)
	}
	p := &Postgres{pool: pool, log: log, listenIdle: pgListenIdle}
	if err := p.migrate(ctx, pgMigrations); err != nil {
		pool.Close()
		return nil, err
	}
	return p, nil
}

// Close closes the connections.
func (p *Postgres) Close() error {
	p.pool.Close()
	return nil
}

// connConfig is the configuration of a dedicated connection (LISTEN,
// advisory locks): one outside the pool, whose session is its own.
func (p *Postgres) connConfig() *pgx.ConnConfig {
	c := p.pool.Config().ConnConfig.Copy()
	if c.RuntimeParams == nil {
		c.RuntimeParams = map[string]string{}
	}
	return c
}

// pgError wraps a driver error; one that means the server cannot be reached
// (network, refused, timeout, shutdown, too many connections) also wraps
// ErrUnavailable.
func pgError(what string, err error) error {
	if pgUnavailable(err) {
		return fmt.Errorf("devices: %s: %w: %w", what, ErrUnavailable, err)
	}
	return fmt.Errorf("devices: %s: %w", what, err)
}

func pgUnavailable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		// Class 08: connection exception; 53: insufficient resources;
		// 57P01-03: shutting down, crash, not yet accepting connections.
		return strings.HasPrefix(pe.Code, "08") || strings.HasPrefix(pe.Code, "53") ||
			pe.Code == "57P01" || pe.Code == "57P02" || pe.Code == "57P03"
	}
	// The caller giving up is not the server's fault; anything else that is
	// not an answer from the server (refused, reset, timeout) is.
	return !errors.Is(err, context.Canceled)
}

// SchemaVersion returns how many migrations the database has.
func (p *Postgres) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	if err := p.pool.QueryRow(ctx, `SELECT version FROM schema_version`).Scan(&v); err != nil {
		return 0, pgError("schema version", err)
	}
	return v, nil
}

// migrate applies the missing migrations in one transaction, under an
// advisory lock so that instances starting together take turns.
func (p *Postgres) migrate(ctx context.Context, migs []string) error {
	tx, err := p.pool.Begin(ctx)
	if err != nil {
		return pgError("migrate", err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, pgMigrationLock); err != nil {
		return pgError("migrate", err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return pgError("migrate", err)
	}
	var v int
	switch err := tx.QueryRow(ctx, `SELECT version FROM schema_version`).Scan(&v); {
	case errors.Is(err, pgx.ErrNoRows):
		if _, err := tx.Exec(ctx, `INSERT INTO schema_version (version) VALUES (0)`); err != nil {
			return pgError("migrate", err)
		}
	case err != nil:
		return pgError("migrate", err)
	}
	if v > len(migs) {
		return fmt.Errorf("devices: registry schema version %d is newer than this telemetryd knows (%d): refusing to downgrade", v, len(migs))
	}
	for i := v; i < len(migs); i++ {
		if _, err := tx.Exec(ctx, migs[i]); err != nil {
			return pgError(fmt.Sprintf("migration %d", i+1), err)
		}
	}
	if _, err := tx.Exec(ctx, `UPDATE schema_version SET version = $1`, len(migs)); err != nil {
		return pgError("migrate", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return pgError("migrate", err)
	}
	return nil
}

// Load implements Store.
func (p *Postgres) Load(ctx context.Context) (State, error) { return p.load(ctx, nil) }

// LoadOwners implements SharedStore.
func (p *Postgres) LoadOwners(ctx context.Context, ids []string) (State, error) {
	if len(ids) == 0 {
		return State{}, nil
	}
	return p.load(ctx, ids)
}

// load reads everything (ids nil) or the given owners, in one snapshot.
func (p *Postgres) load(ctx context.Context, ids []string) (State, error) {
	var st State
	ctx, cancel := context.WithTimeout(ctx, pgOpTimeout)
	defer cancel()
	tx, err := p.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return st, pgError("load", err)
	}
	defer tx.Rollback(ctx)
	where, args := "", []any{}
	if ids != nil {
		where, args = " WHERE id = ANY($1)", []any{ids}
	}
	rows, err := tx.Query(ctx, `SELECT id, name, kind, labels, gateway, created_at, last_seen_at, revoked FROM devices`+where+` ORDER BY id`, args...)
	if err != nil {
		return st, pgError("load devices", err)
	}
	for rows.Next() {
		var d Device
		var id, kind, gateway string
		var labels []byte
		var created, seen int64
		if err := rows.Scan(&id, &d.Name, &kind, &labels, &gateway, &created, &seen, &d.Revoked); err != nil {
			rows.Close()
			return st, pgError("load devices", err)
		}
		d.ID, d.Kind, d.Gateway = telemetry.DeviceID(id), Kind(kind), telemetry.DeviceID(gateway)
		if err := json.Unmarshal(labels, &d.Labels); err != nil {
			rows.Close()
			return st, fmt.Errorf("devices: labels of %s: %w", d.ID, err)
		}
		d.CreatedAt, d.LastSeenAt = fromNanos(created), fromNanos(seen)
		st.Devices = append(st.Devices, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return st, pgError("load devices", err)
	}
	rows, err = tx.Query(ctx, `SELECT id, name, scope, created_at, revoked FROM viewers`+where+` ORDER BY id`, args...)
	if err != nil {
		return st, pgError("load viewers", err)
	}
	for rows.Next() {
		var v Viewer
		var scope []byte
		var created int64
		if err := rows.Scan(&v.ID, &v.Name, &scope, &created, &v.Revoked); err != nil {
			rows.Close()
			return st, pgError("load viewers", err)
		}
		if err := json.Unmarshal(scope, &v.Scope); err != nil {
			rows.Close()
			return st, fmt.Errorf("devices: scope of %s: %w", v.ID, err)
		}
		v.CreatedAt = fromNanos(created)
		st.Viewers = append(st.Viewers, v)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return st, pgError("load viewers", err)
	}
	if ids != nil {
		where = " WHERE owner = ANY($1)"
	}
	rows, err = tx.Query(ctx, `SELECT hash, owner, mosquitto_hash, created_at, expires_at FROM credentials`+where+` ORDER BY owner, created_at, hash`, args...)
	if err != nil {
		return st, pgError("load credentials", err)
	}
	defer rows.Close()
	for rows.Next() {
		var c Credential
		var hash []byte
		var created, expires int64
		if err := rows.Scan(&hash, &c.Owner, &c.MosquittoHash, &created, &expires); err != nil {
			return st, pgError("load credentials", err)
		}
		if len(hash) != len(c.Hash) {
			return st, fmt.Errorf("devices: credential of %s: bad hash length %d", c.Owner, len(hash))
		}
		copy(c.Hash[:], hash)
		c.CreatedAt, c.ExpiresAt = fromNanos(created), fromNanos(expires)
		st.Credentials = append(st.Credentials, c)
	}
	if err := rows.Err(); err != nil {
		return st, pgError("load credentials", err)
	}
	return st, nil
}

// Update implements Store.
func (p *Postgres) Update(ctx context.Context, fn func(ctx context.Context, tx Tx) error) error {
	ctx, cancel := context.WithTimeout(ctx, pgOpTimeout)
	defer cancel()
	tx, err := p.pool.Begin(ctx)
	if err != nil {
		return pgError("begin", err)
	}
	defer tx.Rollback(ctx)
	if err := fn(ctx, pgTx{tx}); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return pgError("commit", err)
	}
	return nil
}

// SetLastSeen implements Store (one statement; it notifies nobody).
func (p *Postgres) SetLastSeen(ctx context.Context, seen map[telemetry.DeviceID]time.Time) error {
	if len(seen) == 0 {
		return nil
	}
	ids := make([]string, 0, len(seen))
	ats := make([]int64, 0, len(seen))
	for id, at := range seen {
		ids = append(ids, string(id))
		ats = append(ats, nanos(at))
	}
	ctx, cancel := context.WithTimeout(ctx, pgOpTimeout)
	defer cancel()
	_, err := p.pool.Exec(ctx, `UPDATE devices SET last_seen_at = v.at
		FROM unnest($1::text[], $2::bigint[]) AS v(id, at)
		WHERE devices.id = v.id AND devices.last_seen_at < v.at`, ids, ats)
	if err != nil {
		return pgError("last seen", err)
	}
	return nil
}

// PruneExpired implements SharedStore.
func (p *Postgres) PruneExpired(ctx context.Context, now time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, pgOpTimeout)
	defer cancel()
	if _, err := p.pool.Exec(ctx, `DELETE FROM credentials WHERE expires_at <> 0 AND expires_at <= $1`, nanos(now)); err != nil {
		return pgError("prune credentials", err)
	}
	return nil
}

// Watch implements SharedStore: a dedicated connection LISTENs; the ids it
// hears are collected (bounded by pgMaxPending, then a full reload) and
// applied in batches by a second goroutine, so that a slow apply never
// stalls the connection. A lost connection is retried every second, and the
// first batch after each connection is a full reload.
func (p *Postgres) Watch(ctx context.Context, apply func(ctx context.Context, c Changes) error) error {
	pend := &pgPending{ids: map[string]struct{}{}, signal: make(chan struct{}, 1)}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.applyLoop(ctx, pend, apply)
	}()
	defer wg.Wait()
	down := false
	for ctx.Err() == nil {
		cfg := p.connConfig()
		cfg.RuntimeParams["application_name"] = "telemetryd registry feed"
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err == nil {
			if _, err = conn.Exec(ctx, `LISTEN `+pgNotifyChannel); err != nil {
				conn.Close(context.Background())
			}
		}
		if err != nil {
			if !down && ctx.Err() == nil {
				p.log.Warn("registry: lost the change feed; serving from memory, retrying", "error", err)
				down = true
			}
			sleepCtx(ctx, time.Second)
			continue
		}
		if down {
			p.log.Info("registry: change feed back; reloading everything")
			down = false
		}
		// Changes made while nobody listened were not announced.
		pend.markAll()
		for {
			n, err := waitNotification(ctx, conn, p.listenIdle)
			if err != nil {
				if ctx.Err() == nil {
					p.log.Warn("registry: lost the change feed; serving from memory, retrying", "error", err)
					down = true
				}
				break
			}
			if n != nil {
				pend.add(n.Payload)
			}
		}
		conn.Close(context.Background())
	}
	return nil
}

// waitNotification waits for the next notification; after idle of silence
// it pings the connection and returns (nil, nil) if it still works.
func waitNotification(ctx context.Context, conn *pgx.Conn, idle time.Duration) (*pgconn.Notification, error) {
	wctx, cancel := context.WithTimeout(ctx, idle)
	n, err := conn.WaitForNotification(wctx)
	cancel()
	if n != nil {
		return n, nil
	}
	if err == nil || ctx.Err() != nil || wctx.Err() == nil {
		return n, err
	}
	// Our own deadline: the connection stays usable (pgx interrupts the
	// wait with a read deadline), so ask the server whether it is there.
	pctx, cancel := context.WithTimeout(ctx, pgListenPing)
	defer cancel()
	if err := conn.Ping(pctx); err != nil {
		return nil, err
	}
	return nil, nil
}

func (p *Postgres) applyLoop(ctx context.Context, pend *pgPending, apply func(context.Context, Changes) error) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-pend.signal:
		}
		c := pend.take()
		if err := apply(ctx, c); err != nil {
			if ctx.Err() != nil {
				return
			}
			p.log.Warn("registry: applying changes from the store failed; retrying", "error", err)
			pend.merge(c)
			sleepCtx(ctx, 500*time.Millisecond)
		}
	}
}

// pgPending is the set of changes heard and not yet applied.
type pgPending struct {
	mu     sync.Mutex
	all    bool
	ids    map[string]struct{}
	signal chan struct{} // capacity 1: a batch is waiting
}

func (q *pgPending) wake() {
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

func (q *pgPending) add(id string) {
	q.mu.Lock()
	if !q.all {
		q.ids[id] = struct{}{}
		if len(q.ids) > pgMaxPending {
			q.all, q.ids = true, map[string]struct{}{}
		}
	}
	q.mu.Unlock()
	q.wake()
}

func (q *pgPending) markAll() {
	q.mu.Lock()
	q.all, q.ids = true, map[string]struct{}{}
	q.mu.Unlock()
	q.wake()
}

func (q *pgPending) merge(c Changes) {
	if c.All {
		q.markAll()
		return
	}
	for _, id := range c.IDs {
		q.add(id)
	}
}

func (q *pgPending) take() Changes {
	q.mu.Lock()
	defer q.mu.Unlock()
	c := Changes{All: q.all}
	if !q.all {
		for id := range q.ids {
			c.IDs = append(c.IDs, id)
		}
	}
	q.all, q.ids = false, map[string]struct{}{}
	return c
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

type pgTx struct{ tx pgx.Tx }

func (t pgTx) exec(ctx context.Context, what, query string, args ...any) error {
	if _, err := t.tx.Exec(ctx, query, args...); err != nil {
		return pgError(what, err)
	}
	return nil
}

// PutDevice upserts; revocation is one-way in the store, so that an
// instance editing a device it has not yet heard was revoked cannot
// un-revoke it.
func (t pgTx) PutDevice(ctx context.Context, d Device) error {
	labels, err := json.Marshal(cloneDevice(d).Labels)
	if err != nil {
		return fmt.Errorf("devices: labels: %w", err)
	}
	return t.exec(ctx, "put device", `INSERT INTO devices (id, name, kind, labels, gateway, created_at, last_seen_at, revoked)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind, labels = EXCLUDED.labels,
			gateway = EXCLUDED.gateway, created_at = EXCLUDED.created_at,
			last_seen_at = GREATEST(devices.last_seen_at, EXCLUDED.last_seen_at),
			revoked = devices.revoked OR EXCLUDED.revoked`,
		string(d.ID), d.Name, string(d.Kind), labels, string(d.Gateway), nanos(d.CreatedAt), nanos(d.LastSeenAt), d.Revoked)
}

func (t pgTx) DeleteDevice(ctx context.Context, id telemetry.DeviceID) error {
	if err := t.exec(ctx, "delete device credentials", `DELETE FROM credentials WHERE owner = $1`, string(id)); err != nil {
		return err
	}
	return t.exec(ctx, "delete device", `DELETE FROM devices WHERE id = $1`, string(id))
}

// PutViewer upserts; revocation is one-way, as for devices.
func (t pgTx) PutViewer(ctx context.Context, v Viewer) error {
	scope, err := json.Marshal(cloneViewer(v).Scope)
	if err != nil {
		return fmt.Errorf("devices: scope: %w", err)
	}
	return t.exec(ctx, "put viewer", `INSERT INTO viewers (id, name, scope, created_at, revoked) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, scope = EXCLUDED.scope, created_at = EXCLUDED.created_at,
			revoked = viewers.revoked OR EXCLUDED.revoked`,
		v.ID, v.Name, scope, nanos(v.CreatedAt), v.Revoked)
}

func (t pgTx) DeleteViewer(ctx context.Context, id string) error {
	if err := t.exec(ctx, "delete viewer credentials", `DELETE FROM credentials WHERE owner = $1`, id); err != nil {
		return err
	}
	return t.exec(ctx, "delete viewer", `DELETE FROM viewers WHERE id = $1`, id)
}

func (t pgTx) SetCredentials(ctx context.Context, owner string, creds []Credential) error {
	if err := t.exec(ctx, "clear credentials", `DELETE FROM credentials WHERE owner = $1`, owner); err != nil {
		return err
	}
	for _, c := range creds {
		if err := t.exec(ctx, "put credential", `INSERT INTO credentials (hash, owner, mosquitto_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)`,
			c.Hash[:], owner, c.MosquittoHash, nanos(c.CreatedAt), nanos(c.ExpiresAt)); err != nil {
			return err
		}
	}
	return nil
}
