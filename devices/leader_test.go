package devices

import (
	"context"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/devices/pgtest"
)

type runningLeader struct {
	*PGLeader
	stop func()
}

func startLeader(t *testing.T, url, name string) *runningLeader {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := OpenPostgres(ctx, url, discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	l := store.Leader(name, LeaderOptions{Interval: 50 * time.Millisecond})
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = l.Run(runCtx)
	}()
	r := &runningLeader{PGLeader: l, stop: func() { stop(); <-done }}
	t.Cleanup(r.stop)
	return r
}

// exactlyOne waits until exactly one of ls leads and returns it, failing
// if two are ever seen leading at once.
func exactlyOne(t *testing.T, ls ...*runningLeader) *runningLeader {
	t.Helper()
	var got *runningLeader
	within(t, 10*time.Second, "one leader", func() bool {
		got = nil
		n := 0
		for _, l := range ls {
			if l.Leading() {
				n++
				got = l
			}
		}
		if n > 1 {
			t.Fatalf("%d leaders at once", n)
		}
		return n == 1
	})
	return got
}

func TestPGLeaderOneAtATimeAndTakeover(t *testing.T) {
	pg := pgtest.Start(t)
	a := startLeader(t, pg.URL(), "mosquitto-files")
	b := startLeader(t, pg.URL(), "mosquitto-files")
	other := startLeader(t, pg.URL(), "another-job") // its own lock
	within(t, 10*time.Second, "an unrelated lock is independent", other.Leading)

	first := exactlyOne(t, a, b)
	next := a
	if first == a {
		next = b
	}
	// The follower keeps trying and keeps failing while the leader lives.
	for range 20 {
		if next.Leading() {
			t.Fatal("both lead")
		}
		time.Sleep(10 * time.Millisecond) // sampling, not waiting for an event
	}
	select {
	case <-first.Changed():
	default:
		t.Fatal("no Changed signal on taking the lead")
	}

	// The leader goes: the lock is released and the other takes over.
	first.stop()
	if first.Leading() {
		t.Fatal("a stopped leader still leads")
	}
	within(t, 5*time.Second, "take-over", next.Leading)

	// The database drops the leader's session: it steps down, and one of
	// the living instances (it again, here the only one) leads.
	select {
	case <-next.Changed(): // the take-over's signal
	default:
	}
	terminateApp(t, pg.URL(), "telemetryd leader mosquitto-files")
	// Stepping down and taking the lock again may both happen between two
	// polls of Leading: the signal shows that leadership changed.
	select {
	case <-next.Changed():
	case <-time.After(10 * time.Second):
		t.Fatal("no step-down after losing the session")
	}
	exactlyOne(t, next)
}
