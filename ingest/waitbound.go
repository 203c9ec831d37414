package ingest

import (
	"context"
	"sync"
	"time"
)

// waitBound is the context a WebSocket frame is consumed under: it is done
// d after its Done channel is first asked for, i.e. after the consumer
// starts to wait. A context.WithTimeout per frame would arm a timer for
// every frame; nearly all frames never wait, so this arms one only for
// those that do (the bridge asks for Done only when its queue is full).
type waitBound struct {
	d     time.Duration
	once  sync.Once
	done  chan struct{}
	timer *time.Timer
	mu    sync.Mutex
	err   error
}

var _ context.Context = (*waitBound)(nil)

func (w *waitBound) Deadline() (time.Time, bool) { return time.Time{}, false }
func (w *waitBound) Value(any) any               { return nil }

func (w *waitBound) Done() <-chan struct{} {
	w.once.Do(func() {
		w.done = make(chan struct{})
		w.timer = time.AfterFunc(w.d, func() {
			w.mu.Lock()
			w.err = context.DeadlineExceeded
			w.mu.Unlock()
			close(w.done)
		})
	})
	return w.done
}

func (w *waitBound) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// stop releases the timer, if one was armed.
func (w *waitBound) stop() {
	w.once.Do(func() {}) // no timer can be armed after this
	if w.timer != nil {
		w.timer.Stop()
	}
}
