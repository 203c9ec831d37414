package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/storage/influxtest"
)

// liveStreamMsg is any /v1/live message, with the fields of the protocol
// additions (positions, resume, persisted).
type liveStreamMsg struct {
	Type     string `json:"type"`
	Sub      string `json:"sub"`
	Pos      int64  `json:"pos"`
	Readings []struct {
		DeviceID    string         `json:"device_id"`
		Measurement string         `json:"measurement"`
		TS          int64          `json:"ts"`
		Pos         int64          `json:"pos"`
		Fields      map[string]any `json:"fields"`
	} `json:"readings"`
	Replayed    int              `json:"replayed"`
	FromHistory int              `json:"from_history"`
	Missing     int              `json:"missing"`
	Reason      string           `json:"reason"`
	Upto        map[string]int64 `json:"upto"`
	Refused     []struct {
		Pos         int64  `json:"pos"`
		DeviceID    string `json:"device_id"`
		Measurement string `json:"measurement"`
		TS          int64  `json:"ts"`
		Code        string `json:"code"`
		Message     string `json:"message"`
	} `json:"refused"`
}

// streamingDevice sends one reading ({"n": i}) every interval over its own
// socket until stopped, reading acks as they come.
type streamingDevice struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	sent int
}

func startStreamingDevice(t *testing.T, svc *service, token string, interval time.Duration) *streamingDevice {
	t.Helper()
	c := mustDialWS(t, svc.ws("/v1/ingest"), bearer(token))
	d := &streamingDevice{stop: make(chan struct{}), done: make(chan struct{})}
	base := time.Now().Add(-time.Minute).UnixMilli()
	go func() {
		defer close(d.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-d.stop:
				return
			case <-tick.C:
			}
			if err := c.conn.WriteString(fmt.Sprintf(`{"seq":%d,"ts":%d,"measurement":"counter","metrics":{"n":%d}}`, i+1, base+int64(i), i)); err != nil {
				return
			}
			d.mu.Lock()
			d.sent = i + 1
			d.mu.Unlock()
		}
	}()
	t.Cleanup(func() { d.finish() })
	return d
}

// finish stops the device and returns how many readings it sent.
func (d *streamingDevice) finish() int {
	select {
	case <-d.stop:
	default:
		close(d.stop)
	}
	<-d.done
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sent
}

// sseStream reads /v1/live/sse events: each message with its event id.
type sseStream struct {
	cancel context.CancelFunc
	msgs   chan sseEvent
}

type sseEvent struct {
	id  string
	msg liveStreamMsg
}

func openSSE(t *testing.T, rawURL, lastEventID string) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		t.Fatalf("sse: %s", resp.Status)
	}
	s := &sseStream{cancel: cancel, msgs: make(chan sseEvent, 10000)}
	go func() {
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "id: "):
				ev.id = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "data: "):
				_ = json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev.msg)
			case line == "" && ev.msg.Type != "":
				s.msgs <- ev
				ev = sseEvent{}
			}
		}
	}()
	t.Cleanup(cancel)
	return s
}

// received collects the "n" of every reading a client gets, in order.
type received struct {
	ns      []int
	lastPos int64
	lastID  string
}

func (r *received) add(m liveStreamMsg) {
	if m.Type == "readings" {
		for _, rd := range m.Readings {
			n, _ := rd.Fields["n"].(float64)
			r.ns = append(r.ns, int(n))
		}
	}
	if m.Pos > 0 {
		r.lastPos = m.Pos
	}
}

// checkExactlyOnce fails unless ns is 0…n-1, in order, each once.
func checkExactlyOnce(t *testing.T, who string, ns []int, n int) {
	t.Helper()
	ok := len(ns) == n
	for i := 0; ok && i < n; i++ {
		ok = ns[i] == i
	}
	if !ok {
		t.Fatalf("%s received %d readings %v, want 0…%d once each, in order", who, len(ns), ns, n-1)
	}
}

