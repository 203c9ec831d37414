package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// runP9: readings/s acknowledged (204) through telemetryd's
// InfluxDB-compatible POST /api/v2/write, against InfluxDB's own /write of
// the same line-protocol bodies, with as many concurrent writers (P1's
// static gateway devices, each writing for itself with its token) on both
// sides. Uncompressed bodies on both sides, so that neither pays for
// inflating them.
func runP9(ctx context.Context, e *env, r *result) error {
	sz := e.sz
	lines := 1000 // Telegraf's default metric_batch_size
	if e.cfg.Smoke {
		lines = 100
	}
	writers := sz.P1Gateways
	r.Unit = "readings/s"
	r.Goal = "≥ 0.7"
	r.detail("writers", writers)
	r.detail("lines_per_request", lines)

	// Pre-built bodies (outside the measurement), one ring per writer; each
	// line a new point until a ring wraps around (noted).
	nb := max(4, min(200, int((e.cfg.Duration+e.warmup()).Seconds()*5)))
	if e.cfg.Smoke {
		nb = 4
	}
	base := time.Now().Add(-time.Hour).UnixNano()
	bodies := make([][][]byte, writers)
	var size int
	for w := range bodies {
		bodies[w] = make([][]byte, nb)
		for b := range bodies[w] {
			bodies[w][b] = p9Body(w, base+int64((w*nb+b)*lines), lines)
			size += len(bodies[w][b])
		}
	}
	r.detail("bytes_per_line", round2(float64(size)/float64(writers*nb*lines)))

	baseline, wrapped, err := p9Load(ctx, e, r, "baseline", false, bodies, lines,
		func(int) (string, string) { return e.s.influxURL + "/write?db=" + bulkDB + "&precision=ns", "" })
	if err != nil {
		return fmt.Errorf("InfluxDB /write: %w", err)
	}
	r.Baseline = baseline
	service, wrapped2, err := p9Load(ctx, e, r, "service", true, bodies, lines,
		func(w int) (string, string) {
			return "http://" + e.s.svcAddr + "/api/v2/write?org=bench&bucket=bench&precision=ns", "Token " + tokenFor(p1Static(w))
		})
	if err != nil {
		return fmt.Errorf("telemetryd /api/v2/write: %w", err)
	}
	if wrapped || wrapped2 {
		r.note("a writer went through its %d pre-built bodies more than once (later passes overwrite the same points)", nb)
	}
	r.Service = service
	r.ServiceText = fmtRate(r.Service, "readings/s")
	r.BaselineText = fmtRate(r.Baseline, "lines/s")
	r.judge(0.7, true)
	return nil
}

// p9Body is n lines of writer w from time first on, one series per
// sensor tag value.
func p9Body(w int, first int64, n int) []byte {
	var b bytes.Buffer
	for i := range n {
		b.WriteString("p9,site=plant-3,sensor=s")
		b.WriteString(strconv.Itoa(w*100 + i%100))
		fmt.Fprintf(&b, " temperature=%d.4,humidity=40.1,door_open=false,status=\"ok\",count=%di %d\n", 20+i%5, i, first+int64(i))
	}
	return b.Bytes()
}

// p9Load posts each writer's bodies in turn to target(w) until the phase
// ends and returns lines/s answered 204.
func p9Load(ctx context.Context, e *env, r *result, phase string, profile bool, bodies [][][]byte, linesPer int,
	target func(w int) (url, auth string)) (float64, bool, error) {
	var done atomic.Int64
	var wrapped atomic.Bool
	var firstErr atomic.Pointer[error]
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: len(bodies)}, Timeout: 60 * time.Second}
	var wg sync.WaitGroup
	for w, ring := range bodies {
		url, auth := target(w)
		wg.Go(func() {
			for i := 0; lctx.Err() == nil; i++ {
				if i >= len(ring) {
					wrapped.Store(true)
				}
				req, err := http.NewRequestWithContext(lctx, http.MethodPost, url, bytes.NewReader(ring[i%len(ring)]))
				if err != nil {
					return
				}
				req.Header.Set("Content-Type", "text/plain; charset=utf-8")
				if auth != "" {
					req.Header.Set("Authorization", auth)
				}
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
				done.Add(int64(linesPer))
			}
		})
	}
	rate, err := e.phase(ctx, r, phase, profile, done.Load)
	stop()
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return 0, false, *p
	}
	return rate, wrapped.Load(), err
}
