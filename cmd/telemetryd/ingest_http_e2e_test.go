package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
	influxhttp "github.com/influxdata/influxdb-client-go/v2/api/http"
	"github.com/lxzan/gws"

	"github.com/telemetryd/telemetryd/ingest/mqtttest"
	"github.com/telemetryd/telemetryd/storage/influxtest"
)

// httpAnswer is an HTTP ingest answer: status, Retry-After, JSON body.
type httpAnswer struct {
	status     int
	retryAfter string
	body       map[string]any
	raw        string
}

func httpPost(t *testing.T, url, auth string, body []byte, hdr ...string) httpAnswer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := httpAnswer{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), raw: string(b)}
	if len(b) > 0 {
		if err := json.Unmarshal(b, &a.body); err != nil {
			t.Fatalf("body %q: %v", b, err)
		}
	}
	return a
}

// fieldTypes is SHOW FIELD KEYS of a measurement: name → InfluxDB type.
func fieldTypes(t *testing.T, influx *influxtest.Server, db, m string) map[string]string {
	t.Helper()
	types := map[string]string{}
	for _, s := range influx.Query(t, db, `SHOW FIELD KEYS FROM `+influxtest.QuoteIdent(m)) {
		for _, v := range s.Values {
			types[fmt.Sprint(v[0])] = fmt.Sprint(v[1])
		}
	}
	return types
}

// rowsOf returns a query's rows as column → value maps.
func rowsOf(t *testing.T, influx *influxtest.Server, db, q string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, s := range influx.Query(t, db, q) {
		for _, v := range s.Values {
			row := map[string]any{}
			for i, c := range s.Columns {
				row[c] = v[i]
			}
			out = append(out, row)
		}
	}
	return out
}

