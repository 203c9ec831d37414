package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/bridge"
	"github.com/telemetryd/telemetryd/ingest/payload"
	"github.com/telemetryd/telemetryd/internal/testsupport"
	"github.com/telemetryd/telemetryd/telemetry"
)

// TestMain lets the harness re-execute the test binary as its raw server
// and its bare subscriber.
func TestMain(m *testing.M) {
	if code, ok := childMain(); ok {
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// TestSmoke runs every scenario in -smoke mode against the real stack, so
// that the harness cannot rot. It checks that each scenario ran and
// produced numbers — never how fast anything was.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts InfluxDB, Mosquitto and telemetryd")
	}
	for _, b := range []struct{ flag, env, name string }{
		{"", "TELEMETRY_INFLUXD", "influxd"},
		{"", "TELEMETRY_MOSQUITTO", "mosquitto"},
	} {
		if _, err := findBinary(b.flag, b.env, []string{filepath.Join(moduleRoot(), ".tools/bin/influxd"), "/usr/sbin/mosquitto"}, b.name); err != nil {
			testsupport.Missing(t, err.Error())
		}
	}
	dir := t.TempDir()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go not in PATH: cannot build telemetryd")
	}
	build := exec.Command(goBin, "build", "-o", dir, "./cmd/telemetryd")
	build.Dir = moduleRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/telemetryd: %v\n%s", err, out)
	}
	cfg, err := parseConfig([]string{"-smoke", "-telemetryd", filepath.Join(dir, "telemetryd"), "-out", filepath.Join(dir, "out")}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var out bytes.Buffer
	rep, err := run(ctx, cfg, &out)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, r := range rep.Results {
		got[r.ID] = true
		if r.Error != "" {
			t.Errorf("%s: %s", r.ID, r.Error)
		} else if !r.hasNumbers() {
			t.Errorf("%s: no numbers: service %v, baseline %v, CPU %v / %v ns", r.ID, r.Service, r.Baseline, r.ServiceCPU, r.BaselineCPU)
		}
		// P2, P2d and P3 are judged by CPU per unit, each consumer
		// measured in its own process.
		if slices.Contains([]string{"P2", "P2d", "P3"}, r.ID) && (r.CPURatio <= 0 || r.Goal != cpuGoal || r.Pass == nil) {
			t.Errorf("%s: not judged by CPU: cpu ratio %v, goal %q, pass %v", r.ID, r.CPURatio, r.Goal, r.Pass)
		}
	}
	if d := find(rep.Results, "P2d"); d != nil {
		// The drain really drained a backlog: telemetryd came back with
		// the same session and found the messages queued for it.
		for _, k := range []string{"baseline_drain", "service_drain"} {
			if m, _ := d.Details[k].(map[string]float64); m["samples"] < 2 || m["cpu_window_from_msg"] >= float64(cfg.sizes().P2Drain) {
				t.Errorf("P2d %s = %v", k, d.Details[k])
			}
		}
	}
	for _, id := range scenarioIDs() {
		if !got[id] {
			t.Errorf("scenario %s did not run", id)
		}
	}
	for _, f := range []string{"results.json", "results.md"} {
		if _, err := os.Stat(filepath.Join(dir, "out", f)); err != nil {
			t.Error(err)
		}
	}
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr bool
		check   func(config) bool
	}{
		{nil, false, func(c config) bool {
			return len(c.Scenarios) == len(scenarioIDs()) && c.Duration == 15*time.Second && c.Overload == 30*time.Second
		}},
		{[]string{"-scenarios", "p3,P1,P3"}, false, func(c config) bool { return strings.Join(c.Scenarios, ",") == "P1,P3" }},
		{[]string{"-scenarios", "P3,p2d,P2"}, false, func(c config) bool { return strings.Join(c.Scenarios, ",") == "P2,P2d,P3" }},
		{[]string{"-full"}, false, func(c config) bool { return c.Overload == 2*time.Minute && c.Recovery == time.Minute }},
		{[]string{"-smoke"}, false, func(c config) bool { return c.Duration < 2*time.Second && c.sizes().P6Conns < 100 }},
		{[]string{"-scale", "10"}, false, func(c config) bool { return c.sizes().P6Conns == 100000 && c.sizes().P4Subscribers == 10000 }},
		{[]string{"-service-args", "-flush-interval 20ms"}, false, func(c config) bool { return len(c.ServiceArgs) == 2 }},
		{[]string{"-scenarios", "P10"}, true, nil},
		{[]string{"-scale", "0"}, true, nil},
		{[]string{"-rounds", "3"}, false, func(c config) bool { return c.Rounds == 3 }},
		{[]string{"-rounds", "0"}, true, nil},
		{[]string{"extra"}, true, nil},
	}
	for _, tt := range tests {
		c, err := parseConfig(tt.args, io.Discard)
		if (err != nil) != tt.wantErr {
			t.Errorf("%v: err = %v, want error %v", tt.args, err, tt.wantErr)
			continue
		}
		if err == nil && !tt.check(c) {
			t.Errorf("%v: unexpected config %+v", tt.args, c)
		}
	}
}

