package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
)

// result is one scenario's row plus its details.
type result struct {
	ID   string `json:"id"`
	What string `json:"what"`
	Unit string `json:"unit"`
	// Service and Baseline are the compared figures (same unit); Ratio is
	// Service/Baseline. For P8 there is no baseline.
	Service  float64 `json:"service"`
	Baseline float64 `json:"baseline"`
	Ratio    float64 `json:"ratio"`
	// ServiceCPU and BaselineCPU (P2, P2d, P3) are CPU per message or
	// frame in ns of the process that does the work, each measured on its
	// own in the same run: telemetryd's, and the raw baseline's (the bare
	// paho subscriber's, the raw gws server's). CPURatio is
	// ServiceCPU/BaselineCPU; where it is set, Goal judges it and Ratio,
	// the rate ratio, is information.
	ServiceCPU  float64 `json:"service_cpu_ns,omitempty"`
	BaselineCPU float64 `json:"baseline_cpu_ns,omitempty"`
	CPURatio    float64 `json:"cpu_ratio,omitempty"`
	// Goal is the target, e.g. "≥ 0.7"; Pass is nil when not judged.
	Goal string `json:"goal"`
	Pass *bool  `json:"pass"`
	// ServiceText and BaselineText are the table's cells.
	ServiceText  string `json:"service_text"`
	BaselineText string `json:"baseline_text"`
	// Details: sizes, per-process CPU, latencies, counters.
	Details  map[string]any `json:"details,omitempty"`
	Notes    []string       `json:"notes,omitempty"`
	Profiles []string       `json:"profiles,omitempty"`
	// Top is the head of `go tool pprof -top` of the service's CPU profile.
	Top     []string `json:"cpu_top,omitempty"`
	Error   string   `json:"error,omitempty"`
	Seconds float64  `json:"seconds"`
}

func (r *result) detail(k string, v any) {
	if r.Details == nil {
		r.Details = map[string]any{}
	}
	r.Details[k] = v
}

func (r *result) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// judge sets Ratio and Pass: higher is better when atLeast, else lower.
func (r *result) judge(limit float64, atLeast bool) {
	if r.Baseline > 0 {
		r.Ratio = round3(r.Service / r.Baseline)
	}
	if r.Ratio == 0 || math.IsNaN(r.Ratio) {
		return
	}
	p := r.Ratio >= limit
	if !atLeast {
		p = r.Ratio <= limit
	}
	r.Pass = &p
}

// cpuGoal is the target for CPU per message or frame against the raw
// baseline (issue 21): P2, P2d and P3 are judged by it.
const (
	cpuGoal  = "CPU ≤ 1.25×"
	cpuLimit = 1.25
)

// judgeCPU sets Ratio (the rate ratio, for information), CPURatio from
// ServiceCPU and BaselineCPU, and Pass from CPURatio ≤ limit.
func (r *result) judgeCPU(limit float64) {
	if r.Baseline > 0 {
		r.Ratio = round3(r.Service / r.Baseline)
	}
	if r.ServiceCPU <= 0 || r.BaselineCPU <= 0 {
		return
	}
	r.ServiceCPU, r.BaselineCPU = round2(r.ServiceCPU), round2(r.BaselineCPU)
	r.CPURatio = round3(r.ServiceCPU / r.BaselineCPU)
	p := r.CPURatio <= limit
	r.Pass = &p
}

// judged is the figure Pass is about: the CPU ratio where there is one.
func (r *result) judged() float64 {
	if r.CPURatio > 0 {
		return r.CPURatio
	}
	return r.Ratio
}

type report struct {
	Command string    `json:"command"`
	Machine machine   `json:"machine"`
	Config  any       `json:"config"`
	Results []*result `json:"results"`
	Seconds float64   `json:"seconds"`
}

// failedToRun: a scenario errored or produced no numbers.
func (r *report) failedToRun() bool {
	for _, x := range r.Results {
		if x.Error != "" || !x.hasNumbers() {
			return true
		}
	}
	return false
}

func (x *result) hasNumbers() bool {
	switch x.ID {
	case "P6": // an RSS delta may be ≤ 0 with few sockets (smoke)
		return x.Details["service_rss_mib"] != nil && x.Details["baseline_rss_mib"] != nil
	case "P8":
		return x.Details["rss_samples"] != nil
	case "P2", "P2d", "P3":
		return x.Service > 0 && x.Baseline > 0 && x.CPURatio > 0
	}
	return x.Service > 0 && x.Baseline > 0
}

