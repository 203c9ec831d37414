package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// runP8: 2× overload. Each transport is offered twice what it sustained
// alone — WebSocket single-reading frames at 2× the P3 rate and MQTT
// messages at 2× the P2 rate, at the same time, open loop — for -overload.
// Meanwhile a probe device publishes P5Probe readings/s over MQTT to a
// dashboard, telemetryd's RSS is sampled every second, and every answer
// devices get is counted. Reported: whether RSS stayed bounded, whether the
// refusals devices saw are the ones telemetryd counted, and how long after
// the overload the probe's latency is back to its level before it.
func runP8(ctx context.Context, e *env, r *result) error {
	sz := e.sz
	wsRate, mqttRate := float64(e.cfg.P8WSRate), float64(e.cfg.P8MQTTRate)
	if wsRate <= 0 {
		wsRate = 10000
		if e.p3Rate > 0 {
			wsRate = 2 * e.p3Rate
		}
	}
	if mqttRate <= 0 {
		mqttRate = 5000
		if e.p2Rate > 0 {
			mqttRate = 2 * e.p2Rate
		}
	}
	if e.cfg.Smoke {
		wsRate, mqttRate = 200, 100
	}
	pre := 5 * time.Second
	if e.cfg.Smoke {
		pre = time.Second
	}
	r.Unit = "s to recover"
	r.Goal = "RSS bounded, drops counted, recovery ≤ 10 s"
	r.detail("ws_rate", round2(wsRate))
	r.detail("mqtt_rate", round2(mqttRate))
	r.detail("overload_seconds", e.cfg.Overload.Seconds())
	if e.p3Rate == 0 || e.p2Rate == 0 {
		r.note("P2/P3 did not both run: offered %.0f WS frames/s and %.0f MQTT msgs/s", wsRate, mqttRate)
	}

	runCtx, stopAll := context.WithCancel(ctx)
	defer stopAll()

	// RSS sampler.
	var rssMu sync.Mutex
	var rss []sample
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			if v, err := rssBytes(e.s.svc.pid()); err == nil {
				rssMu.Lock()
				rss = append(rss, sample{t: time.Now(), v: float64(v)})
				rssMu.Unlock()
			}
			select {
			case <-runCtx.Done():
				return
			case <-t.C:
			}
		}
	}()

	// What telemetryd does, second by second, through the whole scenario.
	timelineKeys := []string{
		`telemetryd_frames_received_total{transport="mqtt"}`, `telemetryd_frames_received_total{transport="ws"}`,
		"telemetryd_readings_written_total", "telemetryd_bridge_queue_frames", "telemetryd_mqtt_unacked_messages",
	}
	svcPoll := e.pollMetrics(runCtx, time.Second, timelineKeys...)

	// Probe: MQTT publish → /v1/live.
	tl := &timeline{}
	var liveDrops atomic.Int64
	liveDone, err := keepLive(runCtx, e.dial, "ws://"+e.s.svcAddr+"/v1/live", e.s.adminTok, []string{p8Probe}, tl.add, &liveDrops)
	if err != nil {
		return err
	}
	defer func() { stopAll(); <-liveDone }()
	var probeAcked atomic.Int64
	probe, err := newPublisher(ctx, e.s.mqttURL, "bench-p8-probe", fmt.Sprintf(mqttService, p8Probe), 64, &probeAcked)
	if err != nil {
		return err
	}
	defer probe.close()
	probeDone := make(chan error, 1)
	go func() {
		pc := newPacer(float64(sz.P5Probe))
		_, err := probe.run(runCtx, func(i int64) bool { return pc.wait(runCtx, i) }, func(buf []byte, i int64) []byte {
			return singleFrame(buf, -1, time.Now().UnixNano(), int(i))
		})
		probeDone <- err
	}()
	if !sleepCtx(ctx, pre) {
		return ctx.Err()
	}
	before, err := e.s.metrics(ctx)
	if err != nil {
		return err
	}

	// Overload.
	ovStart := time.Now()
	ovCtx, stopOverload := context.WithTimeout(runCtx, e.cfg.Overload)
	defer stopOverload()
	waitProf := e.prof.cpu(ctx, r.ID, e.cfg.Overload)
	meter := newCPUMeter(e.procs())
	a := newAnswers()
	var wsStats overloadWS
	var wg sync.WaitGroup
	conns := make([]*deviceConn, sz.P8Conns)
	var connsMu sync.Mutex
	for i := range sz.P8Conns {
		wg.Go(func() {
			wsOverloadConn(ovCtx, e, i, wsRate/float64(sz.P8Conns), a, &wsStats, func(c *deviceConn) {
				connsMu.Lock()
				conns[i] = c
				connsMu.Unlock()
			})
		})
	}
	var mqAcked, mqBehind atomic.Int64
	var mqErr atomic.Pointer[error]
	for i := range sz.P8Publishers {
		wg.Go(func() {
			p, err := newPublisher(ctx, e.s.mqttURL, fmt.Sprintf("bench-p8-pub-%d", i), fmt.Sprintf(mqttService, p8MQTTDev(i)), 64, &mqAcked)
			if err != nil {
				mqErr.CompareAndSwap(nil, &err)
				return
			}
			defer p.close()
			pc := newPacer(mqttRate / float64(sz.P8Publishers))
			n, err := p.run(ovCtx, func(i int64) bool { return pc.wait(ovCtx, i) }, func(buf []byte, i int64) []byte {
				return singleFrame(buf, i, time.Now().UnixNano(), int(i))
			})
			if err != nil && ovCtx.Err() == nil {
				mqErr.CompareAndSwap(nil, &err)
			}
			due := int64(time.Since(pc.start).Seconds() * mqttRate / float64(sz.P8Publishers))
			mqBehind.Add(max(due-n, 0))
		})
	}
	<-ovCtx.Done()
	ovEnd := time.Now()
	wg.Wait()
	r.detail("overload_cores", meter.cores())
	recMeter := newCPUMeter(e.procs())
	e.collectProfiles(ctx, r, waitProf)

	// Recovery: the probe's latency in 1-second windows after the overload.
	preLat := tl.summary(ovStart.Add(-pre), ovStart)
	thr := max(1.5*preLat.P99ms, preLat.P99ms+2)
	r.detail("probe_before", preLat)
	r.detail("recovery_threshold_p99_ms", round2(thr))
	recovered := -1.0
	deadline := ovEnd.Add(e.cfg.Recovery)
	for time.Now().Before(deadline) && recovered < 0 {
		if !sleepCtx(ctx, 250*time.Millisecond) {
			return ctx.Err()
		}
		recovered = tl.recovery(ovEnd, time.Now(), thr, float64(sz.P5Probe)/2)
	}
	r.detail("probe_windows_after", tl.windows(ovEnd, time.Now(), 12))
	r.detail("recovery_cores", recMeter.cores())
	if n := liveDrops.Load(); n > 0 {
		r.note("telemetryd dropped the probe's dashboard %d time(s); it reconnected each time", n)
	}
	// The broker's persistence file: what it rewrites at every autosave.
	if fi, err := os.Stat(filepath.Join(e.s.dir, "mosquitto", "mosquitto.db")); err == nil {
		r.detail("mosquitto_db_mib", round2(float64(fi.Size())/(1<<20)))
	}
	// Unanswered frames on sockets still open after the drain are lost
	// without a word: they must be none.
	var open []*deviceConn
	connsMu.Lock()
	for _, c := range conns {
		if c != nil && !c.isClosed() {
			open = append(open, c)
		}
	}
	connsMu.Unlock()
	drain(open, time.Until(deadline.Add(5*time.Second)))
	unanswered := 0
	for _, c := range open {
		unanswered += c.outstanding()
		closeNow(c.conn)
	}
	after, err := e.s.metrics(ctx)
	if err != nil {
		return err
	}
	stopAll()
	if err := <-probeDone; err != nil && ctx.Err() == nil {
		r.note("probe publisher: %v", err)
	}
	if p := mqErr.Load(); p != nil {
		r.note("overload publisher: %v", *p)
	}

	// RSS: growth in the second half of the overload over the first.
	rssMu.Lock()
	var first, second []float64
	var all []float64
	for _, s := range rss {
		all = append(all, round2(s.v/(1<<20)))
		switch mid := ovStart.Add(ovEnd.Sub(ovStart) / 2); {
		case s.t.Before(ovStart) || s.t.After(ovEnd):
		case s.t.Before(mid):
			first = append(first, s.v)
		default:
			second = append(second, s.v)
		}
	}
	rssMu.Unlock()
	r.detail("rss_samples", len(all))
	r.detail("rss_mib_per_second", all)
	// The second-largest sample of each half: growth lifts several samples,
	// while one GC-timing spike lifts one.
	peak1, peak2 := secondLargest(first), secondLargest(second)
	bounded := len(first) > 0 && len(second) > 0 && peak2-peak1 <= max(16<<20, 0.1*peak1)
	if len(first) == 0 || len(second) == 0 {
		bounded = true // too short to tell (smoke)
		r.note("overload too short to judge RSS growth")
	}

	// Drops: what devices were told vs what telemetryd counted.
	errs := a.errorCounts()
	svcRefused := map[string]float64{}
	for k, v := range delta(before, after, "telemetryd_frames_rejected_total") {
		if strings.Contains(k, `transport="ws"`) {
			svcRefused[reasonOf(k)] += v
		}
	}
	counted := true
	for _, code := range []string{"overloaded", "rate_limited", "invalid_payload"} {
		if float64(errs[code]) > svcRefused[code] || svcRefused[code]-float64(errs[code]) > float64(wsStats.unansweredOnClose.Load()) {
			counted = false
		}
	}
	if unanswered > 0 {
		counted = false
	}
	r.detail("ws_client", map[string]any{
		"sent": a.sent.Load(), "acked": a.acked.Load(), "errors": errs,
		"skipped_window_full": wsStats.skipped.Load(), "reconnects": wsStats.reconnects.Load(),
		"dial_failures": wsStats.dialFailures.Load(), "unanswered_on_closed_sockets": wsStats.unansweredOnClose.Load(),
		"unanswered_on_open_sockets": unanswered, "ack_latency": a.ackLatency.summary(),
	})
	r.detail("ws_service_refusals", svcRefused)
	r.detail("mqtt_client", map[string]any{"published": mqAcked.Load(), "behind_schedule": mqBehind.Load()})
	r.detail("service_counters", delta(before, after, "telemetryd_frames", "telemetryd_readings", "telemetryd_acks",
		"telemetryd_live_dropped", "telemetryd_live_slow", "telemetryd_ws_policy", "telemetryd_influx_write_errors"))
	r.detail("service_per_second", svcPoll.perSecond(ovStart.Add(-2*time.Second), timelineKeys))
	r.detail("mqtt_unacked_at_end", after.get("telemetryd_mqtt_unacked_messages"))
	r.detail("bridge_queue_at_end", after.get("telemetryd_bridge_queue_frames"))

	rssText := "RSS bounded"
	if !bounded {
		rssText = "RSS GREW"
	}
	if len(first) > 0 && len(second) > 0 {
		rssText += fmt.Sprintf(" (2nd-highest %.0f→%.0f MiB, max %.0f→%.0f)", peak1/(1<<20), peak2/(1<<20), maxOf(first)/(1<<20), maxOf(second)/(1<<20))
	}
	dropText := "drops counted"
	if !counted {
		dropText = "drops NOT all counted"
	}
	recText := fmt.Sprintf("recovered in %.0f s", recovered)
	r.Service = recovered
	if recovered < 0 {
		recText = fmt.Sprintf("not recovered in %.0f s", e.cfg.Recovery.Seconds())
		r.Service = e.cfg.Recovery.Seconds()
	}
	r.ServiceText = recText + "; " + rssText + "; " + dropText
	r.BaselineText = "—"
	pass := bounded && counted && recovered >= 0 && recovered <= 10
	r.Pass = &pass
	return nil
}

