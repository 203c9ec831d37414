package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// env is what scenarios share.
type env struct {
	cfg  config
	sz   sizes
	s    *stack
	prof *profiler
	log  *slog.Logger
	dial *dialer

	gateways []gateway // P1

	// Service rates measured earlier in the run, for P5 and P8.
	p2Rate, p3Rate float64
	// p7CPU is P7's service CPU per payload (P3's frame) in ns: the
	// pipeline's cheapest part, priced in-process (P3's floor).
	p7CPU float64
}

// gateway is a P1 sender: a registry gateway with its children, or (when
// the admin API is unavailable) a static device reporting for itself.
type gateway struct {
	ID, Token string
	Children  []string
}

type scenario struct {
	id, what string
	fn       func(ctx context.Context, e *env, r *result) error
	stack    bool
	rounds   bool // repeatable: -rounds applies
}

func scenarios() []scenario {
	return []scenario{
		{"P7", "CPU per reading: decode+normalize+encode", runP7, false, true},
		{"P7l", "CPU per reading: line-protocol decoding vs line-protocol/v2 alone", runP7l, false, false},
		{"P7c", "CPU per reading: CBOR decoding vs fxamacker/cbor alone", runP7c, false, false},
		// P6 first among the stack's scenarios: both servers are fresh, so
		// neither reuses memory an earlier scenario left resident.
		{"P6", "RSS per idle device WebSocket", runP6, true, false},
		{"P1", "readings/s acked, WS gateways, 100-reading batches", runP1, true, true},
		{"P2", "MQTT msgs/s consumed+stored+acked (QoS 1)", runP2, true, true},
		{"P2d", "MQTT drain of a queued backlog (QoS 1, persistent session)", runP2d, true, true},
		{"P3", "WS single-reading frames/s acked", runP3, true, true},
		{"P4", "dashboard deliveries/s", runP4, true, true},
		{"P4z", "dashboard deliveries/s, permessage-deflate vs plain", runP4z, true, true},
		{"P4r", "resume: readings/s replayed to a reconnecting dashboard", runP4r, true, false},
		{"P5", "device→dashboard latency p99 (MQTT)", runP5, true, true},
		{"P9", "readings/s acked, HTTP line protocol, 1000-line writes", runP9, true, true},
		{"PC", "cluster: 3 instances vs 1, CPU/reading and cross-instance p99", runPC, true, false},
		// P8 last: its overload leaves the pipeline and storage busy.
		{"P8", "2× overload", runP8, true, false},
	}
}