func mustCBOR(t *testing.T, v any) []byte {
	t.Helper()
	b, err := cbor.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestHTTPIngestEndToEnd(t *testing.T) {
	influx := influxtest.Start(t)
	broker := mqtttest.Start(t, mqtttest.Options{})
	svc := startService(t, influx, broker, tokensFile(t,
		"http-dev", "tok-http", "lp-dev", "tok-lp", "cbor-dev", "tok-cbor", "mqtt-cbor", "tok-mqtt-cbor"))
	waitReady(t, svc)

	t.Run("POST /v1/ingest answers 200 when queryable", func(t *testing.T) {
		a := httpPost(t, svc.url("/v1/ingest"), "Bearer tok-http",
			[]byte(`{"seq":3,"ts":1763820000123,"measurement":"http_env","metrics":{"t":21,"ok":true,"s":"fine","n":{"value":5,"type":"int"}},"tags":{"site":"a"}}`))
		if a.status != http.StatusOK || a.body["ack"] != 3.0 || a.body["accepted"] != 1.0 || a.body["error"] != nil {
			t.Fatalf("answer %d %s", a.status, a.raw)
		}
		rows := rowsOf(t, influx, testDB, `SELECT * FROM "http_env" WHERE "device_id"='http-dev'`)
		if len(rows) != 1 || fmt.Sprint(rows[0]["time"]) != "1763820000123000000" || rows[0]["site"] != "a" {
			t.Fatalf("at 200 the reading is not queryable: %v", rows)
		}
		if got := fmt.Sprint(fieldTypes(t, influx, testDB, "http_env")); got != "map[n:integer ok:boolean s:string t:float]" {
			t.Fatalf("types %s", got)
		}
		// gzip'd SenML with a bad record: 200, the record named like a socket's error frame.
		var zb bytes.Buffer
		zw := gzip.NewWriter(&zb)
		_, _ = zw.Write([]byte(`[{"bn":"","n":"http_senml_a","v":1.5,"t":1763820001},{"n":"bad!","v":2,"t":1763820001}]`))
		_ = zw.Close()
		a = httpPost(t, svc.url("/v1/ingest"), "Bearer tok-http", zb.Bytes(), "Content-Encoding", "gzip")
		rej, _ := get(a.body, "error", "rejected").([]any)
		if a.status != 200 || a.body["accepted"] != 1.0 || get(a.body, "error", "code") != "rejected" || len(rej) != 1 || rej[0].(map[string]any)["index"] != 1.0 {
			t.Fatalf("senml answer %d %s", a.status, a.raw)
		}
		if a := httpPost(t, svc.url("/v1/ingest"), "Bearer tok-http", []byte(`{"metrics":`)); a.status != 400 || get(a.body, "error", "code") != "invalid_payload" {
			t.Fatalf("undecodable: %d %s", a.status, a.raw)
		}
		if a := httpPost(t, svc.url("/v1/ingest"), "Bearer nope", []byte(`{"metrics":{"a":1}}`)); a.status != 401 {
			t.Fatalf("bad token: %d %s", a.status, a.raw)
		}
		if a := httpPost(t, svc.url("/v1/ingest"), "Bearer tok-http", bytes.Repeat([]byte(" "), 300<<10)); a.status != 413 {
			t.Fatalf("oversized: %d %s", a.status, a.raw)
		}
		// HTTP.Stats in /metrics: the five requests above, each where it belongs.
		m := scrape(t, svc)
		for _, c := range []struct {
			name   string
			labels []string
			want   float64
		}{
			{"telemetryd_frames_received_total", []string{`transport="http"`}, 5},
			{"telemetryd_acks_sent_total", []string{`transport="http"`}, 2},
			{"telemetryd_readings_accepted_total", []string{`transport="http"`}, 2},
			{"telemetryd_http_readings_rejected_total", nil, 1},
			{"telemetryd_frames_rejected_total", []string{`transport="http"`, `reason="invalid_payload"`}, 1},
			{"telemetryd_frames_rejected_total", []string{`transport="http"`, `reason="unauthorized"`}, 1},
			{"telemetryd_frames_rejected_total", []string{`transport="http"`, `reason="too_large"`}, 1},
			{"telemetryd_frames_rejected_total", []string{`transport="http"`, `reason="rate_limited"`}, 0},
		} {
			if got := m.get(c.name, c.labels...); got != c.want {
				t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
			}
		}
	})

	t.Run("InfluxDB client's blocking writer", func(t *testing.T) {
		client := influxdb2.NewClient(svc.url(""), "tok-lp")
		defer client.Close()
		w := client.WriteAPIBlocking("any-org", "any-bucket")
		ts := time.Unix(1763820100, 0)
		p := influxdb2.NewPoint("lp_client", map[string]string{"line": "1"}, map[string]any{"f": 1.25, "i": int64(-7), "u": uint64(9), "b": true, "s": `say "hi"`}, ts)
		if err := w.WritePoint(context.Background(), p); err != nil {
			t.Fatalf("WritePoint: %v", err)
		}
		if err := w.WriteRecord(context.Background(), "lp_client,line=2 f=2.5 1763820101000000000"); err != nil {
			t.Fatalf("WriteRecord: %v", err)
		}
		rows := rowsOf(t, influx, testDB, `SELECT * FROM "lp_client" WHERE "device_id"='lp-dev'`)
		if len(rows) != 2 || fmt.Sprint(rows[0]["time"]) != fmt.Sprint(ts.UnixNano()) || rows[0]["s"] != `say "hi"` {
			t.Fatalf("rows after the blocking writes returned: %v", rows)
		}
		if got := fmt.Sprint(fieldTypes(t, influx, testDB, "lp_client")); got != "map[b:boolean f:float i:integer s:string u:integer]" {
			t.Fatalf("types %s", got)
		}
		// A refusal is an error the client understands.
		err := w.WriteRecord(context.Background(), "lp_client f=")
		var he *influxhttp.Error
		if !errors.As(err, &he) || he.StatusCode != 400 || he.Code != "invalid" {
			t.Fatalf("bad line: %v", err)
		}
	})

	t.Run("curl --data-binary of line-protocol files", func(t *testing.T) {
		curl := func(file, query string) httpAnswer {
			out, err := exec.Command("curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "-XPOST",
				"-H", "Authorization: Token tok-lp", "--data-binary", "@"+filepath.Join("testdata", "lineproto", file),
				svc.url("/api/v2/write?org=o&bucket=b&"+query)).CombinedOutput()
			if err != nil {
				t.Fatalf("curl: %v %s", err, out)
			}
			body, code, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
			if code == "" {
				body, code = "", body
			}
			a := httpAnswer{raw: body}
			fmt.Sscan(code, &a.status)
			if body != "" {
				_ = json.Unmarshal([]byte(body), &a.body)
			}
			return a
		}
		a := curl("mixed.lp", "precision=ns")
		if a.status != 400 || a.body["code"] != "invalid" || !strings.Contains(a.raw, "dropped=3") {
			t.Fatalf("mixed.lp: %d %s", a.status, a.raw)
		}
		for _, p := range []string{"point 3:", "point 4:", "point 5:"} {
			if !strings.Contains(a.raw, p) {
				t.Errorf("answer does not name %s: %s", p, a.raw)
			}
		}
		env := rowsOf(t, influx, testDB, `SELECT * FROM "lp_env"`)
		if len(env) != 1 || env[0]["site"] != "plant 3" || env[0]["zone"] != "a,b=c" || env[0]["state"] != `idle "q" \ x` ||
			fmt.Sprint(env[0]["count"]) != "42" || fmt.Sprint(env[0]["big"]) != "7" || env[0]["on"] != true || fmt.Sprint(env[0]["temp"]) != "21.5" ||
			fmt.Sprint(env[0]["time"]) != "1763820000000000000" || env[0]["device_id"] != "lp-dev" {
			t.Fatalf("lp_env rows %v", env)
		}
		if got := fmt.Sprint(fieldTypes(t, influx, testDB, "lp_env")); got != "map[big:integer count:integer on:boolean state:string temp:float]" {
			t.Fatalf("lp_env types %s", got)
		}
		if types := rowsOf(t, influx, testDB, `SELECT "f" FROM "lp_types"`); len(types) != 2 {
			t.Fatalf("lp_types: the two good lines, not %v", types)
		}
		// A point refused by the type guard alone: 422, like InfluxDB 2.x.
		body := []byte("lp_types f=\"text\" 1763820000000000009\nlp_types f=9.5 1763820000000000010")
		a = httpPost(t, svc.url("/api/v2/write?org=o&bucket=b"), "Token tok-lp", body)
		if a.status != 422 || a.body["code"] != "unprocessable entity" || !strings.Contains(a.raw, "dropped=1") {
			t.Fatalf("type conflict: %d %s", a.status, a.raw)
		}
		for _, p := range []string{"s", "ms", "us", "ns"} {
			if a := curl(p+".lp", "precision="+p); a.status != 204 {
				t.Fatalf("%s.lp: %d %s", p, a.status, a.raw)
			}
		}
		prec := rowsOf(t, influx, testDB, `SELECT "v","p" FROM "lp_prec"`)
		if len(prec) != 4 {
			t.Fatalf("lp_prec %v", prec)
		}
		for _, r := range prec {
			if fmt.Sprint(r["time"]) != "1763820000000000000" {
				t.Errorf("precision %v stored at %v", r["p"], r["time"])
			}
		}
		// InfluxDB 1.x's /write, token as ?p=.
		a = httpPost(t, svc.url("/write?db=x&u=lp-dev&p=tok-lp&precision=s"), "", []byte("lp_v1 v=1 1763820000"))
		if a.status != 204 || len(rowsOf(t, influx, testDB, `SELECT "v" FROM "lp_v1"`)) != 1 {
			t.Fatalf("/write: %d %s", a.status, a.raw)
		}
	})

	t.Run("CBOR and SenML-CBOR over WebSocket binary frames", func(t *testing.T) {
		dev := mustDialWS(t, svc.ws("/v1/ingest"), bearer("tok-cbor"))
		native := mustCBOR(t, map[string]any{"seq": 1, "measurement": "cbor_ws", "ts": 1763820200000,
			"metrics": map[string]any{"f": 21.5, "whole": 21, "b": false, "s": "on", "i": map[string]any{"value": 7, "type": "int"}}})
		if err := dev.conn.WriteMessage(gws.OpcodeBinary, native); err != nil {
			t.Fatal(err)
		}
		var ack ackOrError
		dev.nextJSON(t, &ack)
		if ack.Ack == nil || *ack.Ack != 1 {
			t.Fatalf("want ack 1 (a JSON text frame), got %+v", ack)
		}
		if got := fmt.Sprint(fieldTypes(t, influx, testDB, "cbor_ws")); got != "map[b:boolean f:float i:integer s:string whole:float]" {
			t.Fatalf("cbor_ws types %s", got)
		}
		senml := mustCBOR(t, map[string]any{"seq": 2, "measurement": "cbor_senml_ws", "senml": []any{
			map[int]any{-2: "", -3: 1763820200.0, 0: "temp", 1: "Cel", 2: 20.5},
			map[int]any{0: "open", 4: true},
			map[int]any{0: "mode", 3: "eco"},
		}})
		if err := dev.conn.WriteMessage(gws.OpcodeBinary, senml); err != nil {
			t.Fatal(err)
		}
		dev.nextJSON(t, &ack)
		if ack.Ack == nil || *ack.Ack != 2 {
			t.Fatalf("want ack 2, got %+v", ack)
		}
		if got := fmt.Sprint(fieldTypes(t, influx, testDB, "cbor_senml_ws")); got != "map[mode:string open:boolean temp:float]" {
			t.Fatalf("cbor_senml_ws types %s", got)
		}
		// A binary frame that is not CBOR still closes the socket with 1003.
		bad := mustDialWS(t, svc.ws("/v1/ingest"), bearer("tok-cbor"))
		_ = bad.conn.WriteMessage(gws.OpcodeBinary, []byte("plain bytes"))
		if code := bad.closeCode(t); code != 1003 {
			t.Fatalf("close code %d, want 1003", code)
		}
		// Line protocol in a text frame: detected, stored (no seq, so no ack).
		dev.send(t, "cbor_lp_ws,k=v n=1i 1763820200000000000")
		eventually(t, 15*time.Second, "line protocol frame stored", func() bool {
			return len(rowsOf(t, influx, testDB, `SELECT "n" FROM "cbor_lp_ws"`)) == 1
		})
	})

	t.Run("CBOR, SenML-CBOR and line protocol over MQTT", func(t *testing.T) {
		pub := newMQTTClient(t, broker.URL(), "http-e2e-cbor-pub")
		var mu sync.Mutex
		for _, p := range [][]byte{
			mustCBOR(t, map[string]any{"measurement": "cbor_mqtt", "metrics": map[string]any{"f": 1.5, "b": true, "s": "x", "i": map[string]any{"value": 3, "type": "int"}}}),
			mustCBOR(t, []any{map[int]any{-2: "", 0: "cbor_senml_mqtt_v", 2: 4.0}, map[int]any{0: "cbor_senml_mqtt_s", 3: "ok"}}),
			[]byte("cbor_lp_mqtt u=5u,t=\"s\""),
		} {
			mu.Lock()
			tok := pub.Publish("devices/mqtt-cbor/telemetry", 1, false, p)
			mu.Unlock()
			if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("publish: %v", tok.Error())
			}
		}
		eventually(t, 20*time.Second, "MQTT payloads stored", func() bool {
			return len(fieldTypes(t, influx, testDB, "cbor_mqtt")) == 4 && len(fieldTypes(t, influx, testDB, "telemetry")) >= 2 &&
				len(fieldTypes(t, influx, testDB, "cbor_lp_mqtt")) == 2
		})
		if got := fmt.Sprint(fieldTypes(t, influx, testDB, "cbor_mqtt")); got != "map[b:boolean f:float i:integer s:string]" {
			t.Fatalf("cbor_mqtt types %s", got)
		}
		tel := fieldTypes(t, influx, testDB, "telemetry")
		if tel["cbor_senml_mqtt_v"] != "float" || tel["cbor_senml_mqtt_s"] != "string" {
			t.Fatalf("senml-cbor types %v", tel)
		}
		if got := fmt.Sprint(fieldTypes(t, influx, testDB, "cbor_lp_mqtt")); got != "map[t:string u:integer]" {
			t.Fatalf("cbor_lp_mqtt types %s", got)
		}
	})
}

