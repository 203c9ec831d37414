package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
)

// runP5: device→dashboard latency. A device publishes one reading per MQTT
// message (QoS 1) at a fixed rate — half the P2 service rate — and a
// dashboard subscribed to it on /v1/live records now − the reading's
// timestamp. Baseline, at the same rate: a bare paho subscriber's pub→sub
// latency plus a gws echo round trip to the raw server; the baseline's
// p50/p99 are the sums of the two.
func runP5(ctx context.Context, e *env, r *result) error {
	rate := e.cfg.P5Rate
	switch {
	case rate > 0:
	case e.p2Rate > 0:
		rate = max(int(e.p2Rate/2), 1)
	case e.cfg.Smoke:
		rate = 100
	default:
		rate = 2000
		r.note("P2 did not run: P5 used %d readings/s", rate)
	}
	r.Unit = "ms (p99)"
	r.Goal = "≤ 3× and ≤ 20 ms"
	r.detail("rate", rate)

	// Baseline: MQTT pub→sub, then a gws echo, each for half the window
	// (one after the other, so that the harness's own load stays that of
	// one path at a time, as in the service phase).
	var since atomic.Int64
	recorder := func(h *hist) func(int64, time.Duration) {
		return func(now int64, lat time.Duration) {
			if s := since.Load(); s != 0 && now-int64(lat) >= s {
				h.record(lat)
			}
		}
	}
	half := max(e.cfg.Duration/2, time.Second)
	var mqttLat, echoLat, svcLat hist
	e.settle(ctx, r, "baseline")
	sub, err := newBareSub(ctx, e.s.mqttURL, "bench-bare-p5", fmt.Sprintf(mqttBare, p5Device), recorder(&mqttLat))
	if err != nil {
		return err
	}
	meter := newCPUMeter(e.procs())
	err = publishAtRate(ctx, e, fmt.Sprintf(mqttBare, p5Device), "bench-pub-p5", float64(rate), half, &since)
	_ = waitCount(ctx, mqttLat.count, int64(float64(rate)*half.Seconds()*0.99), 5*time.Second)
	sub.close()
	if err != nil {
		return err
	}
	echo, err := e.dial.dial("ws://"+e.s.rawAddr+"/echo", "", &echoConn{record: recorder(&echoLat)})
	if err != nil {
		return err
	}
	defer closeNow(echo)
	since.Store(0)
	ectx, cancel := context.WithTimeout(ctx, e.warmup()+half)
	go func() {
		if sleepCtx(ectx, e.warmup()) {
			since.Store(time.Now().UnixNano())
		}
	}()
	p := newPacer(float64(rate))
	var buf []byte
	for i := int64(0); p.wait(ectx, i); i++ {
		buf = singleFrame(buf[:0], -1, time.Now().UnixNano(), int(i))
		if err := echo.WriteMessage(gws.OpcodeText, buf); err != nil {
			cancel()
			return fmt.Errorf("echo: %w", err)
		}
	}
	cancel()
	_ = waitCount(ctx, echoLat.count, int64(float64(rate)*half.Seconds()*0.99), 5*time.Second)
	r.detail("baseline_cores", meter.cores())
	m, ec := mqttLat.summary(), echoLat.summary()
	r.detail("baseline_mqtt_latency", m)
	r.detail("baseline_echo_rtt", ec)
	baseP50, baseP99 := round3(m.P50ms+ec.P50ms), round3(m.P99ms+ec.P99ms)

	// Service: MQTT publish → telemetryd → /v1/live.
	e.settle(ctx, r, "service")
	since.Store(0)
	var drops atomic.Int64
	lctx, stopLive := context.WithCancel(ctx)
	defer stopLive()
	liveDone, err := keepLive(lctx, e.dial, "ws://"+e.s.svcAddr+"/v1/live", e.s.adminTok, []string{p5Device}, recorder(&svcLat), &drops)
	if err != nil {
		return err
	}
	defer func() { stopLive(); <-liveDone }()
	waitProf := e.prof.cpu(ctx, r.ID, e.cfg.Duration)
	meter = newCPUMeter(e.procs())
	before, _ := e.s.metrics(ctx)
	if err := publishAtRate(ctx, e, fmt.Sprintf(mqttService, p5Device), "bench-pub-p5", float64(rate), e.cfg.Duration, &since); err != nil {
		return err
	}
	// Readings still on their way count too.
	want := int64(float64(rate) * e.cfg.Duration.Seconds() * 0.99)
	_ = waitCount(ctx, svcLat.count, want, 5*time.Second)
	r.detail("service_cores", meter.cores())
	e.collectProfiles(ctx, r, waitProf)
	if after, err := e.s.metrics(ctx); err == nil {
		r.detail("service_counters", delta(before, after, "telemetryd_live_", "telemetryd_frames", "telemetryd_acks"))
	}
	s := svcLat.summary()
	r.detail("service_latency", s)
	if n := drops.Load(); n > 0 {
		r.note("telemetryd dropped the dashboard %d time(s) during the run (slow-consumer policy); it reconnected each time", n)
	}
	if s.Count < want {
		r.note("the dashboard saw %d of the %d readings published in the window within 5 s", s.Count, want)
	}
	if s.Count == 0 || m.Count == 0 || ec.Count == 0 {
		return fmt.Errorf("no latency samples (service %d, mqtt %d, echo %d)", s.Count, m.Count, ec.Count)
	}
	r.Service, r.Baseline = s.P99ms, baseP99
	r.ServiceText = fmt.Sprintf("p50 %.2f / p99 %.2f ms", s.P50ms, s.P99ms)
	r.BaselineText = fmt.Sprintf("p50 %.2f / p99 %.2f ms", baseP50, baseP99)
	r.judge(3, false)
	if r.Pass != nil && s.P99ms > 20 {
		f := false
		r.Pass = &f
	}
	return nil
}

// publishAtRate publishes single readings at rate for warm-up + d from one
// client; since is set to the start of the measured part.
func publishAtRate(ctx context.Context, e *env, topic, clientID string, rate float64, d time.Duration, since *atomic.Int64) error {
	var acked atomic.Int64
	p, err := newPublisher(ctx, e.s.mqttURL, clientID, topic, 256, &acked)
	if err != nil {
		return err
	}
	defer p.close()
	pctx, cancel := context.WithTimeout(ctx, e.warmup()+d)
	defer cancel()
	go func() {
		if sleepCtx(pctx, e.warmup()) {
			since.Store(time.Now().UnixNano())
		}
	}()
	pc := newPacer(rate)
	_, err = p.run(pctx, func(i int64) bool { return pc.wait(pctx, i) }, func(buf []byte, i int64) []byte {
		return singleFrame(buf, -1, time.Now().UnixNano(), int(i))
	})
	return err
}
