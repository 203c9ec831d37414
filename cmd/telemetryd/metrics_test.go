package main

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/ingest/mqtttest"
	"github.com/telemetryd/telemetryd/storage/influxtest"
)

// metrics is one scrape of /metrics: series ("name{l="v",...}") → value.
type metrics map[string]float64

func scrape(t *testing.T, svc *service) metrics {
	t.Helper()
	resp, err := http.Get(svc.url("/metrics"))
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s %v\n%s", resp.Status, err, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("Content-Type %q", ct)
	}
	m := metrics{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("unparsable metrics line %q", line)
		}
		m[line[:i]] = v
	}
	return m
}

// get returns the value of the one series of name whose labels include all
// of labels (each `key="value"`); -1 when there is none.
func (m metrics) get(name string, labels ...string) float64 {
	for series, v := range m {
		base, lbls, _ := strings.Cut(series, "{")
		if base != name {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(lbls, l)
		}
		if ok {
			return v
		}
	}
	return -1
}

func (m metrics) names(prefix string) []string {
	var out []string
	for s := range m {
		if strings.HasPrefix(s, prefix) {
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

// waitMetric polls /metrics until series name{labels} satisfies ok.
func waitMetric(t *testing.T, svc *service, what string, ok func(float64) bool, name string, labels ...string) {
	t.Helper()
	var last float64
	defer func() {
		if t.Failed() {
			t.Logf("%s%v was %v", name, labels, last)
		}
	}()
	eventually(t, 15*time.Second, fmt.Sprintf("%s: %s%v", what, name, labels), func() bool {
		last = scrape(t, svc).get(name, labels...)
		return ok(last)
	})
}

func eq(want float64) func(float64) bool { return func(v float64) bool { return v == want } }
func atLeast(n float64) func(float64) bool {
	return func(v float64) bool { return v >= n }
}

// TestMetricsDuringIntegrationRun drives a real service (InfluxDB and
// Mosquitto) and checks that every family of counters moves as it should.
func TestMetricsDuringIntegrationRun(t *testing.T) {
	influx := influxtest.Start(t)
	broker := mqtttest.Start(t, mqtttest.Options{})
	svc := startService(t, influx, broker, tokensFile(t, "m-dev", "tok-m", "mqtt-m", "tok-mqtt-m"))
	waitReady(t, svc)

	m := scrape(t, svc)
	if v := m.get("telemetryd_build_info", `version="dev"`, `goversion="go1.`); v != 1 {
		t.Fatalf("build info: %v", m.names("telemetryd_build_info"))
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "telemetryd_ws_connections",
		"telemetryd_bridge_queue_frames", "telemetryd_bridge_queue_capacity_frames", "telemetryd_live_subscribers",
		"telemetryd_influx_write_duration_seconds_count", "telemetryd_typeguard_fields"} {
		if m.get(name) < 0 {
			t.Errorf("%s missing from /metrics", name)
		}
	}
	if v := m.get("telemetryd_mqtt_connected"); v != 1 {
		t.Errorf("mqtt_connected = %v, want 1", v)
	}
	if v := m.get("telemetryd_bridge_queue_capacity_frames"); v != 8192 {
		t.Errorf("queue capacity = %v", v)
	}
	batches0 := m.get("telemetryd_influx_write_batches_total")

	// A dashboard subscribes: the subscriber gauge moves.
	dash := mustDialWS(t, svc.ws("/v1/live"), bearer(testAdminToken))
	dash.send(t, `{"op":"subscribe","id":"s","devices":["*"]}`)
	var snap liveMsg
	dash.nextJSON(t, &snap)
	m = scrape(t, svc)
	if m.get("telemetryd_live_subscribers") != 1 || m.get("telemetryd_live_subscriptions") != 1 || m.get("telemetryd_live_connections") != 1 {
		t.Fatalf("live gauges: %v", m.names("telemetryd_live_"))
	}

	// Accepted readings over WebSocket, one of them in °F.
	dev := mustDialWS(t, svc.ws("/v1/ingest"), bearer("tok-m"))
	dev.send(t, `{"seq":1,"readings":[{"measurement":"env","metrics":{"t":{"value":212,"unit":"degF"}}},{"measurement":"env","metrics":{"h":40}}]}`)
	var ack ackOrError
	dev.nextJSON(t, &ack)
	if ack.Ack == nil || *ack.Ack != 1 {
		t.Fatalf("want ack 1, got %s", mustJSON(ack))
	}
	m = scrape(t, svc)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"telemetryd_ws_connections", nil, 1},
		{"telemetryd_ws_upgrades_total", nil, 1},
		{"telemetryd_frames_received_total", []string{`transport="ws"`}, 1},
		{"telemetryd_readings_accepted_total", []string{`transport="ws"`}, 2},
		{"telemetryd_readings_written_total", nil, 2},
		{"telemetryd_bridge_frames_accepted_total", nil, 1},
		{"telemetryd_acks_sent_total", []string{`transport="ws"`}, 1},
		{"telemetryd_units_converted_total", nil, 1},
		{"telemetryd_bridge_queue_frames", nil, 0},
		{"telemetryd_bridge_queue_oldest_age_seconds", nil, 0},
	} {
		if got := m.get(c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if m.get("telemetryd_influx_write_batches_total") <= batches0 || m.get("telemetryd_influx_write_duration_seconds_count") < 1 ||
		m.get("telemetryd_influx_write_duration_seconds_bucket", `le="+Inf"`) != m.get("telemetryd_influx_write_duration_seconds_count") ||
		m.get("telemetryd_influx_write_duration_seconds_sum") <= 0 {
		t.Errorf("write metrics: %v", m.names("telemetryd_influx_write"))
	}
	// The converted reading is stored in Cel, its unit kept beside it.
	rows := influx.Query(t, testDB, `SELECT "t","t_unit_original" FROM "env" WHERE "t" > 0`)
	if len(rows) != 1 || fmt.Sprint(rows[0].Values[0][1:]) != "[100 degF]" {
		t.Fatalf("converted reading stored as %+v", rows)
	}
	// The dashboard got it: deliveries move.
	waitMetric(t, svc, "live deliveries", atLeast(1), "telemetryd_live_deliveries_total")

	// A rejected reading counts under its reason; a malformed frame under the transport's.
	dev.send(t, `{"seq":2,"readings":[{"measurement":"bad name","metrics":{"x":1}},{"measurement":"env","metrics":{"h":41}}]}`)
	var rej ackOrError
	dev.nextJSON(t, &rej)
	dev.nextJSON(t, &ack)
	if rej.Error == nil || len(rej.Error.Rejected) != 1 || rej.Error.Rejected[0].Code != "invalid_name" || ack.Ack == nil {
		t.Fatalf("answers %s %s", mustJSON(rej), mustJSON(ack))
	}
	dev.send(t, `{"seq":3,"metrics":`)
	dev.nextJSON(t, &rej)
	m = scrape(t, svc)
	if got := m.get("telemetryd_readings_rejected_total", `reason="invalid_name"`); got != 1 {
		t.Errorf("readings_rejected_total{reason=invalid_name} = %v; %v", got, m.names("telemetryd_readings_rejected"))
	}
	if got := m.get("telemetryd_frames_rejected_total", `transport="ws"`, `reason="invalid_payload"`); got != 1 {
		t.Errorf("frames_rejected_total{ws,invalid_payload} = %v", got)
	}
	if got := m.get("telemetryd_frames_received_total", `transport="ws"`); got != 3 {
		t.Errorf("frames_received_total{ws} = %v, want 3", got)
	}

	// MQTT: frames received, acked to the broker, nothing left unacked.
	pub := newMQTTClient(t, broker.URL(), "metrics-pub")
	publish(t, pub, "devices/mqtt-m/telemetry", `{"measurement":"env","metrics":{"h":42}}`)
	publish(t, pub, "devices/mqtt-m/telemetry", `not json`)
	waitMetric(t, svc, "mqtt frames", eq(2), "telemetryd_frames_received_total", `transport="mqtt"`)
	waitMetric(t, svc, "mqtt readings", eq(1), "telemetryd_readings_accepted_total", `transport="mqtt"`)
	waitMetric(t, svc, "mqtt invalid", eq(1), "telemetryd_frames_rejected_total", `transport="mqtt"`, `reason="invalid_payload"`)
	waitMetric(t, svc, "mqtt acks", eq(2), "telemetryd_acks_sent_total", `transport="mqtt"`)
	waitMetric(t, svc, "mqtt unacked", eq(0), "telemetryd_mqtt_unacked_messages")

	// The device leaves; the dashboard too.
	_ = dev.conn.WriteClose(1000, nil)
	_ = dash.conn.WriteClose(1000, nil)
	waitMetric(t, svc, "ws connections after close", eq(0), "telemetryd_ws_connections")
	waitMetric(t, svc, "live subscribers after close", eq(0), "telemetryd_live_subscribers")

	// The service's main listener does not serve pprof.
	resp, err := http.Get(svc.url("/debug/pprof/"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("/debug/pprof/ on the public listener: %s", resp.Status)
	}
}

// TestMetricsQueueAgeWhileInfluxFrozen: with InfluxDB stopped (SIGSTOP) and
// the spool off, accepted frames wait in the bridge; the queue age and the
// write error counters show it, and drop back once InfluxDB answers again.
func TestMetricsQueueAgeWhileInfluxFrozen(t *testing.T) {
	influx := influxtest.Start(t)
	svc := startService(t, influx, nil, tokensFile(t, "q-dev", "tok-q"), "-spool=false", "-influx-timeout", "300ms")
	waitReady(t, svc)
	dev := mustDialWS(t, svc.ws("/v1/ingest"), bearer("tok-q"))

	influx.Freeze(t)
	thawed := false
	defer func() {
		if !thawed {
			influx.Thaw(t)
		}
	}()
	dev.send(t, `{"seq":1,"metrics":{"x":1}}`)
	waitMetric(t, svc, "oldest age while frozen", func(v float64) bool { return v >= 0.5 }, "telemetryd_bridge_queue_oldest_age_seconds")
	waitMetric(t, svc, "write errors while frozen", atLeast(1), "telemetryd_influx_write_errors_total")
	waitMetric(t, svc, "retries while frozen", atLeast(1), "telemetryd_influx_write_retries_total")
	influx.Thaw(t)
	thawed = true
	var ack ackOrError
	dev.nextJSON(t, &ack)
	if ack.Ack == nil {
		t.Fatalf("want ack after thaw, got %s", mustJSON(ack))
	}
	waitMetric(t, svc, "oldest age after thaw", eq(0), "telemetryd_bridge_queue_oldest_age_seconds")
}
