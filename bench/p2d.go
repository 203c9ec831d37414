package main

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// runP2d: the P2 consumers draining a backlog, which isolates the
// consumer from the publishers — a service coming back after downtime, or
// a new user's first run against a broker that has been queueing. First
// P2Drain messages (QoS 1, one reading each) are queued in the broker for
// the consumer's persistent session while none of its clients is
// connected; then the consumer connects and takes them as fast as it can.
//
// Baseline: the bare paho subscriber (its own process, the service's
// paho options) with the same session setup: its sessions made and left
// offline, the backlog queued, the process started. Service: telemetryd
// stopped (its graceful shutdown; its session stays with the broker), the
// backlog queued, telemetryd started again with the same flags — the same
// MQTT client id, hence the same session — and everything stored and
// acked.
//
// Each consumer is sampled from its start (its count and its process
// CPU; see drainFigures): messages/s while the backlog flows, and CPU per
// message, whose ratio is judged.
func runP2d(ctx context.Context, e *env, r *result) error {
	sz := e.sz
	r.Unit = "msgs/s"
	r.Goal = cpuGoal
	r.detail("backlog_messages", sz.P2Drain)
	r.detail("publishers", sz.P2Publishers)
	r.detail("consumer_connections", sz.P2Consumers)
	every := 50 * time.Millisecond
	if e.cfg.Smoke {
		every = 10 * time.Millisecond
	}
	r.detail("sample_interval_ms", every.Milliseconds())

	// Baseline.
	const prefix = "bench-drain"
	topic := fmt.Sprintf(mqttBare, "+")
	if sz.P2Consumers > 1 {
		topic = "$share/bare/" + topic
	}
	for i := range sz.P2Consumers {
		id := bareClientID(prefix, i)
		if err := makeSession(ctx, e.s.mqttURL, id, topic); err != nil {
			return err
		}
		defer endSession(e.s.mqttURL, id)
	}
	queued, err := e.queueBacklog(ctx, r, "baseline", mqttBare)
	if err != nil {
		return err
	}
	bare, err := e.s.launchBareSub("baresub-P2d", prefix, topic, sz.P2Consumers)
	if err != nil {
		return err
	}
	meter := newCPUMeter(e.procs()) // from the consumer's start: its start-up is in

	defer bare.stop(e.s, false)
	bareCount := func(ctx context.Context) (int64, error) {
		st, err := bare.stats(ctx)
		return st.Count, err
	}
	ss, err := sampleDrain(ctx, bare.c, bareCount, queued, every, drainTimeout(queued))
	if err != nil {
		return fmt.Errorf("bare subscriber: %w", err)
	}
	r.detail("baseline_cores", meter.cores())
	bare.stop(e.s, false)
	d := drainFigures(ss, queued)
	r.Baseline, r.BaselineCPU = d.rate, d.cpuNs
	r.detail("baseline_drain", d.details())

	// Service.
	const key = `telemetryd_acks_sent_total{transport="mqtt"}`
	e.s.stopService()
	queued, err = e.queueBacklog(ctx, r, "service", mqttService)
	if err != nil {
		return err
	}
	if err := e.s.restartService(); err != nil {
		return fmt.Errorf("restart telemetryd: %w", err)
	}
	meter = newCPUMeter(e.procs())
	// The profile starts as soon as the admin listener answers, which
	// telemetryd opens before it connects to the broker; it lasts about
	// as long as the drain should (twice the baseline's time).
	est := time.Second
	if d.rate > 0 {
		est = min(max(time.Duration(2*float64(queued)/d.rate*float64(time.Second)), time.Second), 30*time.Second)
	}
	profStarted := make(chan func() string, 1)
	go func() {
		if waitListening(ctx, e.s.adminAddr, 20*time.Second) {
			profStarted <- e.prof.cpu(ctx, r.ID, est)
			return
		}
		profStarted <- func() string { return "" }
	}()
	svcCount := func(ctx context.Context) (int64, error) {
		m, err := e.s.metrics(ctx, "telemetryd_acks_sent_total")
		return int64(m.get(key)), err
	}
	ss, err = sampleDrain(ctx, e.s.svc, svcCount, queued, every, drainTimeout(queued))
	waitProf := <-profStarted
	if err != nil {
		// What the MQTT side holds tells a stall in telemetryd (unacked
		// messages) from one in the broker (nothing received).
		if m, merr := e.s.metrics(ctx); merr == nil {
			r.detail("stalled_counters", delta(metricSet{}, m, "telemetryd_mqtt", "telemetryd_frames", "telemetryd_acks", "telemetryd_readings_accepted", "telemetryd_influx_write", "telemetryd_bridge"))
		}
		return fmt.Errorf("telemetryd: %w", err)
	}
	r.detail("service_cores", meter.cores())
	d = drainFigures(ss, queued)
	r.Service, r.ServiceCPU = d.rate, d.cpuNs
	r.detail("service_drain", d.details())
	e.collectProfiles(ctx, r, waitProf)
	if err := e.s.waitReady(ctx); err != nil {
		return err
	}
	if after, err := e.s.metrics(ctx); err == nil {
		r.detail("service_counters", delta(metricSet{}, after, "telemetryd_frames", "telemetryd_readings", "telemetryd_acks", "telemetryd_influx_write_batches", "telemetryd_mqtt_redelivered"))
		if b := after.sum("telemetryd_influx_write_batches_total"); b > 0 {
			r.detail("service_lines_per_write", round2(float64(queued)/b))
		}
	}
	r.ServiceText = fmtRate(r.Service, "msgs/s")
	r.BaselineText = fmtRate(r.Baseline, "msgs/s")
	r.judgeCPU(cpuLimit)
	return nil
}

