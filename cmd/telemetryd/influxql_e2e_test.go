package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/storage/influxtest"
)

// TestTagFieldConflictRejectedAloneEndToEnd: one frame carries a reading
// whose tag and field share a name among good ones. That reading alone is
// refused with tag_field_conflict; the others are stored and read back
// through the history API (InfluxQL), and hostile names in the API's query
// answer 400 and touch nothing.
func TestTagFieldConflictRejectedAloneEndToEnd(t *testing.T) {
	influx := influxtest.Start(t)
	svc := startService(t, influx, nil, tokensFile(t, "tank-9", "tok-tank"))
	waitReady(t, svc)
	dev := mustDialWS(t, svc.ws("/v1/ingest"), bearer("tok-tank"))
	const ts int64 = 1763820000000 // ms
	dev.send(t, fmt.Sprintf(`{"seq":3,"readings":[
		{"ts":%d,"measurement":"tank","metrics":{"level":1}},
		{"ts":%d,"measurement":"tank","metrics":{"level":2},"tags":{"level":"high"}},
		{"ts":%d,"measurement":"tank","metrics":{"level":3},"tags":{"site":"p1"}}
	]}`, ts, ts+1, ts+2))
	var rej, ack ackOrError
	dev.nextJSON(t, &rej)
	dev.nextJSON(t, &ack)
	if rej.Error == nil || len(rej.Error.Rejected) != 1 || rej.Error.Rejected[0].Index != 1 || rej.Error.Rejected[0].Code != "tag_field_conflict" {
		t.Fatalf("rejections %s", mustJSON(rej))
	}
	if ack.Ack == nil || *ack.Ack != 3 {
		t.Fatalf("want ack 3, got %s", mustJSON(ack))
	}
	rows := influx.Query(t, testDB, `SELECT "level" FROM "tank"`)
	if len(rows) != 1 || fmt.Sprint(rows[0].Values) != fmt.Sprintf("[[%d 1] [%d 3]]", ts*1_000_000, (ts+2)*1_000_000) {
		t.Fatalf("stored %+v", rows)
	}

	get := func(q url.Values) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, svc.url("/api/v1/history?"+q.Encode()), nil)
		req.Header.Set("Authorization", "Bearer "+testAdminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	rng := url.Values{"since": {"2025-11-22T13:59:00Z"}, "until": {"2025-11-22T14:01:00Z"}}
	q := url.Values{"device": {"tank-9"}, "measurement": {"tank"}, "field": {"level"}}
	for k, v := range rng {
		q[k] = v
	}
	code, body := get(q)
	var h struct {
		Points [][2]json.Number `json:"points"`
	}
	if code != http.StatusOK || json.Unmarshal([]byte(body), &h) != nil || fmt.Sprint(h.Points) != fmt.Sprintf("[[%d 1] [%d 3]]", ts*1_000_000, (ts+2)*1_000_000) {
		t.Fatalf("history %d %s", code, body)
	}
	for _, hostile := range []url.Values{
		{"device": {`tank-9' OR '1'='1`}, "field": {"level"}},
		{"device": {"tank-9"}, "measurement": {`tank"; DROP MEASUREMENT "tank`}, "field": {"level"}},
		{"device": {"tank-9"}, "field": {`level"::field FROM /.*/ --`}},
	} {
		for k, v := range rng {
			hostile[k] = v
		}
		if code, body := get(hostile); code != http.StatusBadRequest {
			t.Fatalf("%v: %d %s", hostile, code, body)
		}
	}
	if rows := influx.Query(t, testDB, `SELECT count("level") FROM "tank"`); len(rows) != 1 || fmt.Sprint(rows[0].Values[0][1]) != "2" {
		t.Fatalf("after the hostile queries: %+v", rows)
	}
	m := scrape(t, svc)
	if m.get("telemetryd_readings_rejected_total", `reason="tag_field_conflict"`) != 1 {
		t.Fatalf("metrics %v", m.names("telemetryd_readings_rejected"))
	}
}

// TestStartAgainstAServerThatIsNoInfluxDB: start-up against a web server
// that answers /ping and /health with 404 stops with one clear error
// instead of retrying.
func TestStartAgainstAServerThatIsNoInfluxDB(t *testing.T) {
	var mu sync.Mutex
	var paths []string
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.URL.Path)
		mu.Unlock()
		http.NotFound(w, r)
	}))
	defer web.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	noEnv := func(string) (string, bool) { return "", false }
	var stderr syncBuffer
	err := run(ctx, []string{
		"-http-addr", "127.0.0.1:0", "-influx-url", web.URL, "-mqtt-url", "",
		"-device-tokens", tokensFile(t, "d-1", "tok-d"), "-data-dir", t.TempDir(),
	}, noEnv, &stderr, make(chan string, 1))
	if err == nil || !strings.Contains(err.Error(), "not an InfluxDB 1.x, 2.x or 3.x server") || ctx.Err() != nil {
		t.Fatalf("run: %v (ctx %v)\n%s", err, ctx.Err(), tail(stderr.String(), 4000))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(paths) != 2 {
		t.Fatalf("requests %v, want one /ping and one /health", paths)
	}
}