// reasonOf extracts reason="…" from a metric key.
func reasonOf(k string) string {
	const key = `reason="`
	i := strings.Index(k, key)
	if i < 0 {
		return ""
	}
	rest := k[i+len(key):]
	if j := strings.IndexByte(rest, '"'); j >= 0 {
		return rest[:j]
	}
	return rest
}

type overloadWS struct {
	skipped, reconnects, dialFailures, unansweredOnClose atomic.Int64
}

// wsOverloadConn is one open-loop device: it sends single-reading frames
// at rate, skipping (and counting) a frame when its window of unanswered
// frames is full, and reconnects when telemetryd closes it.
func wsOverloadConn(ctx context.Context, e *env, i int, rate float64, a *answers, st *overloadWS, publish func(*deviceConn)) {
	pc := newPacer(rate)
	var seq, tick int64
	var buf []byte
	for ctx.Err() == nil {
		c := newDeviceConn(a, e.sz.P8Window)
		conn, err := e.dial.dial("ws://"+e.s.svcAddr+"/v1/ingest", tokenFor(p8WSDevice(i)), c)
		if err != nil {
			st.dialFailures.Add(1)
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		c.conn = conn
		publish(c)
		for ctx.Err() == nil {
			if !pc.wait(ctx, tick) {
				break
			}
			tick++
			buf = singleFrame(buf[:0], seq, time.Now().UnixNano(), int(seq))
			ok, err := c.trySend(seq, buf)
			if !ok {
				st.skipped.Add(1)
				continue
			}
			seq++
			if err != nil || c.isClosed() {
				break
			}
		}
		if ctx.Err() == nil || c.isClosed() {
			// Closed by the service (or the network): what it did not
			// answer is unanswered on a closed socket; reconnect.
			<-closedOrTimeout(c, time.Second)
			st.unansweredOnClose.Add(int64(c.outstanding()))
			st.reconnects.Add(1)
			closeNow(conn)
		}
	}
}

func closedOrTimeout(c *deviceConn, d time.Duration) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		select {
		case <-c.closed:
		case <-time.After(d):
		}
		close(ch)
	}()
	return ch
}

