package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

// rssBytes is a process's resident set (VmRSS in /proc/<pid>/status).
func rssBytes(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// cpuTime is a process's CPU time, all its threads (also those that have
// exited) together: its POSIX process CPU clock, which Linux lets any
// process read, to the nanosecond. /proc/<pid>/stat's utime+stime, the
// fallback, counts in 10 ms ticks: too coarse for CPU per message over a
// short phase.
func cpuTime(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	// clock_getcpuclockid(pid): MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED).
	clk := (^uintptr(pid))<<3 | 2
	var ts syscall.Timespec
	if _, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clk, uintptr(unsafe.Pointer(&ts)), 0); errno == 0 {
		return time.Duration(ts.Nano())
	}
	return statCPUTime(pid)
}

// statCPUTime is utime+stime from /proc/<pid>/stat.
func statCPUTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name may contain spaces: fields start after ") ".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64) // utime: field 14
	st, _ := strconv.ParseInt(f[12], 10, 64) // stime: field 15
	const ticksPerSecond = 100               // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / ticksPerSecond
}

// ioCalls is a process's read and write system calls so far: syscr and
// syscw of /proc/<pid>/io (read(2), write(2) and their vector forms, on
// sockets too; the epoll and futex calls are not in them). Zero where the
// kernel does not account them.
func ioCalls(pid int) ioCount {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return ioCount{}
	}
	var c ioCount
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch k {
		case "syscr":
			c.reads = n
		case "syscw":
			c.writes = n
		}
	}
	return c
}

// ioCount is a number of read and write system calls.
type ioCount struct{ reads, writes int64 }

func (c ioCount) sub(o ioCount) ioCount { return ioCount{c.reads - o.reads, c.writes - o.writes} }

// cpuMeter measures the cores (and the read and write calls) each
// process used over a phase.
type cpuMeter struct {
	names   []string
	pids    []int
	start   []time.Duration
	startIO []ioCount
	at      time.Time
}

func newCPUMeter(procs map[string]int) *cpuMeter {
	m := &cpuMeter{at: time.Now()}
	for _, name := range sortedKeys(procs) {
		m.names = append(m.names, name)
		m.pids = append(m.pids, procs[name])
		m.start = append(m.start, cpuTime(procs[name]))
		m.startIO = append(m.startIO, ioCalls(procs[name]))
	}
	return m
}

// cores returns name → average cores used since the meter started.
func (m *cpuMeter) cores() map[string]float64 { return m.snapshot().cores() }

// used returns the CPU time process name used since the meter started
// (0 for a process the meter does not know).
func (m *cpuMeter) used(name string) time.Duration {
	for i, n := range m.names {
		if n == name {
			return cpuTime(m.pids[i]) - m.start[i]
		}
	}
	return 0
}

// snapshot is what every process used since the meter started, now.
func (m *cpuMeter) snapshot() cpuUse {
	u := cpuUse{elapsed: time.Since(m.at), used: make(map[string]time.Duration, len(m.pids)), calls: make(map[string]ioCount, len(m.pids))}
	for i, pid := range m.pids {
		u.used[m.names[i]] = cpuTime(pid) - m.start[i]
		u.calls[m.names[i]] = ioCalls(pid).sub(m.startIO[i])
	}
	return u
}

// cpuUse is the CPU time and the read and write calls each process used
// over a window.
type cpuUse struct {
	elapsed time.Duration
	used    map[string]time.Duration
	calls   map[string]ioCount
}

// perUnit is what process name spent per unit of work over the window,
// n units: CPU in ns and read and write system calls.
func (u cpuUse) perUnit(name string, n float64) map[string]float64 {
	return costPerUnit(u.used[name], u.calls[name], n)
}

func costPerUnit(cpu time.Duration, calls ioCount, n float64) map[string]float64 {
	if n <= 0 {
		return nil
	}
	return map[string]float64{
		"cpu_ns": round2(perUnit(cpu, n)),
		"reads":  round3(float64(calls.reads) / n), "writes": round3(float64(calls.writes) / n),
	}
}

// cores returns name → average cores used over the window.
func (u cpuUse) cores() map[string]float64 {
	out := make(map[string]float64, len(u.used))
	for name, d := range u.used {
		if u.elapsed > 0 {
			out[name] = round2(d.Seconds() / u.elapsed.Seconds())
		}
	}
	return out
}

// perUnit is CPU per unit of work in ns: cpu spent on n units.
func perUnit(cpu time.Duration, n float64) float64 {
	if n <= 0 || cpu <= 0 {
		return 0
	}
	return float64(cpu.Nanoseconds()) / n
}

// machine describes where the numbers come from.
type machine struct {
	CPUs        int     `json:"cpus"`
	CPUModel    string  `json:"cpu_model"`
	MemGiB      float64 `json:"mem_gib"`
	Kernel      string  `json:"kernel"`
	GoVersion   string  `json:"go_version"`
	LoadStart   string  `json:"load_avg_start"`
	LoadEnd     string  `json:"load_avg_end,omitempty"`
	Date        string  `json:"date"`
	FileLimit   uint64  `json:"file_limit"`
	Description string  `json:"-"`
}

func describeMachine() machine {
	m := machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), Date: time.Now().UTC().Format(time.RFC3339)}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				m.CPUModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
				m.MemGiB = round2(kb / (1 << 20))
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.LoadStart = loadAvg()
	return m
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