// drainTimeout bounds a drain: a minute plus 0.2 ms per message (well
// under 5 000 messages/s means something is broken).
func drainTimeout(n int64) time.Duration {
	return time.Minute + time.Duration(n)*200*time.Microsecond
}

// queueBacklog publishes P2Drain messages to pattern's topics with P2's
// publishers while no consumer is connected, bounded in time (a minute;
// 15 s in smoke), and returns how many the broker acknowledged, i.e.
// queued.
func (e *env) queueBacklog(ctx context.Context, r *result, name, pattern string) (int64, error) {
	sz := e.sz
	limit := time.Minute
	if e.cfg.Smoke {
		limit = 15 * time.Second
	}
	pctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var acked, issued atomic.Int64
	pubs := make([]*publisher, sz.P2Publishers)
	for i := range pubs {
		p, err := newPublisher(ctx, e.s.mqttURL, fmt.Sprintf("bench-pub-%d", i), fmt.Sprintf(pattern, p2Device(i)), sz.P2Window, &acked)
		if err != nil {
			return 0, err
		}
		defer p.close()
		pubs[i] = p
	}
	start := time.Now()
	gate := func(int64) bool { return issued.Add(1) <= int64(sz.P2Drain) }
	var wg sync.WaitGroup
	errs := make([]error, len(pubs))
	for i, p := range pubs {
		wg.Go(func() {
			_, errs[i] = p.run(pctx, gate, func(buf []byte, n int64) []byte {
				return singleFrame(buf, n, time.Now().UnixNano(), int(n))
			})
		})
	}
	wg.Wait()
	r.detail(name+"_queue_s", round2(time.Since(start).Seconds()))
	for _, err := range errs {
		if err != nil {
			return 0, fmt.Errorf("%s backlog: %w", name, err)
		}
	}
	n := acked.Load()
	if n < int64(sz.P2Drain) {
		r.note("%s: the broker queued %d of %d messages within %v", name, n, sz.P2Drain, limit)
	}
	if n == 0 {
		return 0, fmt.Errorf("%s backlog: nothing queued", name)
	}
	return n, nil
}

// waitListening waits until something accepts TCP connections on addr.
func waitListening(ctx context.Context, addr string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return true
		}
		if !sleepCtx(ctx, 5*time.Millisecond) {
			return false
		}
	}
	return false
}

