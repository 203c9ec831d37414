package storage

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/telemetry"
)

var (
	t0 = time.Date(2025, 11, 22, 10, 0, 0, 0, time.UTC)
	t1 = t0.Add(15 * time.Minute)
)

func baseQuery() HistoryQuery {
	return HistoryQuery{Device: "dev-1", Measurement: "environment", Field: "temperature", Start: t0, Stop: t1}
}

func TestHistoryQueryValidation(t *testing.T) {
	tests := []struct {
		name string
		edit func(q *HistoryQuery)
	}{
		{"no device", func(q *HistoryQuery) { q.Device = "" }},
		{"quote in device", func(q *HistoryQuery) { q.Device = `dev" or r._field != "x` }},
		{"flux pipe in device", func(q *HistoryQuery) { q.Device = `d") |> drop(columns: ["x"]) //` }},
		{"interpolation in device", func(q *HistoryQuery) { q.Device = "${secret}" }},
		{"space in device", func(q *HistoryQuery) { q.Device = "dev 1" }},
		{"newline in device", func(q *HistoryQuery) { q.Device = "dev\n1" }},
		{"backslash in device", func(q *HistoryQuery) { q.Device = `dev\` }},
		{"unicode in device", func(q *HistoryQuery) { q.Device = "dév" }},
		{"device too long", func(q *HistoryQuery) { q.Device = strings.Repeat("d", 257) }},
		{"no field", func(q *HistoryQuery) { q.Field = "" }},
		{"field _value", func(q *HistoryQuery) { q.Field = "_value" }},
		{"field time", func(q *HistoryQuery) { q.Field = "time" }},
		{"quote in field", func(q *HistoryQuery) { q.Field = `t"` }},
		{"paren in measurement", func(q *HistoryQuery) { q.Measurement = "m)" }},
		{"measurement _m", func(q *HistoryQuery) { q.Measurement = "_m" }},
		{"no times", func(q *HistoryQuery) { q.Start, q.Stop = time.Time{}, time.Time{} }},
		{"start after stop", func(q *HistoryQuery) { q.Start, q.Stop = q.Stop, q.Start }},
		{"empty range", func(q *HistoryQuery) { q.Stop = q.Start }},
		{"year 3000", func(q *HistoryQuery) { q.Stop = time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC) }},
		{"negative every", func(q *HistoryQuery) { q.Every = -time.Second }},
		{"tiny every", func(q *HistoryQuery) { q.Every = time.Microsecond }},
		{"too many windows", func(q *HistoryQuery) { q.Every = 10 * time.Millisecond }},
		{"bad tag key", func(q *HistoryQuery) { q.Tags = map[string]string{`site"]`: "x"} }},
		{"tag key _measurement", func(q *HistoryQuery) { q.Tags = map[string]string{"_measurement": "x"} }},
		{"control char in tag value", func(q *HistoryQuery) { q.Tags = map[string]string{"site": "a\x00b"} }},
		{"empty tag value", func(q *HistoryQuery) { q.Tags = map[string]string{"site": ""} }},
		{"invalid utf-8 tag value", func(q *HistoryQuery) { q.Tags = map[string]string{"site": "\xff"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := baseQuery()
			tt.edit(&q)
			_, err := planHistory(q)
			if err == nil {
				t.Fatalf("query %+v accepted", q)
			}
			if !errors.Is(err, ErrInvalidHistoryQuery) || !errors.Is(err, telemetry.ErrPermanent) {
				t.Fatalf("error %v does not match ErrInvalidHistoryQuery and ErrPermanent", err)
			}
		})
	}
}

func TestHistoryPlan(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(q *HistoryQuery)
		every time.Duration
	}{
		{"15 minutes is raw", func(q *HistoryQuery) {}, 0},
		{"30 minutes is raw", func(q *HistoryQuery) { q.Stop = q.Start.Add(30 * time.Minute) }, 0},
		{"1 hour: 3.6s rounds up to 5s", func(q *HistoryQuery) { q.Stop = q.Start.Add(time.Hour) }, 5 * time.Second},
		{"1 day: 86.4s rounds up to 2m", func(q *HistoryQuery) { q.Stop = q.Start.Add(24 * time.Hour) }, 2 * time.Minute},
		{"5 years: whole days", func(q *HistoryQuery) { q.Stop = q.Start.Add(5 * 365 * 24 * time.Hour) }, 2 * 24 * time.Hour},
		{"max points 100", func(q *HistoryQuery) { q.Stop = q.Start.Add(time.Hour); q.MaxPoints = 100 }, time.Minute},
		{"explicit every", func(q *HistoryQuery) { q.Every = 7 * time.Second }, 7 * time.Second},
		{"explicit every on a short range", func(q *HistoryQuery) { q.Every = time.Minute }, time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := baseQuery()
			tt.edit(&q)
			p, err := planHistory(q)
			if err != nil {
				t.Fatal(err)
			}
			if p.every != tt.every {
				t.Fatalf("every = %s, want %s", p.every, tt.every)
			}
		})
	}
}

