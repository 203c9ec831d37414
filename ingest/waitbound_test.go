package ingest

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestWaitBound(t *testing.T) {
	w := &waitBound{d: 10 * time.Millisecond}
	if w.Err() != nil {
		t.Fatal("done before anyone waited")
	}
	select {
	case <-w.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("never done")
	}
	if !errors.Is(w.Err(), context.DeadlineExceeded) {
		t.Fatalf("err = %v", w.Err())
	}
	unused := &waitBound{d: time.Nanosecond}
	unused.stop()
	if unused.timer != nil || unused.Err() != nil {
		t.Fatal("a bound that was never waited on armed a timer")
	}
}
