package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"
)

// runPC: cluster mode against one instance, on the same load in the same
// run (issue 16). MQTT readings at a fixed rate (P5's) are consumed by
//
//   - single: the stack's telemetryd, a dashboard on it;
//   - cluster: three more telemetryd processes in one MQTT share group
//     (their own topic, so the single instance never sees the load), joined
//     by a NATS server with JetStream; the dashboard is on the third
//     instance, so two readings in three cross instances on their way.
//
// Judged: the CPU per reading of the busiest cluster instance against the
// single instance's (≤ 1.2×), and the cluster's device→dashboard p99
// against the single instance's (≤ 2×). On one machine three instances
// share its cores, so throughput does not grow here; CPU per reading is
// what predicts the cost on N machines.
func runPC(ctx context.Context, e *env, r *result) error {
	rate := e.cfg.P5Rate
	switch {
	case rate > 0:
	case e.p2Rate > 0:
		rate = max(int(e.p2Rate/4), 1)
	case e.cfg.Smoke:
		rate = 100
	default:
		rate = 1000
		r.note("P2 did not run: PC used %d readings/s", rate)
	}
	r.Unit = "CPU ns/reading, p99 ms"
	r.Goal = "CPU ≤ 1.2×, p99 ≤ 2×"
	r.detail("rate", rate)

	// Single instance: the stack's telemetryd.
	e.settle(ctx, r, "single")
	single, err := pcPhase(ctx, e, r, rate, fmt.Sprintf(mqttService, p5Device),
		map[string]string{"telemetryd": e.s.svcAddr}, map[string]int{"telemetryd": e.s.svc.pid()}, e.s.svcAddr,
		map[string]string{"single": e.s.adminAddr})
	if err != nil {
		return fmt.Errorf("single instance: %w", err)
	}
	r.detail("single", single)
	// The same instance at one instance's share of the load: what a
	// reading costs at that rate without a cluster, which tells the
	// cluster's own costs from those of a lower rate per process.
	e.settle(ctx, r, "third")
	third, err := pcPhase(ctx, e, r, max(rate/3, 1), fmt.Sprintf(mqttService, p5Device),
		map[string]string{"telemetryd": e.s.svcAddr}, map[string]int{"telemetryd": e.s.svc.pid()}, e.s.svcAddr, nil)
	if err != nil {
		return fmt.Errorf("single instance at a third of the rate: %w", err)
	}
	r.detail("single_third_rate", third)

	// The cluster beside it.
	cl, err := startPCCluster(ctx, e)
	if err != nil {
		return err
	}
	defer cl.close()
	e.settle(ctx, r, "cluster")
	cluster, err := pcPhase(ctx, e, r, rate, fmt.Sprintf(pcTopic, p5Device), cl.addrs, cl.pids, cl.addrs["pc-c"],
		map[string]string{"pc-a": cl.admin["pc-a"], "pc-c": cl.admin["pc-c"]})
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	r.detail("cluster", cluster)

	var busiest string
	for name, cpu := range cluster.CPUPerReading {
		if busiest == "" || cpu > cluster.CPUPerReading[busiest] {
			busiest = name
		}
	}
	r.ServiceCPU, r.BaselineCPU = cluster.CPUPerReading[busiest], single.CPUPerReading["telemetryd"]
	r.Service, r.Baseline = cluster.Latency.P99ms, single.Latency.P99ms
	r.ServiceText = fmt.Sprintf("3 inst: %.0f ns/reading (busiest %s), p99 %.2f ms", r.ServiceCPU, busiest, r.Service)
	r.BaselineText = fmt.Sprintf("1 inst: %.0f ns/reading, p99 %.2f ms", r.BaselineCPU, r.Baseline)
	r.judgeCPU(1.2)
	// Each instance's fixed costs (tickers, pings, the relay's flushes) are
	// spread over a third of the readings: the lower the rate, the more
	// that alone raises the cluster's CPU per reading.
	r.note("at %d readings/s each cluster instance took about %d/s; fixed per-process costs weigh 3× more per reading there than on the single instance", rate, rate/3)
	if t := third.CPUPerReading["telemetryd"]; t > 0 && r.BaselineCPU > 0 {
		r.detail("cpu_ratio_rate_effect", round2(t/r.BaselineCPU))
		r.detail("cpu_ratio_cluster_effect", round2(r.ServiceCPU/t))
		r.note("the single instance at %d readings/s (a cluster instance's share): %.0f ns/reading, %.2f× its cost at %d/s; "+
			"the busiest cluster instance costs %.2f× that: the cluster's own share of the ratio",
			rate/3, t, t/r.BaselineCPU, rate, r.ServiceCPU/t)
	}
	if r.Pass != nil && r.Baseline > 0 && r.Service > 2*r.Baseline {
		f := false
		r.Pass = &f
	}
	if cluster.Latency.Count == 0 || single.Latency.Count == 0 {
		return fmt.Errorf("no latency samples (single %d, cluster %d)", single.Latency.Count, cluster.Latency.Count)
	}
	return nil
}