// timeline keeps (arrival, latency) of probe readings.
type timeline struct {
	mu sync.Mutex
	at []int64
	ns []time.Duration
}

func (t *timeline) add(now int64, lat time.Duration) {
	t.mu.Lock()
	t.at = append(t.at, now)
	t.ns = append(t.ns, lat)
	t.mu.Unlock()
}

// between returns the latencies that arrived in [from, to).
func (t *timeline) between(from, to time.Time) []time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []time.Duration
	for i, at := range t.at {
		if at >= from.UnixNano() && at < to.UnixNano() {
			out = append(out, t.ns[i])
		}
	}
	return out
}

func (t *timeline) summary(from, to time.Time) latencySummary {
	var h hist
	for _, d := range t.between(from, to) {
		h.record(d)
	}
	return h.summary()
}

// recovery returns the start (seconds after end) of the first of two
// consecutive 1-second windows, both complete before now, each with at
// least minCount readings and a p99 at or under thrMs; −1 if none yet.
func (t *timeline) recovery(end, now time.Time, thrMs, minCount float64) float64 {
	good := func(k int) bool {
		from := end.Add(time.Duration(k) * time.Second)
		lat := t.between(from, from.Add(time.Second))
		if float64(len(lat)) < minCount {
			return false
		}
		slices.Sort(lat)
		p99 := lat[min(len(lat)-1, int(float64(len(lat))*0.99))]
		return ms(p99) <= thrMs
	}
	for k := 0; end.Add(time.Duration(k+2) * time.Second).Before(now); k++ {
		if good(k) && good(k+1) {
			return float64(k)
		}
	}
	return -1
}

// windows summarizes the first n 1-second windows after end.
func (t *timeline) windows(end, now time.Time, n int) []string {
	var out []string
	for k := 0; k < n && end.Add(time.Duration(k+1)*time.Second).Before(now); k++ {
		from := end.Add(time.Duration(k) * time.Second)
		s := t.summary(from, from.Add(time.Second))
		out = append(out, fmt.Sprintf("+%ds: n=%d p99=%.1fms", k, s.Count, s.P99ms))
	}
	return out
}
