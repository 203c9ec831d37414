package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/telemetryd/telemetryd/ingest/mqtttest"
	"github.com/telemetryd/telemetryd/storage/influxtest"
)

type ackOrError struct {
	Ack   *uint64 `json:"ack"`
	Error *struct {
		Seq          *uint64 `json:"seq"`
		Code         string  `json:"code"`
		Message      string  `json:"message"`
		RetryAfterMS int64   `json:"retry_after_ms"`
		Rejected     []struct {
			Index int    `json:"index"`
			Code  string `json:"code"`
		} `json:"rejected"`
	} `json:"error"`
}

type liveMsg struct {
	Type     string `json:"type"`
	Sub      string `json:"sub"`
	Readings []struct {
		DeviceID    string            `json:"device_id"`
		Measurement string            `json:"measurement"`
		TS          int64             `json:"ts"`
		Fields      map[string]any    `json:"fields"`
		Tags        map[string]string `json:"tags"`
	} `json:"readings"`
}

func newMQTTClient(t *testing.T, url, id string) mqtt.Client {
	t.Helper()
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID(id).
		SetCleanSession(false).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(100 * time.Millisecond).SetMaxReconnectInterval(500 * time.Millisecond))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("mqtt connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

func publish(t *testing.T, c mqtt.Client, topic, payload string) {
	t.Helper()
	tok := c.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
}

func TestEndToEnd(t *testing.T) {
	influx := influxtest.Start(t)
	broker := mqtttest.Start(t, mqtttest.Options{})
	svc := startService(t, influx, broker, tokensFile(t, "ws-dev-1", "tok-ws-1", "mqtt-dev-1", "tok-mqtt-1"))
	waitReady(t, svc)

	// A dashboard subscribes before anything is sent: an empty snapshot.
	dash := mustDialWS(t, svc.ws("/v1/live"), bearer(testAdminToken))
	dash.send(t, `{"op":"subscribe","id":"s1","devices":["*"],"measurements":["*"]}`)
	var snap liveMsg
	dash.nextJSON(t, &snap)
	if snap.Type != "snapshot" || snap.Sub != "s1" || len(snap.Readings) != 0 {
		t.Fatalf("first snapshot = %+v", snap)
	}

	// WebSocket device: the ack arrives only once the reading is queryable.
	dev := mustDialWS(t, svc.ws("/v1/ingest"), bearer("tok-ws-1"))
	const ts = int64(1763820000123) // ms
	dev.send(t, fmt.Sprintf(`{"seq":17,"ts":%d,"measurement":"environment","metrics":{"temperature":21,"humidity":40.5,"door_open":false,"status":"ok \"q\"\nsecond line","energy":{"value":1234,"type":"int","unit":"Wh"}},"tags":{"site":"plant-3"}}`, ts))
	var ack ackOrError
	dev.nextJSON(t, &ack)
	if ack.Ack == nil || *ack.Ack != 17 {
		t.Fatalf("want ack 17, got %+v", ack)
	}
	rows := influx.Query(t, testDB, `SELECT * FROM "environment" WHERE "device_id"='ws-dev-1'`)
	if len(rows) != 1 || len(rows[0].Values) != 1 {
		t.Fatalf("acked reading not queryable at ack time: %+v", rows)
	}
	row := map[string]any{}
	for i, c := range rows[0].Columns {
		row[c] = rows[0].Values[0][i]
	}
	if fmt.Sprint(row["time"]) != fmt.Sprint(ts*1e6) || fmt.Sprint(row["temperature"]) != "21" || fmt.Sprint(row["humidity"]) != "40.5" ||
		row["door_open"] != false || row["status"] != "ok \"q\"\nsecond line" || fmt.Sprint(row["energy"]) != "1234" || row["site"] != "plant-3" {
		t.Fatalf("stored row = %v", row)
	}
	types := map[string]string{}
	for _, s := range influx.Query(t, testDB, `SHOW FIELD KEYS FROM "environment"`) {
		for _, v := range s.Values {
			types[fmt.Sprint(v[0])] = fmt.Sprint(v[1])
		}
	}
	if want := "map[door_open:boolean energy:integer humidity:float status:string temperature:float]"; fmt.Sprint(types) != want {
		t.Fatalf("field types %v, want %s (21 must be stored as float)", types, want)
	}

	// The dashboard saw it live, with ts in ns and typed fields.
	var live liveMsg
	dash.nextJSON(t, &live)
	if live.Type != "readings" || len(live.Readings) != 1 || live.Readings[0].DeviceID != "ws-dev-1" ||
		live.Readings[0].TS != ts*1e6 || live.Readings[0].Fields["door_open"] != false || live.Readings[0].Tags["site"] != "plant-3" {
		t.Fatalf("live = %+v", live)
	}

	// A partly bad frame: the good reading is acked, the bad ones listed.
	dev.send(t, `{"seq":18,"readings":[{"measurement":"environment","metrics":{"temperature":22}},{"measurement":"bad name","metrics":{"x":1}},{"metrics":{"x":null}}]}`)
	var rejected, ack18 ackOrError
	dev.nextJSON(t, &rejected)
	dev.nextJSON(t, &ack18)
	if rejected.Error == nil || *rejected.Error.Seq != 18 || rejected.Error.Code != "rejected" || len(rejected.Error.Rejected) != 2 ||
		rejected.Error.Rejected[0].Index != 1 || rejected.Error.Rejected[0].Code != "invalid_name" || rejected.Error.Rejected[1].Index != 2 {
		t.Fatalf("error frame = %s", mustJSON(rejected))
	}
	if ack18.Ack == nil || *ack18.Ack != 18 {
		t.Fatalf("want ack 18, got %s", mustJSON(ack18))
	}
	dev.send(t, `{"seq":19,"metrics":`)
	var bad ackOrError
	dev.nextJSON(t, &bad)
	if bad.Error == nil || bad.Error.Code != "invalid_payload" {
		t.Fatalf("malformed frame answer = %s", mustJSON(bad))
	}

	// MQTT device: stored with the device id from the topic.
	pub := newMQTTClient(t, broker.URL(), "sensor-pub")
	publish(t, pub, "devices/mqtt-dev-1/telemetry", `{"ts":"2025-11-22T14:00:00.5Z","measurement":"power","metrics":{"kwh":{"value":77,"type":"int"},"v":230.1}}`)
	eventually(t, 15*time.Second, "mqtt reading stored", func() bool {
		return influx.CountPoints(t, testDB, "power", "kwh") == 1
	})
	rows = influx.Query(t, testDB, `SELECT "kwh","v","device_id" FROM "power"`)
	if got := fmt.Sprint(rows[0].Values[0]); got != fmt.Sprint([]any{time.Date(2025, 11, 22, 14, 0, 0, 5e8, time.UTC).UnixNano(), 77, 230.1, "mqtt-dev-1"}) {
		t.Fatalf("mqtt row = %s", got)
	}
	dash.nextJSON(t, &live) // reading 18's good reading
	dash.nextJSON(t, &live)
	if live.Readings[0].DeviceID != "mqtt-dev-1" {
		t.Fatalf("live mqtt = %+v", live)
	}

	// A second dashboard gets the last value of every series as its snapshot.
	dash2 := mustDialWS(t, svc.ws("/v1/live"), bearer(testAdminToken))
	dash2.send(t, `{"op":"subscribe","id":"x","devices":["mqtt-dev-1"]}`)
	dash2.nextJSON(t, &snap)
	if snap.Type != "snapshot" || len(snap.Readings) != 1 || snap.Readings[0].Fields["kwh"] != 77.0 {
		t.Fatalf("snapshot = %+v", snap)
	}

	// Bad credentials never upgrade.
	if _, resp, err := dialWS(t, svc.ws("/v1/ingest"), bearer("wrong")); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("bad token: err=%v resp=%v", err, resp)
	}

	// Graceful stop: devices see 1001.
	svc.stop(t)
	if code := dev.closeCode(t); code != 1001 {
		t.Fatalf("device close code = %d, want 1001", code)
	}
}