// pcTopic is the cluster phase's MQTT topic: the single instance does not
// subscribe to it.
const pcTopic = "pc/%s/telemetry"

// pcFigures is one phase's outcome.
type pcFigures struct {
	Readings      map[string]float64 `json:"readings"`           // consumed, per instance
	CPUPerReading map[string]float64 `json:"cpu_ns_per_reading"` // per instance: its CPU / its readings
	Cores         map[string]float64 `json:"cores"`
	Latency       latencySummary     `json:"latency"`
	Drops         int64              `json:"dashboard_drops,omitempty"`
}

// pcPhase publishes at rate to topic for warm-up + the phase's duration,
// with a dashboard on dashAddr, and measures each instance's CPU per
// reading it consumed.
func pcPhase(ctx context.Context, e *env, r *result, rate int, topic string, addrs map[string]string, pids map[string]int, dashAddr string, profile map[string]string) (pcFigures, error) {
	f := pcFigures{Readings: map[string]float64{}, CPUPerReading: map[string]float64{}}
	var since atomic.Int64
	var lat hist
	var drops atomic.Int64
	lctx, stopLive := context.WithCancel(ctx)
	defer stopLive()
	liveDone, err := keepLive(lctx, e.dial, "ws://"+dashAddr+"/v1/live", e.s.adminTok, []string{p5Device}, func(now int64, l time.Duration) {
		if s := since.Load(); s != 0 && now-int64(l) >= s {
			lat.record(l)
		}
	}, &drops)
	if err != nil {
		return f, err
	}
	defer func() { stopLive(); <-liveDone }()
	before := map[string]metricSet{}
	for name, addr := range addrs {
		if before[name], err = scrapeAddr(ctx, e.s.httpc, addr); err != nil {
			return f, err
		}
	}
	meter := newCPUMeter(pids)
	// Profiles of the phase's load (name → admin address): the profile id
	// is PC-<name>.
	var waits []func() string
	for name, admin := range profile {
		waits = append(waits, e.prof.cpuOf(ctx, admin, r.ID+"-"+name, e.cfg.Duration))
	}
	err = publishAtRate(ctx, e, topic, "bench-pub-pc", float64(rate), e.cfg.Duration, &since)
	for _, wait := range waits {
		if p := wait(); p != "" {
			r.Profiles = append(r.Profiles, p)
		}
	}
	if err != nil {
		return f, err
	}
	want := int64(float64(rate) * e.cfg.Duration.Seconds() * 0.99)
	_ = waitCount(ctx, lat.count, want, 5*time.Second)
	use := meter.snapshot()
	f.Cores = use.cores()
	const accepted = `telemetryd_readings_accepted_total{transport="mqtt"}`
	for name, addr := range addrs {
		after, err := scrapeAddr(ctx, e.s.httpc, addr)
		if err != nil {
			return f, err
		}
		n := after.get(accepted) - before[name].get(accepted)
		f.Readings[name] = n
		f.CPUPerReading[name] = round2(perUnit(use.used[name], n))
	}
	f.Latency = lat.summary()
	f.Drops = drops.Load()
	return f, nil
}

