package main

import (
	"io"
	"log/slog"
	"runtime/debug"
	"strings"
	"testing"
)

func TestGzipWrites(t *testing.T) {
	tests := []struct {
		mode, url string
		want      bool
		err       bool
	}{
		{"auto", "http://127.0.0.1:8086", false, false},
		{"auto", "http://localhost:8086", false, false},
		{"auto", "http://[::1]:8086", false, false},
		{"", "http://127.0.0.2:8086", false, false},
		{"auto", "https://influx.example.com", true, false},
		{"auto", "http://10.0.0.5:8086", true, false},
		{"true", "http://127.0.0.1:8086", true, false},
		{"ON", "http://127.0.0.1:8086", true, false},
		{"false", "https://influx.example.com", false, false},
		{"0", "https://influx.example.com", false, false},
		{"sometimes", "http://127.0.0.1:8086", false, true},
	}
	for _, tt := range tests {
		got, err := gzipWrites(tt.mode, tt.url)
		if got != tt.want || (err != nil) != tt.err {
			t.Errorf("gzipWrites(%q, %q) = %v, %v; want %v, error %v", tt.mode, tt.url, got, err, tt.want, tt.err)
		}
	}
	// The variable is checked at start, with a clear error.
	env := func(k string) (string, bool) {
		if k == "TELEMETRY_INFLUX_GZIP" {
			return "maybe", true
		}
		return "", false
	}
	if _, err := parseConfig(nil, env, io.Discard); err == nil {
		t.Error("TELEMETRY_INFLUX_GZIP=maybe accepted")
	}
}

func TestParsePrefixes(t *testing.T) {
	tests := []struct {
		in   string
		want []string
		bad  bool
	}{
		{"", nil, false},
		{"127.0.0.1", []string{"127.0.0.1/32"}, false},
		{"10.1.2.3/8, ::1", []string{"10.0.0.0/8", "::1/128"}, false},
		{"::ffff:127.0.0.1", []string{"127.0.0.1/32"}, false},
		{"balancer.local", nil, true},
	}
	for _, tt := range tests {
		got, err := parsePrefixes(tt.in)
		if (err != nil) != tt.bad {
			t.Errorf("parsePrefixes(%q) error = %v, want bad=%v", tt.in, err, tt.bad)
			continue
		}
		var s []string
		for _, p := range got {
			s = append(s, p.String())
		}
		if strings.Join(s, ",") != strings.Join(tt.want, ",") {
			t.Errorf("parsePrefixes(%q) = %v, want %v", tt.in, s, tt.want)
		}
	}
}

// TestTuneGC: -gc-percent is applied and restored; GOGC, when set, wins;
// a value that would switch the collector off is refused at start.
func TestTuneGC(t *testing.T) {
	noEnv := func(string) (string, bool) { return "", false }
	before := debug.SetGCPercent(100)
	defer debug.SetGCPercent(before)
	restore := tuneGC(250, noEnv, slog.New(slog.DiscardHandler))
	if got := debug.SetGCPercent(250); got != 250 {
		t.Fatalf("GC percent %d, want 250", got)
	}
	restore()
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("GC percent %d after restore, want 100", got)
	}
	gogc := func(k string) (string, bool) {
		if k == "GOGC" {
			return "50", true
		}
		return "", false
	}
	tuneGC(250, gogc, slog.New(slog.DiscardHandler))()
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("GC percent %d with GOGC set, want it untouched (100)", got)
	}
	for _, v := range []string{"0", "-1", "5"} {
		if _, err := parseConfig([]string{"-gc-percent", v}, noEnv, io.Discard); err == nil {
			t.Errorf("-gc-percent %s accepted", v)
		}
	}
	if cfg, err := parseConfig(nil, noEnv, io.Discard); err != nil || cfg.GCPercent != defaultGCPercent {
		t.Fatalf("default -gc-percent %d, %v; want %d", cfg.GCPercent, err, defaultGCPercent)
	}
}
