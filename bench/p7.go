package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/influxdata/influxdb-client-go/v2/api/write"

	"github.com/telemetryd/telemetryd/bridge"
	"github.com/telemetryd/telemetryd/ingest/payload"
	"github.com/telemetryd/telemetryd/telemetry"
)

// p7Payload is one device reading as it arrives: P3's frame, dated an
// hour ago (within the bridge's clock-skew bounds).
func p7Payload() []byte { return singleFrame(nil, 17, time.Now().Add(-time.Hour).UnixNano(), 3) }

// p7Service is the service's path for one payload, through exported entry
// points only: payload.Decoder, then bridge.Bridge.Consume (normalize and
// line-protocol encode) with its writer draining into a sink that discards.
type p7Service struct {
	dec    *payload.Decoder
	br     *bridge.Bridge
	cancel context.CancelFunc
	done   chan struct{}
}

type discardSink struct{}

func (discardSink) Write(context.Context, []byte) error { return nil }

func newP7Service() *p7Service {
	ctx, cancel := context.WithCancel(context.Background())
	s := &p7Service{
		dec:    payload.NewDecoder(payload.Limits{}),
		br:     bridge.New(bridge.Config{QueueFrames: 1 << 16}, discardSink{}, nil, slog.New(slog.DiscardHandler)),
		cancel: cancel,
		done:   make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		_ = s.br.Run(ctx)
	}()
	return s
}

func (s *p7Service) close() {
	s.cancel()
	<-s.done
}

// op handles one payload.
func (s *p7Service) op(data []byte) error {
	now := time.Now()
	msg, err := s.dec.Decode(data, now)
	if err != nil {
		return err
	}
	rcpt, err := s.br.Consume(context.Background(), &telemetry.Frame{
		Device: "dev-1", Readings: msg.Readings, Invalid: msg.Invalid, Skipped: msg.Skipped, Received: now,
	})
	if err != nil {
		return err
	}
	if rcpt.Accepted != len(msg.Readings) {
		return fmt.Errorf("p7: %d of %d readings accepted: %+v", rcpt.Accepted, len(msg.Readings), rcpt.Rejected)
	}
	return nil
}

// p7Baseline is the textbook path: encoding/json into a map, then
// influxdb-client-go's write.Point and its line-protocol encoder.
func p7Baseline(data []byte) (string, error) {
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return "", err
	}
	meas, _ := m["measurement"].(string)
	fields, ok := m["metrics"].(map[string]any)
	if !ok || meas == "" {
		return "", errors.New("p7 baseline: no measurement or metrics")
	}
	tags := map[string]string{"device_id": "dev-1"}
	if t, ok := m["tags"].(map[string]any); ok {
		for k, v := range t {
			if s, ok := v.(string); ok {
				tags[k] = s
			}
		}
	}
	ts, _ := m["ts"].(float64)
	p := write.NewPoint(meas, tags, fields, time.Unix(0, int64(ts)))
	return write.PointToLineProtocol(p, time.Nanosecond), nil
}

// cpuCost is one side of P7.
type cpuCost struct {
	Ops          int64   `json:"ops"`
	WallNsPerOp  float64 `json:"wall_ns_per_op"`
	CPUNsPerOp   float64 `json:"cpu_ns_per_op"`
	AllocsPerOp  float64 `json:"allocs_per_op"`
	BytesPerOp   float64 `json:"bytes_per_op"`
	GOMAXPROCS   int     `json:"gomaxprocs"`
	CPUByRusage  bool    `json:"cpu_by_rusage"`
	ProfileWrote string  `json:"profile,omitempty"`
}

// measureCPU runs op for about d (after a short warm-up) and reports the
// process CPU time (user+system, getrusage: the bridge's writer goroutine
// and the GC included) and allocations per op.
func measureCPU(d time.Duration, profile string, op func() error) (cpuCost, error) {
	for range 1000 {
		if err := op(); err != nil {
			return cpuCost{}, err
		}
	}
	var prof *os.File
	if profile != "" {
		f, err := os.Create(profile)
		if err == nil && pprof.StartCPUProfile(f) == nil {
			prof = f
		} else if f != nil {
			f.Close()
		}
	}
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	cpu0 := selfCPU()
	t0 := time.Now()
	var n int64
	for time.Since(t0) < d {
		for range 256 {
			if err := op(); err != nil {
				return cpuCost{}, err
			}
		}
		n += 256
	}
	wall := time.Since(t0)
	cpu := selfCPU() - cpu0
	runtime.ReadMemStats(&ms1)
	c := cpuCost{
		Ops: n, WallNsPerOp: round2(float64(wall) / float64(n)), CPUNsPerOp: round2(float64(cpu) / float64(n)),
		AllocsPerOp: round2(float64(ms1.Mallocs-ms0.Mallocs) / float64(n)), BytesPerOp: round2(float64(ms1.TotalAlloc-ms0.TotalAlloc) / float64(n)),
		GOMAXPROCS: runtime.GOMAXPROCS(0), CPUByRusage: cpu > 0,
	}
	if prof != nil {
		pprof.StopCPUProfile()
		prof.Close()
		c.ProfileWrote = profile
	}
	if cpu <= 0 {
		c.CPUNsPerOp = c.WallNsPerOp
	}
	return c, nil
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runP7 compares CPU per reading in this process (no stack needed).
func runP7(ctx context.Context, e *env, r *result) error {
	d := 3 * time.Second
	if e.cfg.Smoke {
		d = 200 * time.Millisecond
	}
	r.Unit = "CPU ns/reading"
	r.Goal = "≤ 0.15"
	data := p7Payload()
	r.detail("payload_bytes", len(data))
	svc := newP7Service()
	profile := ""
	if e.cfg.Profile {
		profile = filepath.Join(e.cfg.Out, "P7.cpu.pprof")
	}
	sc, err := measureCPU(d, profile, func() error { return svc.op(data) })
	svc.close()
	if err != nil {
		return fmt.Errorf("service path: %w", err)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if sc.ProfileWrote != "" {
		r.Profiles = append(r.Profiles, sc.ProfileWrote)
		r.Top = topOf(sc.ProfileWrote, 12)
	}
	bc, err := measureCPU(d, "", func() error { _, err := p7Baseline(data); return err })
	if err != nil {
		return fmt.Errorf("baseline path: %w", err)
	}
	r.detail("service", sc)
	r.detail("baseline", bc)
	r.Service, r.Baseline = sc.CPUNsPerOp, bc.CPUNsPerOp
	r.ServiceText = fmt.Sprintf("%.0f ns, %.0f allocs", sc.CPUNsPerOp, sc.AllocsPerOp)
	r.BaselineText = fmt.Sprintf("%.0f ns, %.0f allocs", bc.CPUNsPerOp, bc.AllocsPerOp)
	r.judge(0.15, false)
	if e.cfg.Profile {
		r.note("the P7 profile is of this process (the service path in-process), not of telemetryd")
	}
	return nil
}
