package devices

import (
	"context"
	"hash/fnv"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// Leader says whether this process is the one, among the instances sharing
// a registry, that does a job only one may do at a time — writing the
// Mosquitto password and ACL files (MosquittoSync). The job runs the
// election (Run), consults Leading before each run, and runs once more when
// Changed fires and it leads (the previous leader may have stopped before
// writing the latest change).
type Leader interface {
	// Run takes part in the election until ctx is done, then gives the
	// leadership up.
	Run(ctx context.Context) error
	// Leading reports whether this process leads now.
	Leading() bool
	// Changed receives a value (capacity 1; never blocks the leader) after
	// leadership was gained or lost.
	Changed() <-chan struct{}
}

// Leader returns the leadership named name among the processes sharing
// this registry's store: a PGLeader on PostgreSQL, Solo on a store no other
// process writes.
func (r *Registry) Leader(name string) Leader {
	if p, ok := r.store.(*Postgres); ok {
		return p.Leader(name, LeaderOptions{})
	}
	return Solo{}
}

var _ Leader = (*PGLeader)(nil)

// Solo is the Leader of a process that shares its registry with nobody
// (SQLite): it always leads.
type Solo struct{}

// Run implements Leader: there is nobody to elect.
func (Solo) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

// Leading implements Leader.
func (Solo) Leading() bool { return true }

// Changed implements Leader: leadership never changes (nil: never ready).
func (Solo) Changed() <-chan struct{} { return nil }

// PGLeader is leadership held as a PostgreSQL session advisory lock
// (pg_try_advisory_lock) on a dedicated connection: one session in the
// whole cluster holds it; it is released when its holder closes, dies or
// loses its connection, and another instance takes it at its next try.
//
// A holder that cannot reach the server steps down within
// Interval+PingTimeout; the server releases the lock of a silent client
// only after its TCP keepalives fail (set below to about 11 s), so the old
// holder has stepped down before anyone else can take over.
type PGLeader struct {
	cfg     *pgx.ConnConfig
	key     int64
	opts    LeaderOptions
	log     *slog.Logger
	leading atomic.Bool
	changed chan struct{}
}

// LeaderOptions tunes a PGLeader; zero fields take their defaults.
type LeaderOptions struct {
	// Interval is how often a follower tries the lock and a leader checks
	// its connection (default 1s).
	Interval time.Duration
	// PingTimeout bounds a leader's connection check (default 2s).
	PingTimeout time.Duration
}

// Leader returns the leadership named name (one lock per name) among the
// processes sharing this database. Run it to take part.
func (p *Postgres) Leader(name string, opts LeaderOptions) *PGLeader {
	if opts.Interval <= 0 {
		opts.Interval = time.Second
	}
	if opts.PingTimeout <= 0 {
		opts.PingTimeout = 2 * time.Second
	}
	h := fnv.New64a()
	h.Write([]byte("telemetryd/leader/" + name))
	cfg := p.connConfig()
	// The server notices a vanished holder (power cut, partition) through
	// keepalives: idle 5s, then 3 probes 2s apart.
	cfg.RuntimeParams["tcp_keepalives_idle"] = "5"
	cfg.RuntimeParams["tcp_keepalives_interval"] = "2"
	cfg.RuntimeParams["tcp_keepalives_count"] = "3"
	cfg.RuntimeParams["application_name"] = "telemetryd leader " + name
	return &PGLeader{
		cfg: cfg, key: int64(h.Sum64()), opts: opts,
		log: p.log.With("leader", name), changed: make(chan struct{}, 1),
	}
}

// Leading implements Leader.
func (l *PGLeader) Leading() bool { return l.leading.Load() }

// Changed implements Leader.
func (l *PGLeader) Changed() <-chan struct{} { return l.changed }

func (l *PGLeader) set(v bool) {
	if l.leading.Swap(v) == v {
		return
	}
	if v {
		l.log.Info("leadership taken")
	} else {
		l.log.Info("leadership given up")
	}
	select {
	case l.changed <- struct{}{}:
	default: // a change is already pending; Leading tells the latest
	}
}

// Run competes for the lock until ctx is done, then releases it (closing
// the session).
func (l *PGLeader) Run(ctx context.Context) error {
	defer l.set(false)
	for ctx.Err() == nil {
		conn, err := pgx.ConnectConfig(ctx, l.cfg.Copy())
		if err != nil {
			sleepCtx(ctx, l.opts.Interval)
			continue
		}
		l.session(ctx, conn)
		l.set(false)
		conn.Close(context.Background())
	}
	return nil
}

// session tries the lock on conn every Interval and, once held, checks the
// connection every Interval; it returns when the connection fails or ctx
// is done.
func (l *PGLeader) session(ctx context.Context, conn *pgx.Conn) {
	t := time.NewTicker(l.opts.Interval)
	defer t.Stop()
	for {
		if l.leading.Load() {
			pctx, cancel := context.WithTimeout(ctx, l.opts.PingTimeout)
			err := conn.Ping(pctx)
			cancel()
			if err != nil {
				if ctx.Err() == nil {
					l.log.Warn("leader lost its database connection; stepping down", "error", err)
				}
				return
			}
		} else {
			var got bool
			if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, l.key).Scan(&got); err != nil {
				return
			}
			if got {
				l.set(true)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
