package simulator

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
)

// liveWatcher is the verifying dashboard: it subscribes to /v1/live for
// this run's readings (tag sim_run) and notes when each one arrives. It
// reconnects (and re-subscribes) if the service closes it; readings
// published while it was away count as not seen. With several service
// URLs it watches each (run per URL): a reading counts as seen on the
// first dashboard that shows it, so the union covers a cluster whether or
// not its instances share live data.
type liveWatcher struct {
	r       *runner
	sources map[string]*source // read-only once the run starts

	subscribed chan struct{} // closed once every URL's first snapshot arrived
	pendingSub atomic.Int64  // URLs still without their first snapshot
	errOnce    sync.Once
	subErr     chan error

	reconnects, foreign atomic.Uint64
}

func newLiveWatcher(r *runner, sources map[string]*source) *liveWatcher {
	w := &liveWatcher{r: r, sources: sources, subscribed: make(chan struct{}), subErr: make(chan error, 1)}
	w.pendingSub.Store(int64(len(r.liveURLs)))
	return w
}

// liveConn handles one dashboard socket.
type liveConn struct {
	gws.BuiltinEventHandler
	w      *liveWatcher
	first  *sync.Once // this URL's first snapshot
	closed chan error
}

// run keeps a subscription to url open until ctx is done.
func (w *liveWatcher) run(ctx context.Context, url string) {
	attempt := 0
	var first sync.Once
	for ctx.Err() == nil {
		lc := &liveConn{w: w, first: &first, closed: make(chan error, 1)}
		conn, err := dialGWS(ctx, lc, url, w.r.cfg.LiveToken)
		if err == nil {
			_ = conn.SetDeadline(time.Now().Add(wsIdle))
			go conn.ReadLoop()
			req := map[string]any{"op": "subscribe", "id": "sim", "devices": []string{"*"}}
			if w.r.cfg.Format.tagged() {
				req["tags"] = map[string]string{RunTag: w.r.runID}
			} // else every device: OnMessage keeps the run's own (formats.go)
			sub, _ := json.Marshal(req)
			if err = conn.WriteMessage(gws.OpcodeText, sub); err == nil {
				select {
				case err = <-lc.closed:
				case <-ctx.Done():
					_ = conn.WriteClose(1000, nil)
					return
				}
			}
			attempt = 0
		}
		w.failFirst(err)
		w.reconnects.Add(1)
		w.r.log.Warn("live dashboard connection lost; reconnecting", "url", url, "error", err)
		attempt++
		d := min(100*time.Millisecond<<min(attempt, 7), 5*time.Second)
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
}

// failFirst reports an error to whoever waits for the first subscription.
func (w *liveWatcher) failFirst(err error) {
	w.errOnce.Do(func() { w.subErr <- err })
}

// wait blocks until the first snapshot arrived (the subscription is live).
func (w *liveWatcher) wait(ctx context.Context, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-w.subscribed:
		return nil
	case err := <-w.subErr:
		return fmt.Errorf("dashboard subscription: %w", err)
	case <-t.C:
		return fmt.Errorf("dashboard subscription: no snapshot within %s", timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

type liveMessage struct {
	Type     string `json:"type"`
	Readings []struct {
		DeviceID string `json:"device_id"`
		Fields   struct {
			SimSeq *float64 `json:"sim_seq"`
		} `json:"fields"`
	} `json:"readings"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func (c *liveConn) OnPing(conn *gws.Conn, payload []byte) {
	_ = conn.SetDeadline(time.Now().Add(wsIdle))
	_ = conn.WritePong(payload)
}

func (c *liveConn) OnMessage(conn *gws.Conn, m *gws.Message) {
	defer m.Close()
	now := time.Now()
	_ = conn.SetDeadline(now.Add(wsIdle))
	w := c.w
	var msg liveMessage
	if err := json.Unmarshal(m.Bytes(), &msg); err != nil {
		w.r.log.Warn("unparsable dashboard message", "error", err)
		return
	}
	switch msg.Type {
	case "snapshot":
		c.first.Do(func() {
			if w.pendingSub.Add(-1) == 0 {
				close(w.subscribed)
			}
		})
	case "readings":
	case "error":
		if msg.Error != nil {
			w.r.log.Warn("dashboard error", "code", msg.Error.Code, "message", msg.Error.Message)
			w.failFirst(fmt.Errorf("%s: %s", msg.Error.Code, msg.Error.Message))
		}
		return
	default:
		return
	}
	ns := now.UnixNano()
	for _, rd := range msg.Readings {
		src := w.sources[rd.DeviceID]
		if src == nil || rd.Fields.SimSeq == nil {
			w.foreign.Add(1)
			continue
		}
		first := false
		var latency time.Duration
		src.update(uint32(*rd.Fields.SimSeq), func(r *rec) {
			if r.live == 0 {
				r.live, first = ns, true
				if r.sent != 0 && msg.Type == "readings" {
					latency = time.Duration(ns - r.sent)
				}
			}
		})
		if first {
			w.r.c.liveSeen.Add(1)
		}
		if latency > 0 { // a snapshot's latency is the subscription's, not the reading's
			w.r.c.live.record(latency)
		}
	}
}

func (c *liveConn) OnClose(_ *gws.Conn, err error) {
	select {
	case c.closed <- err:
	default:
	}
}
