package storage_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/storage"
	"github.com/telemetryd/telemetryd/storage/influxtest"
	"github.com/telemetryd/telemetryd/telemetry"
)

// TestHistory reads back through InfluxQL from a real InfluxDB 1.8.
func TestHistory(t *testing.T) {
	srv := influxtest.Start(t)
	s := openInflux(t, srv.URL(), "hist/autogen", 10*time.Second)

	base := time.Now().Add(-2 * time.Hour).Truncate(time.Hour)
	var lines strings.Builder
	for i := range 120 { // one reading a minute for two hours
		ts := base.Add(time.Duration(i) * time.Minute).UnixNano()
		fmt.Fprintf(&lines, "env,device_id=dev-1,site=plant-3 temp=%d,on=%t,state=\"s%d\",count=%di %d\n", i, i%2 == 0, i%3, i, ts)
		fmt.Fprintf(&lines, "env,device_id=dev-2,site=plant-4 temp=%d %d\n", 1000+i, ts)
		fmt.Fprintf(&lines, "env,device_id=dev-3,site=plant\\ \"q\"\\ $x temp=%d %d\n", 2000+i, ts)
		fmt.Fprintf(&lines, "power,device_id=dev-1,site=plant-3,phase=%d kwh=%d %d\n", i%2, i, ts)
		// A tag and a field named alike (1.8 allows it): the field is read.
		fmt.Fprintf(&lines, "env,device_id=dev-4,level=tag-value level=%d %d\n", i, ts)
	}
	mustWrite(t, s, lines.String())

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q := func(edit func(q *telemetry.HistoryQuery)) telemetry.HistoryQuery {
		hq := telemetry.HistoryQuery{Device: "dev-1", Measurement: "env", Field: "temp", Start: base, Stop: base.Add(15 * time.Minute)}
		edit(&hq)
		return hq
	}

	t.Run("raw", func(t *testing.T) {
		h, err := s.History(ctx, q(func(*telemetry.HistoryQuery) {}))
		if err != nil {
			t.Fatal(err)
		}
		if h.Every != 0 || len(h.Points) != 15 || h.Truncated {
			t.Fatalf("every %s, %d points, truncated %v", h.Every, len(h.Points), h.Truncated)
		}
		for i, p := range h.Points {
			if p.Time != base.Add(time.Duration(i)*time.Minute).UnixNano() || p.Value.Kind() != telemetry.KindFloat || p.Value.AsFloat() != float64(i) {
				t.Fatalf("point %d = %d %v", i, p.Time, p.Value)
			}
		}
	})
	t.Run("aggregated mean", func(t *testing.T) {
		h, err := s.History(ctx, q(func(q *telemetry.HistoryQuery) { q.Stop = base.Add(2 * time.Hour); q.Every = 10 * time.Minute }))
		if err != nil {
			t.Fatal(err)
		}
		if h.Every != 10*time.Minute || h.Aggregate != "mean" || len(h.Points) != 12 {
			t.Fatalf("every %s %s, %d points: %v", h.Every, h.Aggregate, len(h.Points), h.Points)
		}
		// Window [0,10m) holds 0..9: mean 4.5, stamped with the window's end.
		if p := h.Points[0]; p.Time != base.Add(10*time.Minute).UnixNano() || p.Value.AsFloat() != 4.5 {
			t.Fatalf("first window = %d %v", p.Time, p.Value)
		}
	})
	t.Run("automatic window", func(t *testing.T) {
		h, err := s.History(ctx, q(func(q *telemetry.HistoryQuery) { q.Stop = base.Add(2 * time.Hour); q.MaxPoints = 10 }))
		if err != nil {
			t.Fatal(err)
		}
		if h.Every != 15*time.Minute || len(h.Points) != 8 {
			t.Fatalf("every %s, %d points", h.Every, len(h.Points))
		}
	})
	t.Run("integer mean", func(t *testing.T) {
		h, err := s.History(ctx, q(func(q *telemetry.HistoryQuery) { q.Field = "count"; q.Every = 10 * time.Minute }))
		if err != nil {
			t.Fatal(err)
		}
		if h.Aggregate != "mean" || len(h.Points) != 2 || h.Points[0].Value.AsFloat() != 4.5 {
			t.Fatalf("%s: %v", h.Aggregate, h.Points)
		}
	})
	t.Run("boolean last", func(t *testing.T) {
		h, err := s.History(ctx, q(func(q *telemetry.HistoryQuery) { q.Field = "on"; q.Every = 5 * time.Minute }))
		if err != nil {
			t.Fatal(err)
		}
		// Window [0,5m) holds 0..4: the last is 4, even, so true.
		if h.Aggregate != "last" || len(h.Points) != 3 || h.Points[0].Value.Kind() != telemetry.KindBool || !h.Points[0].Value.AsBool() {
			t.Fatalf("%s: %v", h.Aggregate, h.Points)
		}
	})
	t.Run("string raw", func(t *testing.T) {
		h, err := s.History(ctx, q(func(q *telemetry.HistoryQuery) { q.Field = "state" }))
		if err != nil {
			t.Fatal(err)
		}
		if len(h.Points) != 15 || h.Points[4].Value.AsString() != "s1" {
			t.Fatalf("%v", h.Points)
		}
	})
	t.Run("scope tags filter", func(t *testing.T) {
		h, err := s.History(ctx, q(func(q *telemetry.HistoryQuery) { q.Tags = map[string]string{"site": "plant-4"} }))
		if err != nil {
			t.Fatal(err)
		}
		if len(h.Points) != 0 {
			t.Fatalf("dev-1 is not at plant-4 but got %d points", len(h.Points))
		}
		h, err = s.History(ctx, q(func(q *telemetry.HistoryQuery) { q.Device = "dev-2"; q.Tags = map[string]string{"site": "plant-4"} }))
		if err != nil || len(h.Points) != 15 || h.Points[0].Value.AsFloat() != 1000 {
			t.Fatalf("dev-2 at plant-4: %v %v", err, h.Points)
		}
	})
	t.Run("quotes and dollars in a tag value are literal", func(t *testing.T) {
		h, err := s.History(ctx, q(func(q *telemetry.HistoryQuery) {
			q.Device = "dev-3"
			q.Tags = map[string]string{"site": `plant "q" $x`}
		}))
		if err != nil || len(h.Points) != 15 || h.Points[0].Value.AsFloat() != 2000 {
			t.Fatalf("dev-3: %v %v", err, h.Points)
		}
		h, err = s.History(ctx, q(func(q *telemetry.HistoryQuery) {
			q.Device = "dev-3"
			q.Tags = map[string]string{"site": `x" or r.site != "`}
		}))
		if err != nil || len(h.Points) != 0 {
			t.Fatalf("injection through a tag value: %v, %d points", err, len(h.Points))
		}
	})
	t.Run("no data", func(t *testing.T) {
		h, err := s.History(ctx, q(func(q *telemetry.HistoryQuery) { q.Device = "nobody"; q.Every = time.Minute }))
		if err != nil || len(h.Points) != 0 {
			t.Fatalf("%v %v", err, h.Points)
		}
	})
	t.Run("series", func(t *testing.T) {
		got, err := s.Series(ctx, telemetry.SeriesQuery{Device: "dev-1", Start: base, Stop: base.Add(15 * time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, si := range got {
			names = append(names, fmt.Sprintf("%s.%s=%v@%d", si.Measurement, si.Field, si.Last.Value, (si.Last.Time-base.UnixNano())/int64(time.Minute)))
			// Stored integers stay integers (SHOW FIELD KEYS says so).
			if si.Field == "count" && si.Last.Value.Kind() != telemetry.KindInt {
				t.Errorf("env.count is %v, want an integer", si.Last.Value.Kind())
			}
		}
		// power.kwh has two series (phase 0 and 1): merged, the latest wins.
		want := `[env.count=14@14 env.on=true@14 env.state="s2"@14 env.temp=14@14 power.kwh=14@14]`
		if fmt.Sprint(names) != want {
			t.Fatalf("series = %v\nwant %s", names, want)
		}
		got, err = s.Series(ctx, telemetry.SeriesQuery{Device: "dev-1", Start: base, Stop: base.Add(time.Hour), Tags: map[string]string{"site": "plant-4"}})
		if err != nil || len(got) != 0 {
			t.Fatalf("out of scope: %v %v", err, got)
		}
		if _, err := s.Series(ctx, telemetry.SeriesQuery{Device: "dev 1", Start: base, Stop: base.Add(time.Hour)}); !errors.Is(err, storage.ErrInvalidHistoryQuery) {
			t.Fatalf("invalid device: %v", err)
		}
	})
	t.Run("a tag named like the field is not read", func(t *testing.T) {
		h, err := s.History(ctx, q(func(q *telemetry.HistoryQuery) { q.Device = "dev-4"; q.Field = "level" }))
		if err != nil || len(h.Points) != 15 || h.Points[3].Value.AsFloat() != 3 {
			t.Fatalf("%v %v", err, h.Points)
		}
	})
	t.Run("injection attempts never reach the server", func(t *testing.T) {
		attempts := []func(q *telemetry.HistoryQuery){
			func(q *telemetry.HistoryQuery) { q.Device = `dev-1' OR '1'='1` },
			func(q *telemetry.HistoryQuery) { q.Device = `dev-1'; DROP DATABASE "hist"; '` },
			func(q *telemetry.HistoryQuery) { q.Measurement = `env"; DROP MEASUREMENT "env` },
			func(q *telemetry.HistoryQuery) { q.Measurement = `/.*/` },
			func(q *telemetry.HistoryQuery) { q.Field = `temp"::field FROM /.*/ --` },
			func(q *telemetry.HistoryQuery) { q.Field = `*` },
			func(q *telemetry.HistoryQuery) { q.Tags = map[string]string{`site" = 'x' OR "a`: "b"} },
		}
		for i, edit := range attempts {
			if _, err := s.History(ctx, q(edit)); !errors.Is(err, storage.ErrInvalidHistoryQuery) {
				t.Fatalf("attempt %d: err = %v", i, err)
			}
		}
		for _, dev := range []string{`dev-1' OR '1'='1`, `x"; DROP DATABASE "hist`} {
			if _, err := s.Series(ctx, telemetry.SeriesQuery{Device: dev, Start: base, Stop: base.Add(time.Hour)}); !errors.Is(err, storage.ErrInvalidHistoryQuery) {
				t.Fatalf("series %q: err = %v", dev, err)
			}
		}
		// A hostile tag value is valid, and stays a literal.
		h, err := s.History(ctx, q(func(q *telemetry.HistoryQuery) {
			q.Tags = map[string]string{"site": `x' OR "device_id"::tag != '`}
		}))
		if err != nil || len(h.Points) != 0 {
			t.Fatalf("injection through a tag value: %v, %d points", err, len(h.Points))
		}
		h, err = s.History(ctx, q(func(q *telemetry.HistoryQuery) {
			q.Tags = map[string]string{"site": `x\' OR '1'='1`}
		}))
		if err != nil || len(h.Points) != 0 {
			t.Fatalf("injection through a tag value with a backslash: %v, %d points", err, len(h.Points))
		}
		// Nothing was touched: every point is still there.
		got := srv.Query(t, "hist", `SELECT count("temp") FROM "env"`)
		if len(got) != 1 || fmt.Sprint(got[0].Values[0][1]) != "360" {
			t.Fatalf("count after the attempts: %v", got)
		}
	})
}
