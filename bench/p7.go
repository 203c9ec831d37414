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

// settle waits (at most 10 s) until the bridge's writer has written every
// reading accepted so far.
func (s *p7Service) settle() {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if st := s.br.Stats(); st.ReadingsWritten >= st.ReadingsAccepted {
			return
		}
		time.Sleep(100 * time.Microsecond)
	}
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
	Ops         int64   `json:"ops"`
	WallNsPerOp float64 `json:"wall_ns_per_op"`
	CPUNsPerOp  float64 `json:"cpu_ns_per_op"`
	AllocsPerOp float64 `json:"allocs_per_op"`
	BytesPerOp  float64 `json:"bytes_per_op"`
	GOMAXPROCS  int     `json:"gomaxprocs"`
	CPUByRusage bool    `json:"cpu_by_rusage"`
}

// cpuSide is one side of P7 being measured: op handles one payload, and
// settle (if set) waits until the work op left behind (the bridge's writer)
// is done, so that it is charged to this side.
type cpuSide struct {
	op     func() error
	settle func()

	n              int64
	cpu, wall      time.Duration
	mallocs, bytes uint64
}

// measureCPU measures the sides in alternating slices of about slice each,
// for about d per side after a short warm-up, and reports each one's
// process CPU time (user+system, getrusage: the bridge's writer goroutine
// and the GC included) and allocations per op. Alternating makes drift of
// the machine (neighbours on a shared host, clock changes) land on both
// sides alike, where one side after the other let it land on one (P7's
// baseline alone moved noticeably between two runs). Each slice starts after a
// full GC and ends once its side has settled, so neither side pays for
// the other's garbage or leftover work.
func measureCPU(d, slice time.Duration, sides ...*cpuSide) error {
	for _, s := range sides {
		for range 1000 {
			if err := s.op(); err != nil {
				return err
			}
		}
		if s.settle != nil {
			s.settle()
		}
	}
	var ms0, ms1 runtime.MemStats
	for spent := time.Duration(0); spent < d; spent += slice {
		for _, s := range sides {
			runtime.GC()
			// Refill, unmeasured, what the GCs since this side's last
			// slice emptied: the bridge's entry pool, a few thousand
			// entries deep while frames linger for a batch.
			for t0 := time.Now(); time.Since(t0) < slice/4; {
				for range 256 {
					if err := s.op(); err != nil {
						return err
					}
				}
			}
			if s.settle != nil {
				s.settle()
			}
			runtime.ReadMemStats(&ms0)
			cpu0, t0 := selfCPU(), time.Now()
			for time.Since(t0) < slice {
				for range 256 {
					if err := s.op(); err != nil {
						return err
					}
				}
				s.n += 256
			}
			if s.settle != nil {
				s.settle()
			}
			s.wall += time.Since(t0)
			s.cpu += selfCPU() - cpu0
			runtime.ReadMemStats(&ms1)
			s.mallocs += ms1.Mallocs - ms0.Mallocs
			s.bytes += ms1.TotalAlloc - ms0.TotalAlloc
		}
	}
	return nil
}

// cost reports what measureCPU measured for s.
func (s *cpuSide) cost() cpuCost {
	n := float64(s.n)
	c := cpuCost{
		Ops: s.n, WallNsPerOp: round2(float64(s.wall) / n), CPUNsPerOp: round2(float64(s.cpu) / n),
		AllocsPerOp: round2(float64(s.mallocs) / n), BytesPerOp: round2(float64(s.bytes) / n),
		GOMAXPROCS: runtime.GOMAXPROCS(0), CPUByRusage: s.cpu > 0,
	}
	if s.cpu <= 0 {
		c.CPUNsPerOp = c.WallNsPerOp
	}
	return c
}

// profileCPU writes a CPU profile of op run for about d (not measured).
func profileCPU(d time.Duration, path string, op func() error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return err
	}
	defer pprof.StopCPUProfile()
	for t0 := time.Now(); time.Since(t0) < d; {
		for range 256 {
			if err := op(); err != nil {
				return err
			}
		}
	}
	return nil
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
	defer svc.close()
	service := &cpuSide{op: func() error { return svc.op(data) }, settle: svc.settle}
	baseline := &cpuSide{op: func() error { _, err := p7Baseline(data); return err }}
	if err := measureCPU(d, d/30, service, baseline); err != nil {
		return fmt.Errorf("p7: %w", err)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if e.cfg.Profile {
		profile := filepath.Join(e.cfg.Out, "P7.cpu.pprof")
		if err := profileCPU(d/3, profile, service.op); err != nil {
			return fmt.Errorf("p7 profile: %w", err)
		}
		r.Profiles = append(r.Profiles, profile)
		r.Top = topOf(profile, 12)
	}
	sc, bc := service.cost(), baseline.cost()
	r.detail("service", sc)
	r.detail("baseline", bc)
	r.Service, r.Baseline = sc.CPUNsPerOp, bc.CPUNsPerOp
	e.p7CPU = sc.CPUNsPerOp
	r.ServiceText = fmt.Sprintf("%.0f ns, %.2g allocs", sc.CPUNsPerOp, sc.AllocsPerOp)
	r.BaselineText = fmt.Sprintf("%.0f ns, %.2g allocs", bc.CPUNsPerOp, bc.AllocsPerOp)
	r.judge(0.15, false)
	if e.cfg.Profile {
		r.note("the P7 profile is of this process (the service path in-process), not of telemetryd")
	}
	return nil
}
