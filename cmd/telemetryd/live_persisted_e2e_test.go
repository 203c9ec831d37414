package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/storage/influxtest"
)

// TestLivePersistedWatermark: a dashboard that asks for persisted messages
// sees a reading live first, then a persisted message covering its
// position, and by then the reading is queryable in InfluxDB. A reading that
// InfluxDB refuses (a field whose type another writer fixed first, which the
// type guard could not know) is reported as refused (issue 20).
func TestLivePersistedWatermark(t *testing.T) {
	influx := influxtest.Start(t)
	svc := startService(t, influx, nil, tokensFile(t, "wm-dev", "tok-wm"))
	waitReady(t, svc)
	dash := mustDialWS(t, svc.ws("/v1/live"), bearer(testAdminToken))
	dash.send(t, `{"op":"subscribe","id":"p","devices":["wm-dev"],"persisted":true}`)
	var m liveStreamMsg
	if dash.nextJSON(t, &m); m.Type != "snapshot" {
		t.Fatalf("first message %+v, want the snapshot", m)
	}
	if raw := dash.nextJSON(t, &m); m.Type != "persisted" {
		t.Fatalf("second message %s, want the watermark", raw)
	}
	dev := mustDialWS(t, svc.ws("/v1/ingest"), bearer("tok-wm"))

	// nextOf returns the next message of type typ, skipping others.
	nextOf := func(typ string) (liveStreamMsg, string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			var m liveStreamMsg
			raw := dash.nextJSON(t, &m)
			if m.Type == typ {
				return m, raw
			}
		}
		t.Fatalf("no %s message", typ)
		return liveStreamMsg{}, ""
	}

	const ts = int64(1763820000000) // ms
	dev.send(t, fmt.Sprintf(`{"seq":1,"ts":%d,"measurement":"env","metrics":{"t":21.5}}`, ts))
	live, _ := nextOf("readings")
	if len(live.Readings) != 1 || live.Readings[0].Pos == 0 {
		t.Fatalf("live %+v, want one reading with a position", live)
	}
	pos := live.Readings[0].Pos
	for {
		p, raw := nextOf("persisted")
		if p.Upto["wm-dev"] < pos {
			continue
		}
		// Durable by now: queryable.
		rows := influx.Query(t, testDB, `SELECT * FROM "env" WHERE "device_id"='wm-dev'`)
		if len(rows) != 1 || len(rows[0].Values) != 1 {
			t.Fatalf("persisted %s arrived before the reading was queryable: %+v", raw, rows)
		}
		if len(p.Refused) != 0 {
			t.Fatalf("persisted %s: nothing was refused", raw)
		}
		break
	}

	// Another writer stored probe.mode as a string after the service
	// started: the guard allows a number, InfluxDB refuses it.
	// (Field types are per shard in InfluxDB 1.x: the same time range.)
	writeInflux(t, influx, fmt.Sprintf("probe,device_id=other mode=\"auto\" %d\n", (ts+100)*1e6))
	dev.send(t, fmt.Sprintf(`{"seq":2,"ts":%d,"measurement":"probe","metrics":{"mode":3}}`, ts+1))
	live, _ = nextOf("readings")
	refusedPos := live.Readings[0].Pos
	for {
		p, raw := nextOf("persisted")
		if p.Upto["wm-dev"] < refusedPos {
			continue
		}
		if len(p.Refused) != 1 || p.Refused[0].Pos != refusedPos || p.Refused[0].Code != "storage_rejected" ||
			p.Refused[0].Measurement != "probe" || p.Refused[0].TS != (ts+1)*1e6 {
			t.Fatalf("persisted %s, want position %d refused by storage", raw, refusedPos)
		}
		t.Logf("refused: %s", raw)
		break
	}
}