// waitReady waits for /readyz: InfluxDB reachable and MQTT subscribed.
func waitReady(t *testing.T, svc *service) {
	t.Helper()
	eventually(t, 20*time.Second, "readyz", func() bool {
		resp, err := http.Get(svc.url("/readyz"))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestMQTTBrokerRestartLosesNothingAcked restarts Mosquitto in the middle
// of a stream: every message the broker acknowledged to the publisher must
// end up in InfluxDB exactly once.
func TestMQTTBrokerRestartLosesNothingAcked(t *testing.T) {
	influx := influxtest.Start(t)
	broker := mqtttest.Start(t, mqtttest.Options{})
	svc := startService(t, influx, broker, tokensFile(t, "restart-dev", "unused-token")) // MQTT devices must be known
	waitReady(t, svc)

	pub := newMQTTClient(t, broker.URL(), "restart-pub")
	const total = 400
	base := time.Now().Add(-time.Hour).UnixMilli()
	var acked sync.Map
	var wg sync.WaitGroup
	for i := range total {
		if i == total/2 {
			wg.Wait()
			broker.Stop(t)
			broker.Restart(t)
		}
		tok := pub.Publish("devices/restart-dev/telemetry", 1, false, fmt.Sprintf(`{"ts":%d,"metrics":{"n":%d}}`, base+int64(i), i))
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if tok.WaitTimeout(20*time.Second) && tok.Error() == nil {
				acked.Store(i, true)
			}
		}(i)
	}
	wg.Wait()
	nAcked := 0
	acked.Range(func(any, any) bool { nAcked++; return true })
	if nAcked < total/2 {
		t.Fatalf("only %d of %d publishes acknowledged by the broker", nAcked, total)
	}
	var missing []int
	defer func() {
		if t.Failed() {
			t.Logf("acknowledged by the broker but not stored: %v", missing)
		}
	}()
	eventually(t, 30*time.Second, "every acknowledged message stored", func() bool {
		stored := map[int64]bool{}
		for _, s := range influx.Query(t, testDB, `SELECT "n" FROM "telemetry"`) {
			for _, v := range s.Values {
				n, _ := v[1].(json.Number).Int64()
				stored[n] = true
			}
		}
		missing = missing[:0]
		acked.Range(func(k, _ any) bool {
			if !stored[int64(k.(int))] {
				missing = append(missing, k.(int))
			}
			return true
		})
		return len(missing) == 0
	})
}

func TestReadyzNamesTheDependencyThatIsDown(t *testing.T) {
	influx := influxtest.Start(t)
	broker := mqtttest.Start(t, mqtttest.Options{})
	svc := startService(t, influx, broker, tokensFile(t, "d", "t"))
	get := func() (int, string) {
		resp, err := http.Get(svc.url("/readyz"))
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	eventually(t, 20*time.Second, "ready", func() bool { c, _ := get(); return c == 200 })
	broker.Kill(t)
	eventually(t, 20*time.Second, "mqtt reported down", func() bool {
		c, body := get()
		return c == 503 && strings.Contains(body, `"mqtt":"down`) && strings.Contains(body, `"influxdb":"ok"`)
	})
	broker.Restart(t)
	influx.Kill(t)
	// The spool has room: still ready (it accepts and makes durable), degraded.
	eventually(t, 20*time.Second, "influxdb reported down", func() bool {
		c, body := get()
		return c == 200 && strings.Contains(body, `"status":"degraded"`) && strings.Contains(body, `"storage":"unreachable"`) &&
			strings.Contains(body, `"influxdb":"unreachable`) && strings.Contains(body, `"mqtt":"ok"`)
	})
	if resp, err := http.Get(svc.url("/healthz")); err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
}