// run executes the selected scenarios and prints and writes the report.
func run(ctx context.Context, cfg config, stdout io.Writer) (*report, error) {
	start := time.Now()
	log := newLogger(cfg.Verbose)
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, err
	}
	sz := cfg.sizes()
	mach := describeMachine()
	// Sockets: the harness holds every client; each server process holds
	// its share. Children inherit the limit.
	mach.FileLimit = raiseFileLimit(uint64(max(65536, 2*sz.P6Conns+20000)))
	if need := uint64(sz.P6Conns + 2000); cfg.has("P6") && mach.FileLimit < need {
		log.Warn("file descriptor limit below what P6 needs; lowering its connection count", "limit", mach.FileLimit, "need", need)
		sz.P6Conns = max(int(mach.FileLimit)-2000, 10)
	}
	rep := &report{Command: cfg.command, Machine: mach, Config: map[string]any{
		"scenarios": cfg.Scenarios, "duration": cfg.Duration.String(), "overload": cfg.Overload.String(),
		"scale": cfg.Scale, "smoke": cfg.Smoke, "sizes": sz, "service_args": cfg.ServiceArgs,
	}}
	e := &env{cfg: cfg, sz: sz, log: log, dial: newDialer(sz.P6Conns)}

	var runErr error
	for _, sc := range scenarios() {
		if !cfg.has(sc.id) {
			continue
		}
		if sc.stack && e.s == nil {
			log.Info("starting InfluxDB, Mosquitto, the raw server and telemetryd")
			s, err := startStack(ctx, cfg, tokens(sz), max(100000, sz.P6Conns+1000), log)
			if err != nil {
				return nil, err
			}
			defer s.close()
			e.s = s
			e.prof = &profiler{s: s, out: cfg.Out, enabled: cfg.Profile, log: log}
			if cfg.has("P1") {
				e.gateways = provisionGateways(ctx, s, sz, log)
			}
		}
		t0 := time.Now()
		rounds := 1
		if sc.rounds {
			rounds = cfg.Rounds
		}
		var all []*result
		for round := range rounds {
			r := &result{ID: sc.id, What: sc.what}
			log.Info("scenario", "id", sc.id, "what", sc.what, "round", round+1)
			sctx, cancel := context.WithCancel(ctx)
			if err := sc.fn(sctx, e, r); err != nil {
				r.Error = err.Error()
				log.Error("scenario failed", "id", sc.id, "error", err)
			}
			cancel()
			all = append(all, r)
			if r.Error != "" || ctx.Err() != nil {
				break
			}
		}
		r := medianRound(all)
		r.Seconds = round2(time.Since(t0).Seconds())
		if e.s != nil && e.s.svc.exited() {
			r.note("telemetryd exited during the scenario (%v); see %s", e.s.svc.err, e.s.svc.logPath)
		}
		contentionNote(r)
		rep.Results = append(rep.Results, r)
		log.Info("scenario done", "id", sc.id, "service", r.ServiceText, "baseline", r.BaselineText, "ratio", ratioText(r), "pass", passText(r))
		if ctx.Err() != nil {
			runErr = ctx.Err()
			break
		}
		if e.s != nil && e.s.svc.exited() {
			runErr = fmt.Errorf("telemetryd exited: %v (see %s)", e.s.svc.err, e.s.svc.logPath)
			break
		}
	}
	rep.Machine.LoadEnd = loadAvg()
	rep.Seconds = round2(time.Since(start).Seconds())
	// Order the rows P1..P8 for the table (P7 and P6 ran first).
	slices.SortFunc(rep.Results, func(a, b *result) int { return strings.Compare(a.ID, b.ID) })
	fmt.Fprintln(stdout)
	rep.printTable(stdout)
	rep.printDetails(stdout)
	if err := rep.writeFiles(cfg.Out); err != nil {
		return rep, err
	}
	fmt.Fprintf(stdout, "\nwritten: %s/results.json, %s/results.md (took %.0f s; load average %s → %s)\n", cfg.Out, cfg.Out, rep.Seconds, mach.LoadStart, rep.Machine.LoadEnd)
	return rep, runErr
}

// Device ids of the static token file, by scenario.
func p1Static(i int) string   { return "p1-gw-" + strconv.Itoa(i) }
func p2Device(i int) string   { return "p2-" + strconv.Itoa(i) }
func p3Device(i int) string   { return "p3-" + strconv.Itoa(i) }
func p4Feeder(i int) string   { return "p4-feed-" + strconv.Itoa(i) }
func p6Device(i int) string   { return "p6-" + strconv.Itoa(i) }
func p8WSDevice(i int) string { return "p8-ws-" + strconv.Itoa(i) }
func p8MQTTDev(i int) string  { return "p8-mq-" + strconv.Itoa(i) }

const (
	p5Device    = "p5-lat"
	p8Probe     = "p8-probe"
	mqttService = "devices/%s/telemetry" // telemetryd's topic
	mqttBare    = "bench/%s/telemetry"   // the baselines' topic: the service does not see it
)

