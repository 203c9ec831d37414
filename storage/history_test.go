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

func baseQuery() telemetry.HistoryQuery {
	return telemetry.HistoryQuery{Device: "dev-1", Measurement: "environment", Field: "temperature", Start: t0, Stop: t1}
}

func TestHistoryQueryValidation(t *testing.T) {
	tests := []struct {
		name string
		edit func(q *telemetry.HistoryQuery)
	}{
		{"no device", func(q *telemetry.HistoryQuery) { q.Device = "" }},
		{"quote in device", func(q *telemetry.HistoryQuery) { q.Device = `dev" or r._field != "x` }},
		{"flux pipe in device", func(q *telemetry.HistoryQuery) { q.Device = `d") |> drop(columns: ["x"]) //` }},
		{"interpolation in device", func(q *telemetry.HistoryQuery) { q.Device = "${secret}" }},
		{"space in device", func(q *telemetry.HistoryQuery) { q.Device = "dev 1" }},
		{"newline in device", func(q *telemetry.HistoryQuery) { q.Device = "dev\n1" }},
		{"backslash in device", func(q *telemetry.HistoryQuery) { q.Device = `dev\` }},
		{"unicode in device", func(q *telemetry.HistoryQuery) { q.Device = "dév" }},
		{"device too long", func(q *telemetry.HistoryQuery) { q.Device = strings.Repeat("d", 257) }},
		{"no field", func(q *telemetry.HistoryQuery) { q.Field = "" }},
		{"field _value", func(q *telemetry.HistoryQuery) { q.Field = "_value" }},
		{"field time", func(q *telemetry.HistoryQuery) { q.Field = "time" }},
		{"quote in field", func(q *telemetry.HistoryQuery) { q.Field = `t"` }},
		{"paren in measurement", func(q *telemetry.HistoryQuery) { q.Measurement = "m)" }},
		{"measurement _m", func(q *telemetry.HistoryQuery) { q.Measurement = "_m" }},
		{"no times", func(q *telemetry.HistoryQuery) { q.Start, q.Stop = time.Time{}, time.Time{} }},
		{"start after stop", func(q *telemetry.HistoryQuery) { q.Start, q.Stop = q.Stop, q.Start }},
		{"empty range", func(q *telemetry.HistoryQuery) { q.Stop = q.Start }},
		{"year 3000", func(q *telemetry.HistoryQuery) { q.Stop = time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC) }},
		{"negative every", func(q *telemetry.HistoryQuery) { q.Every = -time.Second }},
		{"tiny every", func(q *telemetry.HistoryQuery) { q.Every = time.Microsecond }},
		{"too many windows", func(q *telemetry.HistoryQuery) { q.Every = 10 * time.Millisecond }},
		{"bad tag key", func(q *telemetry.HistoryQuery) { q.Tags = map[string]string{`site"]`: "x"} }},
		{"tag key _measurement", func(q *telemetry.HistoryQuery) { q.Tags = map[string]string{"_measurement": "x"} }},
		{"control char in tag value", func(q *telemetry.HistoryQuery) { q.Tags = map[string]string{"site": "a\x00b"} }},
		{"empty tag value", func(q *telemetry.HistoryQuery) { q.Tags = map[string]string{"site": ""} }},
		{"invalid utf-8 tag value", func(q *telemetry.HistoryQuery) { q.Tags = map[string]string{"site": "\xff"} }},
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
		edit  func(q *telemetry.HistoryQuery)
		every time.Duration
	}{
		{"15 minutes is raw", func(q *telemetry.HistoryQuery) {}, 0},
		{"30 minutes is raw", func(q *telemetry.HistoryQuery) { q.Stop = q.Start.Add(30 * time.Minute) }, 0},
		{"1 hour: 3.6s rounds up to 5s", func(q *telemetry.HistoryQuery) { q.Stop = q.Start.Add(time.Hour) }, 5 * time.Second},
		{"1 day: 86.4s rounds up to 2m", func(q *telemetry.HistoryQuery) { q.Stop = q.Start.Add(24 * time.Hour) }, 2 * time.Minute},
		{"5 years: whole days", func(q *telemetry.HistoryQuery) { q.Stop = q.Start.Add(5 * 365 * 24 * time.Hour) }, 2 * 24 * time.Hour},
		{"max points 100", func(q *telemetry.HistoryQuery) { q.Stop = q.Start.Add(time.Hour); q.MaxPoints = 100 }, time.Minute},
		{"explicit every", func(q *telemetry.HistoryQuery) { q.Every = 7 * time.Second }, 7 * time.Second},
		{"explicit every on a short range", func(q *telemetry.HistoryQuery) { q.Every = time.Minute }, time.Minute},
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

func TestBuildHistoryQL(t *testing.T) {
	tests := []struct {
		name string
		rp   string
		edit func(q *telemetry.HistoryQuery)
		plan historyPlan
		want string
	}{
		{"raw", "autogen", func(*telemetry.HistoryQuery) {}, historyPlan{},
			`SELECT "temperature"::field FROM "autogen"."environment" WHERE "device_id"::tag = 'dev-1' AND time >= 1763805600000000000 AND time < 1763806500000000000 ORDER BY time DESC LIMIT 10000`},
		{"mean over every measurement", "", func(q *telemetry.HistoryQuery) { q.Measurement = "" }, historyPlan{every: 5 * time.Second, fn: historyMean},
			`SELECT mean("temperature"::field) FROM /.*/ WHERE "device_id"::tag = 'dev-1' AND time >= 1763805600000000000 AND time < 1763806500000000000 GROUP BY time(5000000000ns) fill(none)`},
		{"last", "", func(*telemetry.HistoryQuery) {}, historyPlan{every: time.Minute, fn: historyLast},
			`SELECT last("temperature"::field) FROM "environment" WHERE "device_id"::tag = 'dev-1' AND time >= 1763805600000000000 AND time < 1763806500000000000 GROUP BY time(60000000000ns) fill(none)`},
		{"sample", "", func(*telemetry.HistoryQuery) {}, historySample,
			`SELECT "temperature"::field FROM "environment" WHERE "device_id"::tag = 'dev-1' AND time >= 1763805600000000000 AND time < 1763806500000000000 LIMIT 1`},
		{"scope tags sorted and quoted", "", func(q *telemetry.HistoryQuery) {
			q.Tags = map[string]string{"site": `plant "3" $x \ ü`, "device_id": "dev-1", "zone": `a'b`}
		}, historySample,
			`SELECT "temperature"::field FROM "environment" WHERE "device_id"::tag = 'dev-1' AND "device_id"::tag = 'dev-1' AND "site"::tag = 'plant "3" $x \\ ü' AND "zone"::tag = 'a\'b' AND time >= 1763805600000000000 AND time < 1763806500000000000 LIMIT 1`},
		{"injection through a tag value stays a literal", "", func(q *telemetry.HistoryQuery) {
			q.Tags = map[string]string{"site": `x' OR '1'='1`}
		}, historySample,
			`SELECT "temperature"::field FROM "environment" WHERE "device_id"::tag = 'dev-1' AND "site"::tag = 'x\' OR \'1\'=\'1' AND time >= 1763805600000000000 AND time < 1763806500000000000 LIMIT 1`},
		{"backslash before a quote cannot end the literal", "", func(q *telemetry.HistoryQuery) {
			q.Tags = map[string]string{"site": `x\' ; DROP DATABASE "d" ; '`}
		}, historySample,
			`SELECT "temperature"::field FROM "environment" WHERE "device_id"::tag = 'dev-1' AND "site"::tag = 'x\\\' ; DROP DATABASE "d" ; \'' AND time >= 1763805600000000000 AND time < 1763806500000000000 LIMIT 1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := baseQuery()
			tt.edit(&q)
			if err := validateHistoryQuery(q); err != nil {
				t.Fatal(err)
			}
			if got := buildHistoryQL(tt.rp, q, tt.plan); got != tt.want {
				t.Fatalf("got:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func TestQuoteIdentAndString(t *testing.T) {
	idents := map[string]string{
		`plain`:          `"plain"`,
		`a"b`:            `"a\"b"`,
		`a\b`:            `"a\\b"`,
		`a\"b`:           `"a\\\"b"`,
		"l1\nl2":         `"l1\nl2"`,
		`" ; DROP "x`:    `"\" ; DROP \"x"`,
		`it's`:           `"it's"`,
		`ü`:              `"ü"`,
		`trailing\`:      `"trailing\\"`,
		`"::tag OR 1=1 `: `"\"::tag OR 1=1 "`,
	}
	for in, want := range idents {
		if got := quoteIdent(in); got != want {
			t.Errorf("quoteIdent(%q) = %s, want %s", in, got, want)
		}
	}
	strs := map[string]string{
		``:             `''`,
		`plain`:        `'plain'`,
		`a'b`:          `'a\'b'`,
		`a\b`:          `'a\\b'`,
		`a\'b`:         `'a\\\'b'`,
		`"`:            `'"'`,
		"l1\nl2":       `'l1\nl2'`,
		`' OR ''='`:    `'\' OR \'\'=\''`,
		`trailing\`:    `'trailing\\'`,
		`$x ${y} /re/`: `'$x ${y} /re/'`,
	}
	for in, want := range strs {
		if got := quoteString(in); got != want {
			t.Errorf("quoteString(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestBuildSeriesQL(t *testing.T) {
	q := telemetry.SeriesQuery{Device: "dev-1", Start: t0, Stop: t1, Tags: map[string]string{"site": `a'b`}}
	if got, want := buildMeasurementsQL(q), `SHOW MEASUREMENTS WHERE "device_id" = 'dev-1' AND "site" = 'a\'b'`; got != want {
		t.Errorf("measurements:\n%s\nwant:\n%s", got, want)
	}
	if got, want := buildFieldKeysQL("autogen", []string{"env", "power"}), `SHOW FIELD KEYS FROM "autogen"."env", "autogen"."power"`; got != want {
		t.Errorf("field keys:\n%s\nwant:\n%s", got, want)
	}
	got := buildLastQL("", q, [][2]string{{"env", "temp"}, {"power", "kwh"}})
	want := `SELECT last("temp"::field) FROM "env" WHERE "device_id"::tag = 'dev-1' AND "site"::tag = 'a\'b' AND time >= 1763805600000000000 AND time < 1763806500000000000; ` +
		`SELECT last("kwh"::field) FROM "power" WHERE "device_id"::tag = 'dev-1' AND "site"::tag = 'a\'b' AND time >= 1763805600000000000 AND time < 1763806500000000000`
	if got != want {
		t.Errorf("last:\n%s\nwant:\n%s", got, want)
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