func TestBrokerSettings(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(conf, []byte("# comment\nper_listener_settings false\n\nmax_inflight_messages 777\nlistener 1883 0.0.0.0\npassword_file /x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got := brokerSettings(conf)
	if got != "per_listener_settings false\nmax_inflight_messages 777\n" {
		t.Errorf("settings = %q", got)
	}
	if got := brokerSettings(filepath.Join(dir, "missing")); !strings.Contains(got, "max_inflight_messages") {
		t.Errorf("fallback = %q", got)
	}
	// The project's own file parses.
	if got := brokerSettings(filepath.Join(moduleRoot(), "deploy", "mosquitto.conf")); !strings.Contains(got, "max_inflight_messages") {
		t.Errorf("deploy/mosquitto.conf gives %q", got)
	}
}

func TestParseMetrics(t *testing.T) {
	in := `# HELP telemetryd_acks_sent_total Acknowledgements.
# TYPE telemetryd_acks_sent_total counter
telemetryd_acks_sent_total{transport="mqtt"} 1234
telemetryd_acks_sent_total{transport="ws"} 5
telemetryd_ws_connections 10000
go_gc_duration_seconds{quantile="0.5"} 1.5e-05
`
	m, err := parseMetrics(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		got, want float64
	}{
		{m.get(`telemetryd_acks_sent_total{transport="mqtt"}`), 1234},
		{m.sum("telemetryd_acks_sent_total"), 1239},
		{m.get("telemetryd_ws_connections"), 10000},
		{m.get(`go_gc_duration_seconds{quantile="0.5"}`), 1.5e-05},
		{m.sum("telemetryd_acks_sent"), 0}, // a prefix is not a name
	}
	for i, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%d: got %v, want %v", i, tt.got, tt.want)
		}
	}
	after := metricSet{`a{x="1"}`: 5, "b": 2, "c": 7}
	d := delta(metricSet{`a{x="1"}`: 3, "b": 2}, after, "a", "c")
	if len(d) != 2 || d[`a{x="1"}`] != 2 || d["c"] != 7 {
		t.Errorf("delta = %v", d)
	}
}

func TestScanning(t *testing.T) {
	tests := []struct {
		in, key string
		want    int64
		ok      bool
	}{
		{`{"ack":42}`, `{"ack":`, 42, true},
		{`{"seq":7,"ts":1795363502097097435}`, `"ts":`, 1795363502097097435, true},
		{`{"ts":"2026-01-01T00:00:00Z"}`, `"ts":`, 0, false},
		{`{"metrics":{}}`, `"ts":`, 0, false},
	}
	for _, tt := range tests {
		got, _, ok := scanInt([]byte(tt.in), tt.key, 0)
		if got != tt.want || ok != tt.ok {
			t.Errorf("scanInt(%s, %s) = %d, %v; want %d, %v", tt.in, tt.key, got, ok, tt.want, tt.ok)
		}
	}
	for in, want := range map[string]string{
		`{"error":{"seq":3,"code":"overloaded","message":"x"}}`: "overloaded",
		`{"error":{}}`: "unknown",
	} {
		if got := errorCode([]byte(in)); got != want {
			t.Errorf("errorCode(%s) = %q, want %q", in, got, want)
		}
	}
	if got := reasonOf(`telemetryd_frames_rejected_total{reason="overloaded",transport="ws"}`); got != "overloaded" {
		t.Errorf("reasonOf = %q", got)
	}
}