// tokens lists every static device the scenarios use. Static tokens cost
// nothing to provision, unlike registry devices.
func tokens(sz sizes) []deviceToken {
	var ids []string
	for i := range sz.P1Gateways {
		ids = append(ids, p1Static(i))
	}
	for i := range sz.P2Publishers {
		ids = append(ids, p2Device(i))
	}
	for i := range sz.P3Conns {
		ids = append(ids, p3Device(i))
	}
	for i := range sz.P4Feeders {
		ids = append(ids, p4Feeder(i))
	}
	for i := range sz.P6Conns {
		ids = append(ids, p6Device(i))
	}
	for i := range sz.P8Conns {
		ids = append(ids, p8WSDevice(i))
	}
	for i := range sz.P8Publishers {
		ids = append(ids, p8MQTTDev(i))
	}
	ids = append(ids, p5Device, p8Probe)
	out := make([]deviceToken, len(ids))
	for i, id := range ids {
		out[i] = deviceToken{ID: id, Token: tokenFor(id)}
	}
	return out
}

// provisionGateways creates P1's gateways and their children through the
// admin API (POST /api/v1/devices). Without it (an older build, or an
// error) the gateways are static devices sending their own readings.
func provisionGateways(ctx context.Context, s *stack, sz sizes, log *slog.Logger) []gateway {
	gws := make([]gateway, sz.P1Gateways)
	err := func() error {
		for g := range gws {
			id, tok, err := s.createDevice(ctx, map[string]string{"name": p1Static(g), "kind": "gateway"})
			if err != nil {
				return err
			}
			gws[g] = gateway{ID: id, Token: tok, Children: make([]string, sz.P1Children)}
		}
		var wg sync.WaitGroup
		errs := make(chan error, len(gws))
		for g := range gws {
			wg.Go(func() {
				for c := range sz.P1Children {
					id, _, err := s.createDevice(ctx, map[string]string{"name": fmt.Sprintf("%s-c%d", p1Static(g), c), "kind": "device", "gateway": gws[g].ID})
					if err != nil {
						errs <- err
						return
					}
					gws[g].Children[c] = id
				}
			})
		}
		wg.Wait()
		close(errs)
		return <-errs
	}()
	if err != nil {
		log.Warn("P1: no gateways from the admin API; static devices send their own 100-reading batches instead", "error", err)
		for g := range gws {
			gws[g] = gateway{ID: p1Static(g), Token: tokenFor(p1Static(g))}
		}
	}
	return gws
}

func (s *stack) createDevice(ctx context.Context, body map[string]string) (id, token string, err error) {
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+s.svcAddr+"/api/v1/devices", bytes.NewReader(b))
	if err != nil {
		return "", "", err
	}
	req.Header.Set("Authorization", "Bearer "+s.adminTok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.httpc.Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return "", "", fmt.Errorf("POST /api/v1/devices: %s %s", resp.Status, bytes.TrimSpace(raw))
	}
	var out struct {
		Device struct {
			ID string `json:"id"`
		} `json:"device"`
		Token string `json:"token"`
	}
	if err := json.Unmarshal(raw, &out); err != nil || out.Device.ID == "" || out.Token == "" {
		return "", "", fmt.Errorf("POST /api/v1/devices: unexpected answer %s", raw)
	}
	return out.Device.ID, out.Token, nil
}

// procs are the processes whose CPU a phase reports.
func (e *env) procs() map[string]int {
	m := map[string]int{"harness": os.Getpid()}
	if e.s != nil {
		m["telemetryd"] = e.s.svc.pid()
		m["influxd"] = e.s.influx.pid()
		m["mosquitto"] = e.s.broker.pid()
		m["rawserver"] = e.s.raw.pid()
		if e.s.bare != nil {
			m["baresub"] = e.s.bare.pid()
		}
	}
	return m
}

// warmup is the unmeasured start of a phase.
func (e *env) warmup() time.Duration { return min(2*time.Second, e.cfg.Duration/5) }

