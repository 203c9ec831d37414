package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// runP2: MQTT messages/s consumed, stored and acknowledged by telemetryd
// (QoS 1, one reading per message) against a bare paho subscriber with
// the service's session options on the same broker, in a process of its
// own (baresub.go), fed by the same publishers. Publishers run for
// -duration as fast as the broker lets them (a window of 64
// unacknowledged PUBLISHes each) but never more than P2Lead messages
// ahead of the consumer, so the broker's queue stays bounded and the
// consumer is measured at its own pace. The rate is messages/s from the
// first to the last message consumed; the judged figure is the consumer
// process's CPU per message (all its CPU over the phase / messages)
// against the bare subscriber's.
func runP2(ctx context.Context, e *env, r *result) error {
	sz := e.sz
	r.Unit = "msgs/s"
	r.Goal = cpuGoal
	r.detail("publishers", sz.P2Publishers)
	r.detail("consumer_connections", sz.P2Consumers)
	r.detail("lead_limit", sz.P2Lead)
	const pollEvery = 100 * time.Millisecond // both consumers' counts, for the lead bound

	// Baseline.
	topic := fmt.Sprintf(mqttBare, "+")
	if sz.P2Consumers > 1 {
		topic = "$share/bare/" + topic
	}
	for i := range sz.P2Consumers {
		endSession(e.s.mqttURL, bareClientID("bench-bare", i)) // nothing left from an earlier run
	}
	bare, err := e.s.startBareSub(ctx, "baresub-P2", "bench-bare", topic, sz.P2Consumers)
	if err != nil {
		return err
	}
	defer bare.stop(e.s, true)
	bctx, stopBarePoll := context.WithCancel(ctx)
	defer stopBarePoll()
	barePoll := bare.poll(bctx, pollEvery)
	meter := newCPUMeter(e.procs())
	published, err := publishLeadBounded(ctx, e, mqttBare, barePoll.count)
	if err != nil {
		return fmt.Errorf("baseline publishers: %w", err)
	}
	if err := waitCount(ctx, barePoll.count, published, 60*time.Second); err != nil {
		return fmt.Errorf("bare subscriber: %w", err)
	}
	use := meter.snapshot()
	stopBarePoll()
	r.detail("baseline_cores", use.cores())
	r.BaselineCPU = perUnit(use.used["baresub"], float64(published))
	r.detail("baseline_per_msg", use.perUnit("baresub", float64(published)))
	st, err := bare.stats(ctx)
	if err != nil {
		return fmt.Errorf("bare subscriber: %w", err)
	}
	if el := time.Duration(st.Last - st.First).Seconds(); el > 0 {
		r.Baseline = float64(published-1) / el
	}
	r.detail("baseline_messages", published)
	bare.stop(e.s, true)

	// Service.
	const key, unacked = `telemetryd_acks_sent_total{transport="mqtt"}`, "telemetryd_mqtt_unacked_messages"
	pctx, stopPoll := context.WithCancel(ctx)
	defer stopPoll()
	poll := e.pollMetrics(pctx, pollEvery, key, unacked)
	base := poll.value(key)
	before, _ := e.s.metrics(ctx)
	svcConsumed := func() int64 { return int64(poll.value(key) - base) }
	waitProf := e.prof.cpu(ctx, r.ID, e.cfg.Duration)
	meter = newCPUMeter(e.procs())
	published, err = publishLeadBounded(ctx, e, mqttService, svcConsumed)
	if err != nil {
		return fmt.Errorf("service publishers: %w", err)
	}
	if err := waitCount(ctx, svcConsumed, published, 60*time.Second); err != nil {
		return fmt.Errorf("telemetryd: %w", err)
	}
	use = meter.snapshot()
	r.detail("service_cores", use.cores())
	r.ServiceCPU = perUnit(use.used["telemetryd"], float64(published))
	r.detail("service_per_msg", use.perUnit("telemetryd", float64(published)))
	e.collectProfiles(ctx, r, waitProf)
	stopPoll()
	r.Service = poll.firstToLast(key, base, float64(published))
	// More unacked messages than the broker's max_inflight_messages (deploy/mosquitto.conf)
	// means the broker does not bound what it sends unacknowledged.
	r.detail("service_max_unacked_messages", poll.max(unacked))
	r.detail("service_messages", published)
	if after, err := e.s.metrics(ctx); err == nil {
		r.detail("service_counters", delta(before, after, "telemetryd_frames", "telemetryd_readings", "telemetryd_acks", "telemetryd_influx_write_batches"))
		if b := after.sum("telemetryd_influx_write_batches_total") - before.sum("telemetryd_influx_write_batches_total"); b > 0 {
			r.detail("service_lines_per_write", round2(float64(published)/b))
		}
	}
	e.p2Rate = r.Service
	r.ServiceText = fmtRate(r.Service, "msgs/s")
	r.BaselineText = fmtRate(r.Baseline, "msgs/s")
	r.judgeCPU(cpuLimit)
	return nil
}

// publishLeadBounded runs the P2 publishers on topic pattern for
// -duration, never more than P2Lead messages ahead of consumed(), and
// returns how many messages the broker acknowledged.
func publishLeadBounded(ctx context.Context, e *env, pattern string, consumed func() int64) (int64, error) {
	sz := e.sz
	var acked, issued atomic.Int64
	pctx, cancel := context.WithTimeout(ctx, e.cfg.Duration+e.warmup())
	defer cancel()
	pubs := make([]*publisher, sz.P2Publishers)
	for i := range pubs {
		p, err := newPublisher(ctx, e.s.mqttURL, fmt.Sprintf("bench-pub-%d", i), fmt.Sprintf(pattern, p2Device(i)), sz.P2Window, &acked)
		if err != nil {
			return 0, err
		}
		defer p.close()
		pubs[i] = p
	}
	gate := func(int64) bool {
		for issued.Load()-consumed() >= int64(sz.P2Lead) {
			if !sleepCtx(pctx, time.Millisecond) {
				return false
			}
		}
		issued.Add(1)
		return true
	}
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
	for _, err := range errs {
		if err != nil {
			return acked.Load(), err
		}
	}
	return acked.Load(), nil
}

// waitCount waits until counter() ≥ want.
func waitCount(ctx context.Context, counter func() int64, want int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for counter() < want {
		if time.Now().After(deadline) {
			return fmt.Errorf("consumed %d of %d messages after %v", counter(), want, timeout)
		}
		if !sleepCtx(ctx, 20*time.Millisecond) {
			return ctx.Err()
		}
	}
	return nil
}
