package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/bridge"
	"github.com/telemetryd/telemetryd/ingest/payload"
	"github.com/telemetryd/telemetryd/telemetry"
)

// TestMain lets the harness re-execute the test binary as its raw server.
func TestMain(m *testing.M) {
	if os.Getenv(roleEnv) == "rawserver" {
		os.Exit(rawServerMain())
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
			if os.Getenv("CI") == "true" {
				t.Fatal(err)
			}
			t.Skip(err)
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
			t.Errorf("%s: no numbers: service %v, baseline %v", r.ID, r.Service, r.Baseline)
		}
	}
	for _, id := range allScenarios {
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
			return len(c.Scenarios) == 9 && c.Duration == 15*time.Second && c.Overload == 30*time.Second
		}},
		{[]string{"-scenarios", "p3,P1,P3"}, false, func(c config) bool { return strings.Join(c.Scenarios, ",") == "P1,P3" }},
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
