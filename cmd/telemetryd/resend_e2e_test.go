package main

import (
	"testing"

	"github.com/telemetryd/telemetryd/storage/influxtest"
)

// TestResendAfterDroppedConnection: a device sends a frame without
// timestamps, its connection drops before it reads the ack, and it
// resends the frame on a new connection: the reading is stored once
// (issue 17.10). A frame with the same seq but other content (a device
// that restarted its counter) is stored.
func TestResendAfterDroppedConnection(t *testing.T) {
	influx := influxtest.Start(t)
	svc := startService(t, influx, nil, tokensFile(t, "resend-dev", "tok-resend"))
	const frame = `{"seq":7,"measurement":"resend","metrics":{"n":1,"m":2}}`

	first := mustDialWS(t, svc.ws("/v1/ingest"), bearer("tok-resend"))
	first.send(t, frame)
	// The ack is on its way (the frame is stored); the device never reads
	// it: its connection drops.
	first.next(t, 15e9)
	_ = first.conn.NetConn().Close()

	second := mustDialWS(t, svc.ws("/v1/ingest"), bearer("tok-resend"))
	second.send(t, frame)
	var a ackOrError
	second.nextJSON(t, &a)
	if a.Ack == nil || *a.Ack != 7 {
		t.Fatalf("resend answered %s, want its ack", mustJSON(a))
	}
	// Then a different frame under the same seq, and one more frame whose
	// ack proves everything before it is stored.
	second.send(t, `{"seq":7,"measurement":"resend","metrics":{"n":3,"m":4}}`)
	second.nextJSON(t, &a)
	if a.Ack == nil || *a.Ack != 7 {
		t.Fatalf("new content under seq 7 answered %s, want its ack", mustJSON(a))
	}
	if n := influx.CountPoints(t, testDB, "resend", "n"); n != 2 {
		t.Fatalf("%d points stored, want 2 (the resend once, the new content once)", n)
	}
	if v := metric(t, svc, "telemetryd_ws_resent_frames_total"); v != 1 {
		t.Fatalf("telemetryd_ws_resent_frames_total = %v, want 1", v)
	}
}
