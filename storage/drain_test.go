package storage

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDrainReplaysInOrderThenReturns: Drain writes every spooled batch in
// order (retrying through an outage, dead-lettering the refused line),
// commits each, and returns once the spool is empty.
func TestDrainReplaysInOrderThenReturns(t *testing.T) {
	dir := t.TempDir()
	sp, _ := openTestSpool(t, filepath.Join(dir, "spool"), SpoolConfig{})
	for _, b := range []string{"m v=1 1\n", "m v=2 2\nm bad=1 3\n", "m v=4 4\n"} {
		if err := sp.Append([]byte(b)); err != nil {
			t.Fatal(err)
		}
	}
	w := &flakyWriter{down: true}
	dl := NewDeadLetters(filepath.Join(dir, "deadletters.jsonl"), 0)
	d := NewDurable(w, sp, dl, DurableConfig{RetryMin: time.Millisecond, RetryMax: 2 * time.Millisecond}, slog.New(slog.DiscardHandler))
	// Down for the first attempts: Drain retries; it is never past the
	// first batch while down, so the outage cannot reorder anything.
	go func() {
		for d.Stats().ReplayErrors < 3 {
			time.Sleep(time.Millisecond)
		}
		w.setDown(false)
	}()
	res, err := d.Drain(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(w.lines(), ""); got != "m v=1 1\nm v=2 2\nm v=4 4\n" {
		t.Fatalf("stored %q", got)
	}
	if res.Batches != 3 || res.Retries < 3 || sp.Len() != 0 {
		t.Fatalf("result %+v, spool %d records", res, sp.Len())
	}
	if letters, _ := ReadDeadLetters(dl.Path()); len(letters) != 1 || letters[0].Line != "m bad=1 3" {
		t.Fatalf("dead letters %+v", letters)
	}
}

// TestDrainStopsWithCtx: with InfluxDB down for good, Drain returns ctx's
// error and keeps every batch in the spool.
func TestDrainStopsWithCtx(t *testing.T) {
	dir := t.TempDir()
	sp, _ := openTestSpool(t, filepath.Join(dir, "spool"), SpoolConfig{})
	if err := sp.Append([]byte("m v=1 1\n")); err != nil {
		t.Fatal(err)
	}
	w := &flakyWriter{down: true}
	d := NewDurable(w, sp, NewDeadLetters(filepath.Join(dir, "dl.jsonl"), 0), DurableConfig{RetryMin: time.Millisecond, RetryMax: time.Millisecond}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for d.Stats().ReplayErrors < 2 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	if _, err := d.Drain(ctx); err != context.Canceled {
		t.Fatalf("Drain = %v, want context.Canceled", err)
	}
	if sp.Len() != 1 {
		t.Fatalf("spool holds %d records, want 1", sp.Len())
	}
}
