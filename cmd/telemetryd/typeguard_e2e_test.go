package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/storage"
	"github.com/telemetryd/telemetryd/storage/influxtest"
)

// TestTypeConflictRejectedAloneEndToEnd: InfluxDB already holds tank.level
// as an integer. One frame carries readings that agree, that can be
// coerced, and that conflict, including a field that is new and changes
// type within the frame (which InfluxDB would answer by refusing the whole
// batch). The conflicting readings are rejected alone with type_conflict;
// everything else of the batch is stored, coerced to the stored type.
func TestTypeConflictRejectedAloneEndToEnd(t *testing.T) {
	influx := influxtest.Start(t)
	influx.CreateDB(t, testDB)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	seed, err := storage.Open(ctx, storage.Config{URL: influx.URL(), Bucket: testDB + "/autogen"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := seed.Write(ctx, []byte("tank,device_id=old level=5i 1000000000\n")); err != nil {
		t.Fatal(err)
	}
	seed.Close()

	svc := startService(t, influx, nil, tokensFile(t, "tank-1", "tok-tank"))
	waitReady(t, svc)
	if !strings.Contains(svc.stderr.String(), "field types loaded from storage") {
		t.Fatalf("the type guard was not seeded from InfluxDB:\n%s", tail(svc.stderr.String(), 4000))
	}
	dev := mustDialWS(t, svc.ws("/v1/ingest"), bearer("tok-tank"))
	const ts int64 = 1763820000000 // ms; one timestamp per reading below
	dev.send(t, fmt.Sprintf(`{"seq":5,"readings":[
		{"ts":%d,"measurement":"tank","metrics":{"level":7}},
		{"ts":%d,"measurement":"tank","metrics":{"level":7.5}},
		{"ts":%d,"measurement":"tank","metrics":{"level":"full"}},
		{"ts":%d,"measurement":"tank","metrics":{"mode":"auto"}},
		{"ts":%d,"measurement":"tank","metrics":{"mode":3}},
		{"ts":%d,"measurement":"tank","metrics":{"level":{"value":8,"type":"int"},"mode":"manual"}}
	]}`, ts, ts+1, ts+2, ts+3, ts+4, ts+5))
	var rej, ack ackOrError
	dev.nextJSON(t, &rej)
	dev.nextJSON(t, &ack)
	if rej.Error == nil || len(rej.Error.Rejected) != 3 {
		t.Fatalf("rejections %s", mustJSON(rej))
	}
	for i, want := range []int{1, 2, 4} {
		if r := rej.Error.Rejected[i]; r.Index != want || r.Code != "type_conflict" {
			t.Fatalf("rejection %d = %+v, want index %d type_conflict (%s)", i, r, want, mustJSON(rej))
		}
	}
	if ack.Ack == nil || *ack.Ack != 5 {
		t.Fatalf("want ack 5, got %s", mustJSON(ack))
	}

	// Acked means stored: the three good readings, level as an integer.
	rows := influx.Query(t, testDB, `SELECT "level","mode" FROM "tank" WHERE "device_id"='tank-1'`)
	if len(rows) != 1 || fmt.Sprint(rows[0].Values) != fmt.Sprintf("[[%d 7 <nil>] [%d <nil> auto] [%d 8 manual]]", ts*1_000_000, (ts+3)*1_000_000, (ts+5)*1_000_000) {
		t.Fatalf("stored %+v", rows)
	}
	types := map[string]string{}
	for _, s := range influx.Query(t, testDB, `SHOW FIELD KEYS FROM "tank"`) {
		for _, v := range s.Values {
			types[fmt.Sprint(v[0])] = fmt.Sprint(v[1])
		}
	}
	if fmt.Sprint(types) != "map[level:integer mode:string]" {
		t.Fatalf("field types %v", types)
	}
	m := scrape(t, svc)
	if m.get("telemetryd_readings_rejected_total", `reason="type_conflict"`) != 3 || m.get("telemetryd_typeguard_coerced_total") != 1 ||
		m.get("telemetryd_readings_rejected_total", `reason="storage_rejected"`) > 0 {
		t.Fatalf("metrics %v %v", m.names("telemetryd_readings_rejected"), m.names("telemetryd_typeguard"))
	}
}

// TestRulesFileAppliedEndToEnd: a rules file pins a field type and changes a
// unit rule, and the service applies both.
func TestRulesFileAppliedEndToEnd(t *testing.T) {
	influx := influxtest.Start(t)
	rules := filepath.Join(t.TempDir(), "rules.toml")
	if err := os.WriteFile(rules, []byte(`
[units]
keep_original = false
[[units.rule]]
measurement = "boiler"
field = "temp"
target = "degF"
[types.fields.boiler]
count = "integer"
`), 0o600); err != nil {
		t.Fatal(err)
	}
	svc := startService(t, influx, nil, tokensFile(t, "b-1", "tok-b"), "-config", rules)
	waitReady(t, svc)
	dev := mustDialWS(t, svc.ws("/v1/ingest"), bearer("tok-b"))
	dev.send(t, `{"seq":1,"ts":1763820000000,"measurement":"boiler","metrics":{"temp":{"value":100,"unit":"Cel"},"count":4}}`)
	var ack ackOrError
	dev.nextJSON(t, &ack)
	if ack.Ack == nil {
		t.Fatalf("want ack, got %s", mustJSON(ack))
	}
	rows := influx.Query(t, testDB, `SELECT * FROM "boiler"`)
	if len(rows) != 1 || fmt.Sprint(rows[0].Columns) != "[time count device_id temp]" || fmt.Sprint(rows[0].Values[0][1:]) != "[4 b-1 212]" {
		t.Fatalf("stored %+v", rows)
	}
	for _, s := range influx.Query(t, testDB, `SHOW FIELD KEYS FROM "boiler"`) {
		if fmt.Sprint(s.Values) != "[[count integer] [temp float]]" {
			t.Fatalf("field types %v", s.Values)
		}
	}
}