// settle waits, at most 20 s, until every process of the stack is idle
// (below 0.1 core over half a second), and records how long that took as
// <name>_settle_s. A latency phase measures the path, not InfluxDB still
// compacting the millions of points earlier scenarios wrote: on 2 cores
// that background work landed in P5's tail and in one phase but not the
// other.
func (e *env) settle(ctx context.Context, r *result, name string) {
	if e.cfg.Smoke || e.s == nil {
		return
	}
	start := time.Now()
	for time.Since(start) < 20*time.Second {
		m := newCPUMeter(e.procs())
		if !sleepCtx(ctx, 500*time.Millisecond) {
			return
		}
		busy := false
		for proc, c := range m.cores() {
			busy = busy || (proc != "harness" && c > 0.1)
		}
		if !busy {
			break
		}
	}
	r.detail(name+"_settle_s", round2(time.Since(start).Seconds()))
}

// phase runs a measured window after the warm-up: counter is read at
// both ends; with profile set, telemetryd's CPU profile covers the window.
// It returns the rate and the cores each process used in the window.
func (e *env) phase(ctx context.Context, r *result, name string, profile bool, counter func() int64) (float64, error) {
	rate, _, _, err := e.measure(ctx, r, name, profile, counter)
	return rate, err
}

// measure is phase that also returns how many units counter counted in
// the window and the CPU each process used in it, for CPU per unit.
func (e *env) measure(ctx context.Context, r *result, name string, profile bool, counter func() int64) (float64, int64, cpuUse, error) {
	if !sleepCtx(ctx, e.warmup()) {
		return 0, 0, cpuUse{}, ctx.Err()
	}
	var waitProf func() string
	if profile {
		waitProf = e.prof.cpu(ctx, r.ID, e.cfg.Duration)
	}
	meter := newCPUMeter(e.procs())
	n0 := counter()
	w := startWindow(n0)
	if !sleepCtx(ctx, e.cfg.Duration) {
		return 0, 0, cpuUse{}, ctx.Err()
	}
	n1 := counter()
	use := meter.snapshot()
	rate := w.rate(n1)
	r.detail(name+"_cores", use.cores())
	if profile {
		e.collectProfiles(ctx, r, waitProf)
	}
	return rate, n1 - n0, use, nil
}

func (e *env) collectProfiles(ctx context.Context, r *result, waitProf func() string) {
	if p := waitProf(); p != "" {
		r.Profiles = append(r.Profiles, p)
		r.Top = topOf(p, 12)
	}
	if h := e.prof.heap(ctx, r.ID); h != "" {
		r.Profiles = append(r.Profiles, h)
	}
}

// metricPoller polls telemetryd's /metrics every interval and keeps the
// values of the keys it was asked for, with their times.
type metricPoller struct {
	mu      sync.Mutex
	samples []sample
	keys    []string
}

type sample struct {
	t time.Time
	v float64
	m map[string]float64 // the polled keys (metricPoller only)
}

func (e *env) pollMetrics(ctx context.Context, every time.Duration, keys ...string) *metricPoller {
	p := &metricPoller{keys: keys}
	var names []string // the families: a key without its labels (and a histogram's suffix)
	for _, k := range keys {
		if i := strings.IndexByte(k, '{'); i >= 0 {
			k = k[:i]
		}
		for _, n := range []string{k, strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(k, "_bucket"), "_sum"), "_count")} {
			if !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	read := func() {
		m, err := e.s.metrics(ctx, names...)
		if err != nil {
			return
		}
		vals := make(map[string]float64, len(keys))
		for _, k := range keys {
			vals[k] = m.get(k)
		}
		p.mu.Lock()
		p.samples = append(p.samples, sample{t: time.Now(), m: vals})
		p.mu.Unlock()
	}
	read()
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				read()
			}
		}
	}()
	return p
}

// value is the latest value of key.
func (p *metricPoller) value(key string) float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.samples) == 0 {
		return 0
	}
	return p.samples[len(p.samples)-1].m[key]
}

// max is the largest value of key seen.
func (p *metricPoller) max(key string) float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var m float64
	for _, s := range p.samples {
		m = max(m, s.m[key])
	}
	return m
}

