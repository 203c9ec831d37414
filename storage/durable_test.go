package storage

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/internal/testsupport"
	"github.com/telemetryd/telemetryd/telemetry"
)

// flakyWriter stores lines unless it is down; lines containing "bad" are
// refused for good, like InfluxDB refuses a type conflict.
type flakyWriter struct {
	mu     sync.Mutex
	down   bool
	stored []string
}

func (w *flakyWriter) Write(_ context.Context, lines []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.down {
		return &WriteError{Status: 503, Message: "down", RetryAfter: time.Millisecond}
	}
	if strings.Contains(string(lines), "bad") {
		return &WriteError{Status: 400, Message: "partial write: field type conflict"}
	}
	for _, l := range strings.SplitAfter(string(lines), "\n") {
		if l != "" {
			w.stored = append(w.stored, l)
		}
	}
	return nil
}

func (w *flakyWriter) setDown(down bool) {
	w.mu.Lock()
	w.down = down
	w.mu.Unlock()
}

func (w *flakyWriter) lines() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.stored...)
}

func newTestDurable(t *testing.T, w LineWriter, cfg SpoolConfig) (*Durable, string) {
	t.Helper()
	dir := t.TempDir()
	sp, _ := openTestSpool(t, filepath.Join(dir, "spool"), cfg)
	dl := NewDeadLetters(filepath.Join(dir, "deadletters.jsonl"), 0)
	d := NewDurable(w, sp, dl, DurableConfig{RetryMin: time.Millisecond, RetryMax: 5 * time.Millisecond}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = d.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return d, dl.Path()
}

func TestDurableSpoolsThroughAnOutageAndReplaysInOrder(t *testing.T) {
	w := &flakyWriter{}
	d, _ := newTestDurable(t, w, SpoolConfig{})
	ctx := context.Background()
	if err := d.Write(ctx, []byte("m v=1 1\n")); err != nil {
		t.Fatal(err)
	}
	w.setDown(true)
	for _, l := range []string{"m v=2 2\n", "m v=3 3\n"} {
		if err := d.Write(ctx, []byte(l)); err != nil {
			t.Fatalf("write during outage must be durable in the spool: %v", err)
		}
	}
	w.setDown(false)
	// While the spool holds anything, new writes queue behind it.
	if err := d.Write(ctx, []byte("m v=4 4\n")); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 10*time.Second, "replay", func() bool { return len(w.lines()) == 4 })
	if got := strings.Join(w.lines(), ""); got != "m v=1 1\nm v=2 2\nm v=3 3\nm v=4 4\n" {
		t.Fatalf("stored %q", got)
	}
	testsupport.Eventually(t, 10*time.Second, "empty spool", func() bool { return d.Stats().Spool.Records == 0 })
	// v=4 went to the spool unless the replay had already emptied it.
	if st := d.Stats(); st.Direct+st.Spooled != 4 || st.Spooled < 2 || st.Spool.Replayed != st.Spooled {
		t.Fatalf("stats %+v", st)
	}
}

func TestDurableDeadLettersOnlyTheBadLinesOfASpooledBatch(t *testing.T) {
	w := &flakyWriter{down: true}
	d, path := newTestDurable(t, w, SpoolConfig{})
	if err := d.Write(context.Background(), []byte("m v=1 1\nm bad=1 2\nm v=3 3\nm v=4 4\n")); err != nil {
		t.Fatal(err)
	}
	w.setDown(false)
	testsupport.Eventually(t, 10*time.Second, "replay", func() bool { return d.Stats().Spool.Records == 0 })
	if got := strings.Join(w.lines(), ""); got != "m v=1 1\nm v=3 3\nm v=4 4\n" {
		t.Fatalf("stored %q", got)
	}
	letters, err := ReadDeadLetters(path)
	if err != nil || len(letters) != 1 || letters[0].Line != "m bad=1 2" || !strings.Contains(letters[0].Error, "type conflict") {
		t.Fatalf("dead letters %+v, %v", letters, err)
	}
}

func TestDurableFullSpoolIsOverloadNotLoss(t *testing.T) {
	w := &flakyWriter{down: true}
	d, _ := newTestDurable(t, w, SpoolConfig{MaxBytes: 64})
	if err := d.Write(context.Background(), []byte("m v=1 1\n")); err != nil {
		t.Fatal(err)
	}
	err := d.Write(context.Background(), []byte("m v=2 2 with a long enough line to overflow the spool\n"))
	if !errors.Is(err, telemetry.ErrOverloaded) {
		t.Fatalf("err = %v, want ErrOverloaded", err)
	}
}

func TestReplayDeadLetters(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "dl.jsonl")
	dl := NewDeadLetters(path, 0)
	for _, l := range []string{"m v=1 1", "m bad=2 2"} {
		if err := dl.Record([]byte(l+"\n"), "type conflict"); err != nil {
			t.Fatal(err)
		}
	}
	w := &flakyWriter{}
	res, err := ReplayDeadLetters(context.Background(), dl, w)
	if err != nil || res.Replayed != 1 || res.StillRejected != 1 {
		t.Fatalf("replay = %+v, %v", res, err)
	}
	left, _ := ReadDeadLetters(path)
	if len(left) != 1 || left[0].Line != "m bad=2 2" {
		t.Fatalf("left %+v", left)
	}
}