func TestMedianRound(t *testing.T) {
	rs := []*result{{ID: "P3", Ratio: 0.3}, {ID: "P3", Ratio: 0.1}, {ID: "P3", Ratio: 0.2}}
	m := medianRound(rs)
	if m.Ratio != 0.2 || len(m.Details["rounds"].([]map[string]float64)) != 3 {
		t.Errorf("median round = %+v", m)
	}
	if one := []*result{{ID: "P1", Ratio: 0.5}}; medianRound(one) != one[0] || one[0].Details != nil {
		t.Error("a single round must come back untouched")
	}
	failed := []*result{{ID: "P1", Ratio: 0.5}, {ID: "P1", Error: "boom"}}
	if medianRound(failed).Error != "boom" {
		t.Error("a failed round must be reported")
	}
}

func TestMedianRoundByCPURatio(t *testing.T) {
	// Rate ratios and CPU ratios in opposite orders: the CPU ratio picks.
	rs := []*result{{ID: "P2", Ratio: 0.9, CPURatio: 1.5}, {ID: "P2", Ratio: 0.7, CPURatio: 1.1}, {ID: "P2", Ratio: 0.8, CPURatio: 1.3}}
	if m := medianRound(rs); m.CPURatio != 1.3 {
		t.Errorf("median round = %+v", m)
	}
}

func TestJudgeCPU(t *testing.T) {
	tests := []struct {
		svc, base, svcCPU, baseCPU float64
		wantRatio, wantCPU         float64
		wantPass                   *bool
	}{
		{40e3, 50e3, 12000, 10000, 0.8, 1.2, ptr(true)},
		{50e3, 50e3, 13000, 10000, 1, 1.3, ptr(false)},
		{40e3, 50e3, 0, 10000, 0.8, 0, nil}, // no CPU figure: not judged
	}
	for _, tt := range tests {
		r := &result{Service: tt.svc, Baseline: tt.base, ServiceCPU: tt.svcCPU, BaselineCPU: tt.baseCPU}
		r.judgeCPU(cpuLimit)
		if r.Ratio != tt.wantRatio || r.CPURatio != tt.wantCPU || (r.Pass == nil) != (tt.wantPass == nil) || (r.Pass != nil && *r.Pass != *tt.wantPass) {
			t.Errorf("%+v: ratio %v, cpu ratio %v, pass %v", tt, r.Ratio, r.CPURatio, r.Pass)
		}
	}
	r := &result{ID: "P2", Goal: cpuGoal, ServiceText: "1", BaselineText: "2", ServiceCPU: 11100, BaselineCPU: 6700, CPURatio: 1.66}
	if got := cpuText(r) + " " + cpuRatioText(r); got != "11.1 µs / 6.7 µs 1.66" {
		t.Errorf("cells = %q", got)
	}
	rep := &report{Results: []*result{r}}
	if md := rep.markdown(); !strings.Contains(md, "| 11.1 µs / 6.7 µs | 1.66 | CPU ≤ 1.25× |") {
		t.Errorf("markdown row missing:\n%s", md)
	}
}

func ptr[T any](v T) *T { return &v }

func find(rs []*result, id string) *result {
	for _, r := range rs {
		if r.ID == id {
			return r
		}
	}
	return nil
}