// scrapeAddr is one uncompressed scrape of addr's /metrics.
func scrapeAddr(ctx context.Context, c *http.Client, addr string) (metricSet, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s/metrics: %s", addr, resp.Status)
	}
	return parseMetrics(resp.Body)
}

// pcCluster is the cluster phase's NATS server and three instances.
type pcCluster struct {
	nats  *child
	nodes []*child
	addrs map[string]string // instance → HTTP address
	admin map[string]string // instance → admin (pprof) address
	pids  map[string]int
}

func (c *pcCluster) close() {
	for _, n := range c.nodes {
		n.stop(10 * time.Second)
	}
	c.nats.stop(5 * time.Second)
}

// startPCCluster starts nats-server with JetStream and three telemetryd
// instances sharing it, the broker, InfluxDB and the static device tokens.
func startPCCluster(ctx context.Context, e *env) (_ *pcCluster, err error) {
	bin, err := findBinary("", "TELEMETRY_NATS_SERVER", []string{"/usr/sbin/nats-server", "/usr/bin/nats-server"}, "nats-server")
	if err != nil {
		return nil, err
	}
	c := &pcCluster{addrs: map[string]string{}, admin: map[string]string{}, pids: map[string]int{}}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	natsAddr := "127.0.0.1:" + strconv.Itoa(port)
	if c.nats, err = startChild("pc-nats", e.s.logDir, nil, bin, "-a", "127.0.0.1", "-p", strconv.Itoa(port),
		"-js", "-sd", filepath.Join(e.s.dir, "pc-nats")); err != nil {
		return nil, err
	}
	if err := waitFor(ctx, c.nats, 30*time.Second, func() error {
		conn, err := net.DialTimeout("tcp", natsAddr, time.Second)
		if err == nil {
			conn.Close()
		}
		return err
	}); err != nil {
		return nil, err
	}
	tokPath := filepath.Join(e.s.dir, "device-tokens")
	if _, err := os.Stat(tokPath); err != nil {
		return nil, err
	}
	for _, name := range []string{"pc-a", "pc-b", "pc-c"} {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		aport, err := freePort()
		if err != nil {
			return nil, err
		}
		admin := "127.0.0.1:" + strconv.Itoa(aport)
		args := append([]string{
			"-http-addr", addr, "-admin-addr", admin, "-admin-token", e.s.adminTok, "-device-tokens", tokPath,
			"-data-dir", filepath.Join(e.s.dir, name),
			"-influx-url", e.s.influxURL, "-influx-bucket", serviceDB + "/autogen",
			"-mqtt-url", e.s.mqttURL, "-mqtt-topic", fmt.Sprintf(pcTopic, "+"),
			"-mqtt-client-id", "bench-pc", "-mqtt-share-group", "pc", "-instance-id", name,
			"-live-nats-url", "nats://" + natsAddr,
			"-log-level", "warn", "-shutdown-grace", "5s", "-device-frame-rate", "1000000",
		}, e.cfg.ServiceArgs...)
		n, err := startChild(name, e.s.logDir, nil, e.cfg.Telemetryd, args...)
		if err != nil {
			return nil, err
		}
		c.nodes = append(c.nodes, n)
		c.addrs[name], c.admin[name], c.pids[name] = addr, admin, n.pid()
	}
	for i, n := range c.nodes {
		addr := c.addrs[n.name]
		if err := waitFor(ctx, c.nodes[i], 60*time.Second, func() error {
			m, err := scrapeAddr(ctx, e.s.httpc, addr)
			if err != nil {
				return err
			}
			if m.get("telemetryd_live_relay_connected") != 1 || m.get("telemetryd_mqtt_connected") < 1 {
				return errors.New("relay or MQTT not connected yet")
			}
			return nil
		}); err != nil {
			return nil, err
		}
	}
	return c, nil
}