// firstToLast estimates key's rate between its first increase over base
// and the first sample at or above base+total, each placed at the midpoint
// of the polling interval it happened in.
func (p *metricPoller) firstToLast(key string, base, total float64) float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var t0, t1 time.Time
	for i := 1; i < len(p.samples); i++ {
		prev, cur := p.samples[i-1], p.samples[i]
		mid := prev.t.Add(cur.t.Sub(prev.t) / 2)
		v := cur.m[key]
		if t0.IsZero() && v > base {
			t0 = mid
		}
		if v >= base+total {
			t1 = mid
			break
		}
	}
	if t0.IsZero() || t1.IsZero() || !t1.After(t0) {
		return 0
	}
	return total / t1.Sub(t0).Seconds()
}

// perSecond renders the samples from start on, one line per sample: the
// time offset, then each key's increase since the previous sample (keys
// ending in _total) or its value (gauges).
func (p *metricPoller) perSecond(start time.Time, keys []string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for i := 1; i < len(p.samples); i++ {
		prev, cur := p.samples[i-1], p.samples[i]
		if cur.t.Before(start) {
			continue
		}
		line := fmt.Sprintf("%+.0fs", cur.t.Sub(start).Seconds())
		for _, k := range keys {
			name := k
			if j := strings.IndexByte(k, '{'); j >= 0 {
				name = k[:j]
			}
			v := cur.m[k]
			if strings.HasSuffix(name, "_total") {
				v -= prev.m[k]
			}
			line += fmt.Sprintf(" %s=%.0f", shortMetric(k), v)
		}
		out = append(out, line)
	}
	return out
}

// shortMetric abbreviates a telemetryd metric key for the timeline.
func shortMetric(k string) string {
	k = strings.TrimPrefix(k, "telemetryd_")
	k = strings.Replace(k, "_total{transport=", "{", 1)
	return strings.NewReplacer(`"`, "", "frames_received", "rx", "readings_written", "written",
		"bridge_queue_frames", "queue", "mqtt_unacked_messages", "unacked").Replace(k)
}

// contentionNote flags a throughput scenario whose two phases got very
// different amounts of CPU in total (all measured processes together):
// on a shared machine that means something else took the cores during one
// of them, and the ratio says more about that than about the service.
func contentionNote(r *result) {
	if !slices.Contains([]string{"P1", "P2", "P2d", "P3", "P4"}, r.ID) {
		return
	}
	sum := func(k string) float64 {
		m, _ := r.Details[k].(map[string]float64)
		var t float64
		for _, v := range m {
			t += v
		}
		return t
	}
	svc, base := sum("service_cores"), sum("baseline_cores")
	if svc > 0 && base > 0 && min(svc, base)/max(svc, base) < 0.7 {
		r.note("the phases got different CPU in total (service %.2f cores, baseline %.2f): other load on the machine; rerun before trusting this ratio", svc, base)
	}
}

// medianRound picks, of a scenario's rounds, the one with the median ratio
// (the lower middle one for an even count) and records every round's
// figures in it; a failed round is returned as it is.
func medianRound(rs []*result) *result {
	if len(rs) == 1 || rs[len(rs)-1].Error != "" {
		return rs[len(rs)-1]
	}
	sorted := slices.Clone(rs)
	slices.SortFunc(sorted, func(a, b *result) int {
		switch {
		case a.judged() < b.judged():
			return -1
		case a.judged() > b.judged():
			return 1
		}
		return 0
	})
	m := sorted[(len(sorted)-1)/2]
	var rounds []map[string]float64
	by := "ratio"
	for _, r := range rs {
		round := map[string]float64{"service": r.Service, "baseline": r.Baseline, "ratio": r.Ratio}
		if r.CPURatio > 0 {
			round["service_cpu_ns"], round["baseline_cpu_ns"], round["cpu_ratio"] = r.ServiceCPU, r.BaselineCPU, r.CPURatio
			by = "CPU ratio"
		}
		rounds = append(rounds, round)
	}
	m.detail("rounds", rounds)
	m.note("median of %d rounds by %s (all rounds in details.rounds)", len(rs), by)
	return m
}