func TestDrainFigures(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int, n int64, cpuMs int) drainSample {
		return drainSample{t: t0.Add(time.Duration(ms) * time.Millisecond), n: n, cpu: time.Duration(cpuMs) * time.Millisecond}
	}
	tests := []struct {
		name      string
		ss        []drainSample
		total     int64
		wantRate  float64 // msgs/s
		wantCPUNs float64
	}{
		{"start-up, flow, done", []drainSample{at(0, 0, 30), at(50, 0, 40), at(100, 1000, 50), at(150, 2000, 60), at(200, 3000, 70), at(250, 4000, 80)}, 4000,
			// CPU from the last zero sample (40 ms) to done (80 ms) over 4000;
			// rate from 1000 at 100 ms to 3000 at 200 ms.
			20000, 10000},
		{"first sample already flowing", []drainSample{at(0, 500, 10), at(50, 1500, 20), at(100, 2000, 25)}, 2000,
			// CPU over the 1500 messages after the first sample; rate 1000 in 50 ms.
			20000, 10000},
		{"one sample in flow", []drainSample{at(0, 0, 10), at(50, 500, 15), at(100, 2000, 25)}, 2000,
			// fewer than two samples in flow: the whole window, 2000 in 100 ms.
			20000, 7500},
		{"not done", []drainSample{at(0, 0, 0), at(50, 10, 1)}, 100, 0, 0},
		{"done at the first sample", []drainSample{at(0, 100, 5)}, 100, 0, 0},
	}
	for _, tt := range tests {
		d := drainFigures(tt.ss, tt.total)
		if math.Abs(d.rate-tt.wantRate) > 1e-6 || math.Abs(d.cpuNs-tt.wantCPUNs) > 1e-6 {
			t.Errorf("%s: rate %v, cpu %v ns; want %v, %v", tt.name, d.rate, d.cpuNs, tt.wantRate, tt.wantCPUNs)
		}
	}
}

