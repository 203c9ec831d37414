package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/lxzan/gws"
)

// runP6: resident memory per idle device WebSocket: the RSS delta of the
// server process over P6Conns authenticated, idle sockets, for telemetryd
// (/v1/ingest) and for the raw gws server (/count). Both processes run a
// GC before each RSS reading (telemetryd through pprof's heap?gc=1).
func runP6(ctx context.Context, e *env, r *result) error {
	n := e.sz.P6Conns
	r.Unit = "bytes/conn"
	r.Goal = "≤ 1.2"
	r.detail("connections", n)

	svcGC := func(name string) {
		if e.cfg.Profile {
			if p := e.prof.heap(ctx, name); p != "" && name == r.ID {
				r.Profiles = append(r.Profiles, p)
			}
			return
		}
		if req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+e.s.adminAddr+"/debug/pprof/heap?gc=1", nil); err == nil {
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}
	}
	svcConns := func() int64 {
		m, err := e.s.metrics(ctx)
		if err != nil {
			return -1
		}
		return int64(m.get("telemetryd_ws_connections"))
	}
	svc, err := idleRSS(ctx, e, r, "service", e.s.svc.pid(), "ws://"+e.s.svcAddr+"/v1/ingest",
		func(i int) string { return tokenFor(p6Device(i)) }, svcConns, func() { svcGC(r.ID + "-before") }, func() { svcGC(r.ID) })
	if err != nil {
		return err
	}
	rawConns := func() int64 {
		st, err := e.s.rawStats(ctx, false)
		if err != nil {
			return -1
		}
		return st.Conns
	}
	rawGC := func() { _, _ = e.s.rawStats(ctx, true) }
	raw, err := idleRSS(ctx, e, r, "baseline", e.s.raw.pid(), "ws://"+e.s.rawAddr+"/count",
		func(int) string { return "" }, rawConns, rawGC, rawGC)
	if err != nil {
		return err
	}
	r.Service, r.Baseline = svc, raw
	r.ServiceText = fmt.Sprintf("%.1f KiB/conn", svc/1024)
	r.BaselineText = fmt.Sprintf("%.1f KiB/conn", raw/1024)
	r.judge(1.2, false)
	return nil
}

// idleRSS opens n idle sockets to url and returns the server's RSS growth
// per socket; conns() reports the server's open sockets, gcBefore/gcAfter
// make it collect garbage before the readings.
func idleRSS(ctx context.Context, e *env, r *result, name string, pid int, url string, token func(int) string,
	conns func() int64, gcBefore, gcAfter func()) (float64, error) {
	n := e.sz.P6Conns
	c0 := conns()
	gcBefore()
	rss0, err := rssBytes(pid)
	if err != nil {
		return 0, err
	}
	socks := make([]*gws.Conn, n)
	defer func() {
		for _, c := range socks {
			closeNow(c)
		}
		// Wait for the server to let go, so the next phase starts clean.
		deadline := time.Now().Add(30 * time.Second)
		for conns() > c0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
	}()
	t0 := time.Now()
	err = dialMany(ctx, n, 64, func(i int) error {
		c, err := e.dial.dial(url, token(i), &deviceConn{a: newAnswers(), window: make(chan struct{}, 1), closed: make(chan struct{})})
		socks[i] = c
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("%s: opening %d sockets: %w", name, n, err)
	}
	r.detail(name+"_connects_per_s", round2(float64(n)/time.Since(t0).Seconds()))
	if err := waitCount(ctx, conns, c0+int64(n), 30*time.Second); err != nil {
		return 0, fmt.Errorf("%s: server sockets: %w", name, err)
	}
	sleepCtx(ctx, time.Second) // settle: handshake garbage, goroutine stacks
	gcAfter()
	rss1, err := rssBytes(pid)
	if err != nil {
		return 0, err
	}
	r.detail(name+"_rss_mib", map[string]float64{"before": round2(float64(rss0) / (1 << 20)), "after": round2(float64(rss1) / (1 << 20))})
	return float64(rss1-rss0) / float64(n), nil
}