func (r *report) printTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "id\twhat\tservice\tbaseline\tratio\tCPU per unit (service / baseline)\tCPU ratio\tgoal\tpass")
	for _, x := range r.Results {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", x.ID, x.What, x.ServiceText, x.BaselineText, ratioText(x), cpuText(x), cpuRatioText(x), x.Goal, passText(x))
	}
	_ = tw.Flush()
}

func ratioText(x *result) string {
	if x.Ratio == 0 {
		return "—"
	}
	return fmt.Sprintf("%.3g", x.Ratio)
}

// cpuText is "11.1 µs / 6.70 µs" (per message or frame), or "—".
func cpuText(x *result) string {
	if x.ServiceCPU <= 0 && x.BaselineCPU <= 0 {
		return "—"
	}
	return fmtNs(x.ServiceCPU) + " / " + fmtNs(x.BaselineCPU)
}

func cpuRatioText(x *result) string {
	if x.CPURatio == 0 {
		return "—"
	}
	return fmt.Sprintf("%.3g", x.CPURatio)
}

// fmtNs renders a CPU time per unit given in ns.
func fmtNs(ns float64) string {
	switch {
	case ns <= 0:
		return "—"
	case ns >= 1e3:
		return fmt.Sprintf("%.3g µs", ns/1e3)
	}
	return fmt.Sprintf("%.0f ns", ns)
}

func passText(x *result) string {
	switch {
	case x.Error != "":
		return "ERROR"
	case x.Pass == nil:
		return "—"
	case *x.Pass:
		return "pass"
	}
	return "FAIL"
}

func (r *report) writeFiles(dir string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "results.md"), []byte(r.markdown()), 0o644)
}

// markdown renders the table and the machine for bench/RESULTS.md.
func (r *report) markdown() string {
	var b strings.Builder
	m := r.Machine
	fmt.Fprintf(&b, "Command: `%s`  \n", r.Command)
	fmt.Fprintf(&b, "Machine: %d CPUs, %s, %.1f GiB RAM, Linux %s, %s  \n", m.CPUs, m.CPUModel, m.MemGiB, m.Kernel, m.GoVersion)
	fmt.Fprintf(&b, "Date: %s; load average at start %s, at end %s; run took %.0f s\n\n", m.Date, m.LoadStart, m.LoadEnd, r.Seconds)
	b.WriteString("| id | what | service | baseline | ratio | CPU per unit (service / baseline) | CPU ratio | goal | pass |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, x := range r.Results {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", x.ID, x.What, x.ServiceText, x.BaselineText, ratioText(x), cpuText(x), cpuRatioText(x), x.Goal, passText(x))
	}
	b.WriteString("\n")
	for _, x := range r.Results {
		if x.Error != "" {
			fmt.Fprintf(&b, "- %s error: %s\n", x.ID, x.Error)
		}
		for _, n := range x.Notes {
			fmt.Fprintf(&b, "- %s: %s\n", x.ID, n)
		}
	}
	return b.String()
}

// printDetails writes the notes, CPU use and profile heads per scenario.
func (r *report) printDetails(w io.Writer) {
	for _, x := range r.Results {
		fmt.Fprintf(w, "\n%s %s (%.0f s)\n", x.ID, x.What, x.Seconds)
		if x.Error != "" {
			fmt.Fprintf(w, "  error: %s\n", x.Error)
		}
		for _, n := range x.Notes {
			fmt.Fprintf(w, "  note: %s\n", n)
		}
		for _, k := range sortedKeys(x.Details) {
			b, _ := json.Marshal(x.Details[k])
			fmt.Fprintf(w, "  %s: %s\n", k, b)
		}
		if len(x.Top) > 0 {
			fmt.Fprintf(w, "  telemetryd CPU profile (flat, top %d):\n", len(x.Top))
			for _, l := range x.Top {
				fmt.Fprintf(w, "    %s\n", l)
			}
		}
	}
}

func fmtRate(v float64, unit string) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2f M %s", v/1e6, unit)
	case v >= 1e4:
		return fmt.Sprintf("%.1f k %s", v/1e3, unit)
	case v >= 1e3:
		return fmt.Sprintf("%.2f k %s", v/1e3, unit)
	}
	return fmt.Sprintf("%.0f %s", v, unit)
}