func TestCPUTimeOfAnotherProcess(t *testing.T) {
	// The precise process clock, not the 10 ms ticks: a busy child's CPU
	// grows between two reads 20 ms apart.
	cmd := exec.Command("sh", "-c", "while :; do :; done")
	if err := cmd.Start(); err != nil {
		t.Skip(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	pid := cmd.Process.Pid
	deadline := time.Now().Add(20 * time.Second)
	for cpuTime(pid) < 100*time.Millisecond && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	a := cpuTime(pid)
	time.Sleep(20 * time.Millisecond)
	b := cpuTime(pid)
	st := statCPUTime(pid)
	if tick := 10 * time.Millisecond; b <= a || (a%tick == 0 && b%tick == 0) {
		t.Errorf("cpu time %v → %v: not a nanosecond clock", a, b)
	}
	if st <= 0 || st > b+20*time.Millisecond || st < a-20*time.Millisecond {
		t.Errorf("/proc stat says %v, the clock %v → %v", st, a, b)
	}
}

func TestIOCalls(t *testing.T) {
	if _, err := os.Stat("/proc/self/io"); err != nil {
		t.Skip("no per-process I/O accounting:", err)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "x"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	before := ioCalls(os.Getpid())
	for range 50 {
		if _, err := f.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	// Other goroutines of the test binary may add calls, never remove them.
	if d := ioCalls(os.Getpid()).sub(before); d.writes < 50 || d.reads < 0 {
		t.Errorf("50 writes counted as %+v", d)
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h hist
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Millisecond)
	}
	for _, tt := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.99, 990 * time.Millisecond}, {1, time.Second}} {
		got := h.quantile(tt.q)
		if got < tt.want || float64(got) > float64(tt.want)*(1+1.0/histSub)+1e3 {
			t.Errorf("q%.2f = %v, want %v within %.0f%%", tt.q, got, tt.want, 100.0/histSub)
		}
	}
	var empty hist
	if empty.quantile(0.99) != 0 || empty.summary().Count != 0 {
		t.Error("empty histogram is not zero")
	}
}

func TestRecovery(t *testing.T) {
	end := time.Unix(1000, 0)
	tl := &timeline{}
	// 50 readings/s: 3 s of 500 ms latency after the end, then 1 ms.
	for i := range 400 {
		at := end.Add(time.Duration(i) * 20 * time.Millisecond)
		lat := time.Millisecond
		if at.Before(end.Add(3 * time.Second)) {
			lat = 500 * time.Millisecond
		}
		tl.add(at.UnixNano(), lat)
	}
	if got := tl.recovery(end, end.Add(8*time.Second), 3, 25); got != 3 {
		t.Errorf("recovery = %v, want 3", got)
	}
	if got := tl.recovery(end, end.Add(4500*time.Millisecond), 3, 25); got != -1 {
		t.Errorf("recovery before two good windows = %v, want -1", got)
	}
	if got := tl.recovery(end, end.Add(8*time.Second), 3, 60); got != -1 {
		t.Errorf("recovery with too few readings = %v, want -1", got)
	}
}

// allowChildren lets every gateway report for every device.
type allowChildren struct{}

func (allowChildren) MayReportFor(_, _ telemetry.DeviceID) bool { return true }

type captureSink struct{ lines bytes.Buffer }

func (s *captureSink) Write(_ context.Context, b []byte) error { s.lines.Write(b); return nil }

// TestBulkLinesMatchService: the P1 bulk loader writes exactly the lines
// telemetryd writes for the gateways' frames (same schema), and the frames
// are valid for the decoder.
func TestBulkLinesMatchService(t *testing.T) {
	children := []string{"c-0", "c-1", "c-2"}
	const ts0, n = int64(1795363502000000000), 7
	frame := batchFrame(nil, 5, children, ts0, n)
	msg, err := payload.NewDecoder(payload.Limits{}).Decode(frame, time.Unix(0, ts0))
	if err != nil || !msg.HasSeq || msg.Seq != 5 || len(msg.Readings) != n {
		t.Fatalf("decode: %v %+v", err, msg)
	}
	sink := &captureSink{}
	br := bridge.New(bridge.Config{Children: allowChildren{}, FlushInterval: time.Millisecond}, sink, nil, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = br.Run(ctx); close(done) }()
	acked := make(chan struct{})
	if _, err := br.Consume(ctx, &telemetry.Frame{Device: "gw", Readings: msg.Readings, Received: time.Unix(0, ts0),
		Done: func(telemetry.Outcome) { close(acked) }}); err != nil {
		t.Fatal(err)
	}
	<-acked
	cancel()
	<-done
	var want []byte
	for i := range n {
		want = appendLine(want, children[i%len(children)], ts0+int64(i), i)
	}
	if got := sink.lines.String(); got != string(want) {
		t.Errorf("service lines:\n%s\nbulk lines:\n%s", got, want)
	}
	// gzipBatch: the same lines, compressed.
	zr, err := gzip.NewReader(bytes.NewReader(gzipBatch(children, 0, ts0, n)))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(zr)
	if string(raw) != string(want) {
		t.Errorf("gzip batch:\n%s\nwant:\n%s", raw, want)
	}
	// The P3 frame is one valid reading with a seq.
	m, err := payload.NewDecoder(payload.Limits{}).Decode(singleFrame(nil, 9, ts0, 0), time.Unix(0, ts0))
	if err != nil || m.Seq != 9 || len(m.Readings) != 1 || len(m.Readings[0].Fields) != 5 {
		t.Errorf("single frame: %v %+v", err, m)
	}
}

func TestP7PathsAgree(t *testing.T) {
	data := p7Payload()
	s := newP7Service()
	defer s.close()
	if err := s.op(data); err != nil {
		t.Fatal(err)
	}
	line, err := p7Baseline(data)
	if err != nil {
		t.Fatal(err)
	}
	// Same point, though the client sorts fields by name.
	for _, part := range []string{"environment,device_id=dev-1,site=plant-3 ", "temperature=20.3", "humidity=40.1", "rssi=-67", "door_open=false"} {
		if !strings.Contains(line, part) {
			t.Errorf("baseline line %q lacks %q", line, part)
		}
	}
}

// BenchmarkP7Service is P7's service side as a Go benchmark.
func BenchmarkP7Service(b *testing.B) {
	data := p7Payload()
	s := newP7Service()
	defer s.close()
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if err := s.op(data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkP7Baseline is P7's baseline: encoding/json + write.Point.
func BenchmarkP7Baseline(b *testing.B) {
	data := p7Payload()
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := p7Baseline(data); err != nil {
			b.Fatal(err)
		}
	}
}

func TestSecondLargest(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{5}, 5},
		{[]float64{1, 9}, 1},
		{[]float64{105, 131, 110, 99}, 110}, // one spike is ignored
		{[]float64{3, 7, 7}, 7},
	}
	for _, tt := range tests {
		if got := secondLargest(tt.in); got != tt.want {
			t.Errorf("secondLargest(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