// drainSample is a consumer's count and its process's CPU at a time.
type drainSample struct {
	t   time.Time
	n   int64
	cpu time.Duration
	io  ioCount
}

// sampleDrain reads count and c's CPU every interval — as fast as it can
// until the first read succeeds, so that it sees the consumer before its
// first message — until count reaches total, c exits or timeout passes.
func sampleDrain(ctx context.Context, c *child, count func(context.Context) (int64, error), total int64, every, timeout time.Duration) ([]drainSample, error) {
	deadline := time.Now().Add(timeout)
	var ss []drainSample
	for {
		n, err := count(ctx)
		if err == nil {
			ss = append(ss, drainSample{t: time.Now(), n: n, cpu: cpuTime(c.pid()), io: ioCalls(c.pid())})
			if n >= total {
				return ss, nil
			}
		}
		switch {
		case c.exited():
			return ss, fmt.Errorf("%s exited during the drain (%v); see %s", c.name, c.err, c.logPath)
		case time.Now().After(deadline):
			var got int64
			if len(ss) > 0 {
				got = ss[len(ss)-1].n
			}
			return ss, fmt.Errorf("consumed %d of %d queued messages after %v", got, total, timeout)
		}
		wait := every
		if len(ss) == 0 {
			wait = 2 * time.Millisecond
		}
		if !sleepCtx(ctx, wait) {
			return ss, ctx.Err()
		}
	}
}

// drainStats is what drainFigures makes of a consumer's samples.
type drainStats struct {
	rate    float64 // messages/s
	cpuNs   float64 // CPU per message
	cpuFrom int64   // the count at the start of the CPU window
	msgs    int64   // in the CPU window
	cpu     time.Duration
	calls   ioCount       // read and write system calls in the CPU window
	window  time.Duration // of the rate
	samples int
}

func (d drainStats) details() map[string]float64 {
	m := map[string]float64{
		"msgs_per_s": round2(d.rate), "cpu_ns_per_msg": round2(d.cpuNs), "cpu_s": round3(d.cpu.Seconds()),
		"cpu_window_from_msg": float64(d.cpuFrom), "rate_window_s": round3(d.window.Seconds()), "samples": float64(d.samples),
	}
	if c := costPerUnit(d.cpu, d.calls, float64(d.msgs)); c != nil {
		m["reads_per_msg"], m["writes_per_msg"] = c["reads"], c["writes"]
	}
	return m
}

// drainFigures: CPU per message is the CPU from the last sample before
// the first message (the first sample when there is none: the process's
// start-up is left out, its connect and subscribe are in) to the first
// sample with all total messages done, over the messages in between. The
// rate is taken from the first to the last sample while messages flowed
// (0 < n < total), which leaves out the connect and the idle time before
// the last sample; over the CPU window when fewer than two were taken.
func drainFigures(ss []drainSample, total int64) drainStats {
	end := -1
	for i, s := range ss {
		if s.n >= total {
			end = i
			break
		}
	}
	first := -1
	for i, s := range ss {
		if s.n > 0 {
			first = i
			break
		}
	}
	if end <= 0 || first < 0 {
		return drainStats{samples: len(ss)}
	}
	start := max(first-1, 0)
	if start == end {
		return drainStats{samples: len(ss)}
	}
	a, b := ss[start], ss[end]
	d := drainStats{samples: len(ss), cpuFrom: a.n, msgs: b.n - a.n, cpu: b.cpu - a.cpu, calls: b.io.sub(a.io)}
	d.cpuNs = perUnit(d.cpu, float64(b.n-a.n))
	lo, hi := first, end-1
	if hi <= lo || ss[hi].n <= ss[lo].n {
		lo, hi = start, end
	}
	d.window = ss[hi].t.Sub(ss[lo].t)
	if d.window > 0 {
		d.rate = float64(ss[hi].n-ss[lo].n) / d.window.Seconds()
	}
	return d
}
