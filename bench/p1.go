package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// runP1: readings/s acknowledged end to end, WebSocket gateways sending
// 100-reading batches, against a bulk loader writing pre-built 5 000-line
// gzip batches of the same lines straight to InfluxDB with as many
// concurrent writers as there are gateways.
func runP1(ctx context.Context, e *env, r *result) error {
	sz := e.sz
	var devices []string
	for _, g := range e.gateways {
		if len(g.Children) == 0 {
			devices = append(devices, g.ID)
		}
		devices = append(devices, g.Children...)
	}
	gatewayMode := len(e.gateways) > 0 && len(e.gateways[0].Children) > 0
	r.detail("gateways", len(e.gateways))
	r.detail("series", len(devices))
	r.detail("registry_gateways", gatewayMode)
	r.detail("batch_readings", sz.P1Batch)
	r.detail("window_frames_per_gateway", sz.P1Window)
	r.detail("inflight_readings", len(e.gateways)*sz.P1Window*sz.P1Batch)
	r.detail("bulk_inflight_lines", len(e.gateways)*sz.P1BulkLines)
	r.Unit = "readings/s"
	r.Goal = "≥ 0.7"

	// Baseline: pre-build the batches (outside the measurement), then load.
	// Enough batches for ~250 k lines/s over the window (each line a new
	// point); a faster loader wraps around and overwrites (noted).
	nb := max(8, min(800, int((e.cfg.Duration+e.warmup()).Seconds()*50)))
	if e.cfg.Smoke {
		nb = 8
	}
	base := time.Now().Add(-time.Hour).UnixNano()
	batches := make([][]byte, nb)
	var wg sync.WaitGroup
	var next atomic.Int64
	for range 2 {
		wg.Go(func() {
			for {
				b := int(next.Add(1) - 1)
				if b >= nb {
					return
				}
				batches[b] = gzipBatch(devices, b*sz.P1BulkLines, base, sz.P1BulkLines)
			}
		})
	}
	wg.Wait()
	var gz int
	for _, b := range batches {
		gz += len(b)
	}
	r.detail("bulk_batches", nb)
	r.detail("bulk_gzip_bytes_per_line", round2(float64(gz)/float64(nb*sz.P1BulkLines)))

	bulkRate, wrapped, err := bulkLoad(ctx, e, r, batches, sz.P1BulkLines)
	if err != nil {
		return fmt.Errorf("bulk loader: %w", err)
	}
	if wrapped {
		r.note("the bulk loader went through its %d pre-built batches more than once (later passes overwrite the same points)", nb)
	}
	r.Baseline = bulkRate

	// Service: gateways over WebSocket.
	a := newAnswers()
	pctx, stop := context.WithCancel(ctx)
	conns := make([]*deviceConn, len(e.gateways))
	err = dialMany(ctx, len(e.gateways), 8, func(i int) error {
		c := newDeviceConn(a, sz.P1Window)
		conn, err := e.dial.dial("ws://"+e.s.svcAddr+"/v1/ingest", e.gateways[i].Token, c)
		if err != nil {
			return err
		}
		c.conn = conn
		conns[i] = c
		return nil
	})
	if err != nil {
		stop()
		return err
	}
	var senders sync.WaitGroup
	for i, c := range conns {
		children := e.gateways[i].Children
		senders.Go(func() {
			var buf []byte
			for seq := int64(0); pctx.Err() == nil; seq++ {
				buf = batchFrame(buf[:0], seq, children, time.Now().UnixNano(), sz.P1Batch)
				if c.send(pctx, seq, buf) != nil {
					return
				}
			}
		})
	}
	rate, err := e.phase(ctx, r, "service", true, a.acked.Load)
	stop()
	senders.Wait()
	drain(conns, 10*time.Second)
	for _, c := range conns {
		closeNow(c.conn)
	}
	if err != nil {
		return err
	}
	r.Service = rate * float64(sz.P1Batch)
	r.detail("service_ack_latency", a.ackLatency.summary())
	r.detail("service_errors", a.errorCounts())
	r.ServiceText = fmtRate(r.Service, "readings/s")
	r.BaselineText = fmtRate(r.Baseline, "lines/s")
	r.judge(0.7, true)
	return nil
}

// drain waits until no frame is unanswered (or timeout).
func drain(conns []*deviceConn, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		n := 0
		for _, c := range conns {
			if c != nil && !c.isClosed() {
				n += c.outstanding()
			}
		}
		if n == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// bulkLoad posts the batches round robin from one writer per gateway and
// returns lines/s over the measured window.
func bulkLoad(ctx context.Context, e *env, r *result, batches [][]byte, linesPer int) (float64, bool, error) {
	writers := len(e.gateways)
	var lines atomic.Int64
	var cursor atomic.Int64
	var wrapped atomic.Bool
	var firstErr atomic.Pointer[error]
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: writers}, Timeout: 60 * time.Second}
	url := e.s.influxURL + "/write?db=" + bulkDB + "&precision=ns"
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for lctx.Err() == nil {
				i := cursor.Add(1) - 1
				if i >= int64(len(batches)) {
					wrapped.Store(true)
				}
				req, err := http.NewRequestWithContext(lctx, http.MethodPost, url, bytes.NewReader(batches[i%int64(len(batches))]))
				if err != nil {
					return
				}
				req.Header.Set("Content-Encoding", "gzip")
				req.Header.Set("Content-Type", "text/plain; charset=utf-8")
				resp, err := client.Do(req)
				if err != nil {
					if lctx.Err() == nil {
						firstErr.CompareAndSwap(nil, &err)
					}
					return
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusNoContent {
					err := fmt.Errorf("write: %s", resp.Status)
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				lines.Add(int64(linesPer))
			}
		})
	}
	rate, err := e.phase(ctx, r, "baseline", false, lines.Load)
	stop()
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return 0, false, *p
	}
	return rate, wrapped.Load(), err
}
