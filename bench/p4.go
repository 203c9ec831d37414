package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
)

// runP4: dashboard deliveries/s — readings delivered to dashboards, summed
// over P4Subscribers /v1/live sockets each subscribed to everything — fed
// by device sockets sending single-reading frames as fast as the fan-out
// keeps up. Baseline: the raw server's gws Broadcaster loop fed the same
// readings in their dashboard form (same bytes per reading) and, like the
// service's hub, coalescing what is waiting into one frame per broadcast.
// Feeders stay at most P4Lead readings ahead of the average subscriber, so
// neither side sheds load (the service drops dashboards more than 256
// frames behind) and both coalesce under the same backlog.
func runP4(ctx context.Context, e *env, r *result) error {
	sz := e.sz
	r.Unit = "deliveries/s"
	r.Goal = "≥ 0.8"
	r.detail("subscribers", sz.P4Subscribers)
	r.detail("feeders", sz.P4Feeders)
	r.detail("lead_limit_readings", sz.P4Lead)

	before, _ := e.s.metrics(ctx)
	svc, _, _, err := fanOut(ctx, e, r, "service", e.dial.dial,
		"ws://"+e.s.svcAddr+"/v1/live", e.s.adminTok,
		"ws://"+e.s.svcAddr+"/v1/ingest", func(i int) string { return tokenFor(p4Feeder(i)) },
		func(buf []byte, n int64) []byte { return singleFrame(buf, -1, time.Now().UnixNano(), int(n)) }, true,
		func() { // before the dashboards close: closing them counts as dropping them
			if after, err := e.s.metrics(ctx); err == nil {
				r.detail("service_counters", delta(before, after, "telemetryd_live_deliveries", "telemetryd_live_published",
					"telemetryd_live_dropped", "telemetryd_live_slow", "telemetryd_frames", "telemetryd_readings_accepted"))
			}
		})
	if err != nil {
		return err
	}
	r.Service = svc
	rawBefore, _ := e.s.rawStats(ctx, false)
	raw, _, _, err := fanOut(ctx, e, r, "baseline", e.dial.dial,
		"ws://"+e.s.rawAddr+"/sub", "",
		"ws://"+e.s.rawAddr+"/pub", func(int) string { return "" },
		func(buf []byte, n int64) []byte {
			return appendLiveReading(buf, p4Feeder(0), time.Now().UnixNano(), int(n))
		}, false, func() {})
	if err != nil {
		return err
	}
	if st, err := e.s.rawStats(ctx, false); err == nil && st.Dropped > rawBefore.Dropped {
		r.note("the raw broadcaster's queue overflowed (%d readings)", st.Dropped-rawBefore.Dropped)
	}
	r.Baseline = raw
	r.ServiceText = fmtRate(r.Service, "deliveries/s")
	r.BaselineText = fmtRate(r.Baseline, "deliveries/s")
	r.judge(0.8, true)
	return nil
}

// dialFunc opens one subscriber socket (plain, or offering compression).
type dialFunc func(url, token string, h gws.Event) (*gws.Conn, error)

// fanOut runs one P4 phase and returns reading deliveries/s, the
// deliveries counted in the window and the CPU each process used in it.
func fanOut(ctx context.Context, e *env, r *result, name string, dial dialFunc, subURL, subToken, pubURL string, pubToken func(int) string,
	frame func(buf []byte, n int64) []byte, profile bool, beforeClose func()) (float64, int64, cpuUse, error) {
	sz := e.sz
	var deliveries atomic.Int64
	subs := make([]*gws.Conn, sz.P4Subscribers)
	lives := make([]*liveConn, sz.P4Subscribers)
	defer func() {
		for _, c := range subs {
			closeNow(c)
		}
	}()
	err := dialMany(ctx, sz.P4Subscribers, 32, func(i int) error {
		lc := newLiveConn(&deliveries, nil)
		conn, err := dial(subURL, subToken, lc)
		if err != nil {
			return err
		}
		subs[i], lives[i] = conn, lc
		return lc.subscribe(ctx, conn, nil)
	})
	if err != nil {
		return 0, 0, cpuUse{}, err
	}
	fa := newAnswers() // feeders send no seq: only error frames come back
	feeders := make([]*gws.Conn, sz.P4Feeders)
	defer func() {
		for _, c := range feeders {
			closeNow(c)
		}
	}()
	for i := range feeders {
		c, err := e.dial.dial(pubURL, pubToken(i), newDeviceConn(fa, 1))
		if err != nil {
			return 0, 0, cpuUse{}, err
		}
		feeders[i] = c
	}
	var sent atomic.Int64
	pctx, stop := context.WithCancel(ctx)
	nsubs := int64(sz.P4Subscribers)
	var wg sync.WaitGroup
	for _, f := range feeders {
		wg.Go(func() {
			var buf []byte
			for pctx.Err() == nil {
				// Lead: how far the feeders are ahead of the average subscriber.
				for sent.Load()-deliveries.Load()/nsubs >= int64(sz.P4Lead) {
					if !sleepCtx(pctx, 50*time.Microsecond) {
						return
					}
				}
				n := sent.Add(1)
				buf = frame(buf[:0], n)
				if f.WriteMessage(gws.OpcodeText, buf) != nil {
					return
				}
			}
		})
	}
	rate, n, use, err := e.measure(ctx, r, name, profile, deliveries.Load)
	stop()
	wg.Wait()
	beforeClose()
	closed := 0
	var frames, bytes int64
	for _, l := range lives {
		if l == nil {
			continue
		}
		if l.closed.Load() {
			closed++
		}
		frames += l.frames.Load()
		bytes += l.bytes.Load()
	}
	if closed > 0 {
		r.note("%s: %d of %d subscribers were disconnected during the run", name, closed, sz.P4Subscribers)
	}
	r.detail(name+"_readings_sent", sent.Load())
	if d := deliveries.Load(); d > 0 {
		r.detail(name+"_readings_per_frame", round2(float64(d)/float64(max(frames, 1))))
		r.detail(name+"_bytes_per_reading", round2(float64(bytes)/float64(d)))
		r.detail(name+"_frames_per_s", round2(rate*float64(frames)/float64(d)))
	}
	if errs := fa.errorCounts(); len(errs) > 0 {
		r.detail(name+"_feeder_errors", errs)
	}
	return rate, n, use, err
}