// TestLiveResumeAfterDisconnect: a dashboard socket and an SSE stream
// (with Last-Event-ID) disconnected for 5 s while a device streams get
// exactly the readings they missed, once each, in order, then live. The
// window is kept small so that most of the missed readings come back from
// InfluxDB (issue 20).
func TestLiveResumeAfterDisconnect(t *testing.T) {
	influx := influxtest.Start(t)
	svc := startService(t, influx, nil, tokensFile(t, "res-dev", "tok-res"), "-live-resume-window", "8")
	waitReady(t, svc)

	dash := mustDialWS(t, svc.ws("/v1/live"), bearer(testAdminToken))
	dash.send(t, `{"op":"subscribe","id":"r","devices":["res-dev"]}`)
	var snap liveStreamMsg
	dash.nextJSON(t, &snap)
	if snap.Type != "snapshot" || snap.Pos == 0 {
		t.Fatalf("snapshot %+v, want one with a position", snap)
	}
	sseURL := svc.url("/v1/live/sse?sub=r&devices=res-dev&token=" + url.QueryEscape(testAdminToken))
	sse := openSSE(t, sseURL, "")
	var wsGot, sseGot received
	for ev := range sse.msgs {
		sseGot.lastID = ev.id
		if ev.msg.Type == "snapshot" {
			break
		}
	}

	dev := startStreamingDevice(t, svc, "tok-res", 20*time.Millisecond)
	for len(wsGot.ns) < 10 {
		var m liveStreamMsg
		dash.nextJSON(t, &m)
		wsGot.add(m)
	}
	for len(sseGot.ns) < 10 {
		select {
		case ev := <-sse.msgs:
			sseGot.add(ev.msg)
			sseGot.lastID = ev.id
		case <-time.After(15 * time.Second):
			t.Fatal("no SSE readings")
		}
	}
	if strconv.FormatInt(sseGot.lastPos, 10) != sseGot.lastID {
		t.Fatalf("SSE event id %q is not the message's position %d", sseGot.lastID, sseGot.lastPos)
	}
	_ = dash.conn.WriteClose(1000, nil)
	sse.cancel()
	// Drop what was in flight when the clients went away: a client only
	// knows what it has read.
	time.Sleep(5 * time.Second) // the disconnection itself, not a wait for a condition

	dash2 := mustDialWS(t, svc.ws("/v1/live"), bearer(testAdminToken))
	dash2.send(t, fmt.Sprintf(`{"op":"subscribe","id":"r","devices":["res-dev"],"since":%d}`, wsGot.lastPos))
	sse2 := openSSE(t, sseURL, sseGot.lastID)

	// Let the device stream live for a moment after the resume, then stop
	// it and wait for its last reading on both.
	var resumedWS, resumedSSE liveStreamMsg
	for resumedWS.Type == "" {
		var m liveStreamMsg
		dash2.nextJSON(t, &m)
		switch m.Type {
		case "resumed", "reset", "snapshot":
			resumedWS = m
		}
		wsGot.add(m)
	}
	time.Sleep(300 * time.Millisecond) // live streaming after the resume
	sent := dev.finish()
	for len(wsGot.ns) < sent {
		var m liveStreamMsg
		dash2.nextJSON(t, &m)
		wsGot.add(m)
	}
	for len(sseGot.ns) < sent {
		select {
		case ev := <-sse2.msgs:
			if ev.msg.Type == "resumed" || ev.msg.Type == "reset" {
				resumedSSE = ev.msg
			}
			sseGot.add(ev.msg)
		case <-time.After(15 * time.Second):
			t.Fatalf("SSE: %d of %d readings", len(sseGot.ns), sent)
		}
	}
	t.Logf("sent %d; ws resumed %+v; sse resumed %+v", sent, resumedWS, resumedSSE)
	if resumedWS.Type != "resumed" || resumedSSE.Type != "resumed" {
		t.Fatalf("ws %q, sse %q: want both resumed", resumedWS.Type, resumedSSE.Type)
	}
	if resumedWS.FromHistory == 0 || resumedSSE.FromHistory == 0 || resumedWS.Missing != 0 {
		t.Fatalf("ws %+v sse %+v: want missed readings from InfluxDB, none missing", resumedWS, resumedSSE)
	}
	checkExactlyOnce(t, "dashboard", wsGot.ns, sent)
	checkExactlyOnce(t, "SSE stream", sseGot.ns, sent)
	m := scrape(t, svc)
	if m.get("telemetryd_live_resumes_total") != 2 || m.get("telemetryd_live_readings_replayed_from_history_total") < float64(resumedWS.FromHistory+resumedSSE.FromHistory) {
		t.Fatalf("resume metrics: %v", m.names("telemetryd_live_re"))
	}
}
