package main

import (
	"context"
	"sync"
	"time"
)

// runP3: WebSocket single-reading frames/s acknowledged by telemetryd (after
// the InfluxDB write) against a raw gws server that only counts frames and
// acks each at once, with the same clients: P3Conns connections, each
// keeping P3Window frames unanswered (closed loop). The judged figure is
// the server process's CPU per acked frame over the measured window
// (telemetryd's, the raw server's); the rate ratio is information.
func runP3(ctx context.Context, e *env, r *result) error {
	sz := e.sz
	r.Unit = "frames/s"
	r.Goal = cpuGoal
	r.detail("connections", sz.P3Conns)
	r.detail("window_frames_per_connection", sz.P3Window)

	base, baseCPU, err := wsFrameLoad(ctx, e, r, "baseline", "ws://"+e.s.rawAddr+"/count", func(int) string { return "" }, false, "rawserver")
	if err != nil {
		return err
	}
	r.Baseline, r.BaselineCPU = base, baseCPU
	svc, svcCPU, err := wsFrameLoad(ctx, e, r, "service", "ws://"+e.s.svcAddr+"/v1/ingest", func(i int) string { return tokenFor(p3Device(i)) }, true, "telemetryd")
	if err != nil {
		return err
	}
	r.Service, r.ServiceCPU = svc, svcCPU
	e.p3Rate = svc
	r.ServiceText = fmtRate(r.Service, "frames/s")
	r.BaselineText = fmtRate(r.Baseline, "frames/s")
	r.judgeCPU(cpuLimit)
	p3Floor(e, r)
	return nil
}

// p3Floor records the CPU per frame that no implementation of the service's
// pipeline on this baseline gets under: the raw server reads a frame, finds
// its seq and writes an ack; telemetryd must also decode, normalize and
// encode it, which P7 prices in-process for the same frame — and that is
// before live fan-out, resend dedup, storage writes and acks sent only once
// durable, which cost more again.
func p3Floor(e *env, r *result) {
	if e.p7CPU <= 0 || r.BaselineCPU <= 0 {
		r.note("P7 did not run: no CPU floor (run P7 with P3 for it)")
		return
	}
	floor := r.BaselineCPU + e.p7CPU
	r.detail("cpu_floor_ns", round2(floor))
	r.detail("cpu_floor_ratio", round2(floor/r.BaselineCPU))
	r.note("CPU floor %.2f× (%.2f µs): the raw server's %.2f µs plus P7's decode+normalize+encode of the same frame, %.2f µs; "+
		"live fan-out, dedup, storage and acks after durability come on top of it", floor/r.BaselineCPU, floor/1000, r.BaselineCPU/1000, e.p7CPU/1000)
}

// wsFrameLoad runs P3's clients against url for one phase and returns the
// acked frames/s and server's CPU per acked frame in ns (server: the
// process in e.procs()).
func wsFrameLoad(ctx context.Context, e *env, r *result, name, url string, token func(int) string, profile bool, server string) (float64, float64, error) {
	sz := e.sz
	a := newAnswers()
	conns := make([]*deviceConn, sz.P3Conns)
	err := dialMany(ctx, sz.P3Conns, 16, func(i int) error {
		c := newDeviceConn(a, sz.P3Window)
		conn, err := e.dial.dial(url, token(i), c)
		if err != nil {
			return err
		}
		c.conn = conn
		conns[i] = c
		return nil
	})
	defer func() {
		for _, c := range conns {
			if c != nil {
				closeNow(c.conn)
			}
		}
	}()
	if err != nil {
		return 0, 0, err
	}
	var before metricSet
	if name == "service" {
		before, _ = e.s.metrics(ctx)
	}
	pctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			var buf []byte
			for seq := int64(0); pctx.Err() == nil; seq++ {
				buf = singleFrame(buf[:0], seq, time.Now().UnixNano(), int(seq))
				if c.send(pctx, seq, buf) != nil {
					return
				}
			}
		})
	}
	rate, frames, use, err := e.measure(ctx, r, name, profile, a.acked.Load)
	cpuNs := perUnit(use.used[server], float64(frames))
	r.detail(name+"_per_frame", use.perUnit(server, float64(frames)))
	if name == "service" {
		// Where the ack latency goes: the clients' window makes the rate
		// about window × connections / mean ack latency.
		if after, err := e.s.metrics(ctx); err == nil && before != nil {
			r.detail("service_storage", storageFigures(before, after))
		}
	}
	stop()
	wg.Wait()
	drain(conns, 10*time.Second)
	r.detail(name+"_ack_latency", a.ackLatency.summary())
	if errs := a.errorCounts(); len(errs) > 0 {
		r.detail(name+"_errors", errs)
	}
	return rate, cpuNs, err
}

// storageFigures are telemetryd's InfluxDB writes between two scrapes:
// how many, lines per write and mean write time.
func storageFigures(before, after metricSet) map[string]float64 {
	d := func(k string) float64 { return after.sum(k) - before.sum(k) }
	out := map[string]float64{"writes": d("telemetryd_influx_write_duration_seconds_count")}
	if n := out["writes"]; n > 0 {
		out["lines_per_write"] = round2(d("telemetryd_readings_written_total") / n)
		out["mean_write_ms"] = round2(1000 * d("telemetryd_influx_write_duration_seconds_sum") / n)
	}
	return out
}