func TestBuildHistoryFlux(t *testing.T) {
	q := baseQuery()
	q.Tags = map[string]string{"site": `plant "3" $x \ ü`, "device_id": "dev-1"}
	got := buildHistoryFlux("telemetry/autogen", q, historyPlan{every: 5 * time.Second, fn: historyMean})
	want := `from(bucket: "telemetry/autogen")
  |> range(start: 2025-11-22T10:00:00Z, stop: 2025-11-22T10:14:59.999999999Z)
  |> filter(fn: (r) => r._field == "temperature" and r._measurement == "environment" and r.device_id == "dev-1" and r["device_id"] == "dev-1" and r["site"] == "plant \"3\" \x24x \\ ü")
  |> group()
  |> aggregateWindow(every: 5000000000ns, fn: mean, createEmpty: false)
  |> sort(columns: ["_time"])
  |> keep(columns: ["_time", "_value"])`
	if got != want {
		t.Fatalf("flux:\n%s\nwant:\n%s", got, want)
	}
	raw := buildHistoryFlux("db", baseQuery(), historyPlan{})
	if !strings.Contains(raw, "|> tail(n: 10000)") || strings.Contains(raw, "aggregateWindow") {
		t.Fatalf("raw flux:\n%s", raw)
	}
}

func TestFluxString(t *testing.T) {
	tests := map[string]string{
		``:                 `""`,
		`plain`:            `"plain"`,
		`a"b`:              `"a\"b"`,
		`a\b`:              `"a\\b"`,
		`${x}`:             `"\x24{x}"`,
		"l1\nl2\r\t":       `"l1\nl2\r\t"`,
		"nul\x00":          `"nul\x00"`,
		"del\x7f":          `"del\x7f"`,
		"ü€":               `"ü€"`,
		"bad\xff":          "\"bad\uFFFD\"",
		`") |> yield() //`: `"\") |> yield() //"`,
		`$"`:               `"\x24\""`,
		`$\`:               `"\x24\\"`,
	}
	for in, want := range tests {
		if got := fluxString(in); got != want {
			t.Errorf("fluxString(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestRoundStep(t *testing.T) {
	for in, want := range map[time.Duration]time.Duration{
		time.Nanosecond:         time.Second,
		time.Second:             time.Second,
		1001 * time.Millisecond: 2 * time.Second,
		40 * time.Second:        time.Minute,
		25 * time.Hour:          48 * time.Hour,
	} {
		if got := roundStep(in); got != want {
			t.Errorf("roundStep(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestBuildSeriesFlux(t *testing.T) {
	got := buildSeriesFlux("telemetry/autogen", SeriesQuery{Device: "dev-1", Start: t0, Stop: t1, Tags: map[string]string{"site": `a"b`}})
	want := `from(bucket: "telemetry/autogen")
  |> range(start: 2025-11-22T10:00:00Z, stop: 2025-11-22T10:14:59.999999999Z)
  |> filter(fn: (r) => r.device_id == "dev-1" and r["site"] == "a\"b")
  |> last()
  |> keep(columns: ["_time", "_value", "_measurement", "_field"])`
	if got != want {
		t.Fatalf("flux:\n%s\nwant:\n%s", got, want)
	}
}
