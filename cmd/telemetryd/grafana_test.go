package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/ingest/mqtttest"
	"github.com/telemetryd/telemetryd/storage/influxtest"
)

// grafanaDashboard is what the tests read of a dashboard file.
type grafanaDashboard struct {
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query string `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		Title   string `json:"title"`
		Targets []struct {
			Query string `json:"query"`
			Expr  string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

func readDashboard(t *testing.T, name string) grafanaDashboard {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "deploy/grafana/dashboards", name))
	if err != nil {
		t.Fatal(err)
	}
	var d grafanaDashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if len(d.Panels) == 0 {
		t.Fatalf("%s has no panels", name)
	}
	return d
}

// grafanaInfluxQL expands a panel's query the way Grafana's InfluxDB data
// source does before sending it: $timeFilter becomes an epoch-ms range,
// $__interval a duration, and template variables their values (a
// multi-value variable in :regex form its escaped alternatives).
func grafanaInfluxQL(q string, from, to time.Time, vars map[string]string) string {
	r := strings.NewReplacer(
		"$timeFilter", fmt.Sprintf("time >= %dms and time <= %dms", from.UnixMilli(), to.UnixMilli()),
		"$__interval", "10s",
		"${device:regex}", vars["device:regex"],
		"$measurement", vars["measurement"],
		"${measurement}", vars["measurement"],
		"$field", vars["field"],
		"${field}", vars["field"],
	)
	return r.Replace(q)
}

// TestGrafanaDashboardsAgainstInfluxDB: every InfluxQL query of the
// provisioned dashboard (panels and template variables), expanded as
// Grafana does, runs against a real InfluxDB 1.8 holding readings that
// telemetryd stored, and answers rows; and every metric the Prometheus
// dashboard names is one telemetryd's /metrics serves.
func TestGrafanaDashboardsAgainstInfluxDB(t *testing.T) {
	influx := influxtest.Start(t)
	broker := mqtttest.Start(t, mqtttest.Options{}) // so that the MQTT metrics are served
	svc := startService(t, influx, broker, tokensFile(t, "tank-7", "tok-tank"))
	waitReady(t, svc)
	dev := mustDialWS(t, svc.ws("/v1/ingest"), bearer("tok-tank"))
	now := time.Now()
	var b strings.Builder
	for i := range 20 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"ts":%d,"measurement":"tank","metrics":{"level":%d,"pump":%t},"tags":{"site":"p1"}}`, now.Add(-time.Duration(20-i)*time.Second).UnixMilli(), i, i%2 == 0)
	}
	// One reading refused, so that the rejections by reason are served.
	b.WriteString(`,{"measurement":"tank","metrics":{"site":1},"tags":{"site":"p1"}}`)
	dev.send(t, `{"seq":1,"readings":[`+b.String()+`]}`)
	var rej, ack ackOrError
	dev.nextJSON(t, &rej)
	dev.nextJSON(t, &ack)
	if ack.Ack == nil {
		t.Fatalf("want ack, got %s", mustJSON(ack))
	}

	d := readDashboard(t, "telemetry.json")
	vars := map[string]string{"measurement": "tank", "field": "level"}
	for _, dv := range []string{".*", `tank\-7`} { // All, and one device as Grafana escapes it
		vars["device:regex"] = dv
		var n int
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				if tg.Query == "" {
					t.Fatalf("panel %q has a target without an InfluxQL query", p.Title)
				}
				q := grafanaInfluxQL(tg.Query, now.Add(-time.Hour), now.Add(time.Minute), vars)
				if strings.Contains(q, "$") && !strings.Contains(q, "$/") {
					t.Fatalf("panel %q: unexpanded variable in %s", p.Title, q)
				}
				series := influx.Query(t, testDB, q)
				rows := 0
				for _, s := range series {
					rows += len(s.Values)
				}
				if rows == 0 {
					t.Errorf("panel %q: no rows for %s", p.Title, q)
				}
				n++
			}
		}
		if n == 0 {
			t.Fatal("no panel queries")
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q := grafanaInfluxQL(v.Query, now.Add(-time.Hour), now, vars)
		series := influx.Query(t, testDB, q)
		if len(series) == 0 || len(series[0].Values) == 0 {
			t.Errorf("variable %s: no values for %s", v.Name, q)
		}
	}

	m := scrape(t, svc)
	served := map[string]bool{}
	for k := range m {
		name, _, _ := strings.Cut(k, "{")
		served[name] = true
	}
	pd := readDashboard(t, "telemetryd-metrics.json")
	metricName := regexp.MustCompile(`telemetryd_[a-z0-9_]+`)
	var names int
	for _, p := range pd.Panels {
		for _, tg := range p.Targets {
			if tg.Expr == "" {
				t.Fatalf("panel %q has a target without a PromQL expression", p.Title)
			}
			for _, name := range metricName.FindAllString(tg.Expr, -1) {
				names++
				if !served[name] {
					t.Errorf("panel %q: %s is not in /metrics", p.Title, name)
				}
			}
		}
	}
	if names == 0 {
		t.Fatal("the Prometheus dashboard names no telemetryd metric")
	}
}