// A device's HTTP requests share its frame-rate bucket; the InfluxDB
// client's retry (its non-blocking writer) waits as Retry-After says.
func TestHTTPIngestRateLimitRetryAfter(t *testing.T) {
	influx := influxtest.Start(t)
	const db = "http_rate"
	svc := startService(t, influx, nil, tokensFile(t, "rl-dev", "tok-rl"), "-influx-bucket", db+"/autogen",
		"-device-frame-rate", "1", "-device-frame-burst", "1")
	waitReady(t, svc)

	// Without Retry-After this client would retry within 100 ms.
	client := influxdb2.NewClientWithOptions(svc.url(""), "tok-rl", influxdb2.DefaultOptions().
		SetBatchSize(1).SetFlushInterval(10).SetRetryInterval(50).SetMaxRetryInterval(100).
		SetMaxRetries(100).SetMaxRetryTime(60000))
	defer client.Close()
	blocking := client.WriteAPIBlocking("o", "b")
	if err := blocking.WriteRecord(context.Background(), "rl v=0 1763820000000000000"); err != nil {
		t.Fatalf("first write: %v", err)
	}
	err := blocking.WriteRecord(context.Background(), "rl v=-1 1763820000000000000")
	var he *influxhttp.Error
	if !errors.As(err, &he) || he.StatusCode != http.StatusTooManyRequests || he.RetryAfter != 1 {
		t.Fatalf("second write at once: %v (want 429 with Retry-After 1)", err)
	}

	// The non-blocking writer keeps a refused batch and retries it, once
	// the Retry-After it read has passed, when its next batch comes (it
	// has no timer of its own). The points are paced a little slower than
	// the device's rate, so every refused one lands in the end.
	w := client.WriteAPI("o", "b")
	var mu sync.Mutex
	var refusals []uint
	w.SetWriteFailedCallback(func(_ string, e influxhttp.Error, _ uint) bool {
		mu.Lock()
		refusals = append(refusals, e.RetryAfter)
		mu.Unlock()
		return true
	})
	// Flush is not called: it sends the retry queue at once, ignoring
	// Retry-After, and drops what fails; the 10 ms flush interval sends.
	w.WriteRecord("rl v=1 1763820001000000000") // meets an empty bucket
	pace := time.NewTicker(1200 * time.Millisecond)
	defer pace.Stop()
	stored := func(v int) bool {
		return influx.Count(t, db, fmt.Sprintf(`SELECT count("v") FROM "rl" WHERE "v" = %d`, v)) == 1
	}
	for i := 2; !stored(1) || !stored(2); i++ {
		if i > 20 {
			t.Fatal("the refused points were never stored")
		}
		<-pace.C
		w.WriteRecord(fmt.Sprintf("rl v=%d %d", i, 1763820000000000000+int64(i)*1e9))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(refusals) == 0 {
		t.Fatal("no batch was refused: the test did not exercise the retry")
	}
	for _, ra := range refusals {
		if ra != 1 {
			t.Fatalf("the client read no Retry-After of 1 s from a 429: %v", refusals)
		}
	}
}
