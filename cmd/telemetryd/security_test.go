package main

// Security tests against the real server over real sockets, with a real
// InfluxDB (and Mosquitto in security_mqtt_test.go): every rejected path is
// exercised with its exact status, error code or close code, and InfluxDB is
// queried to show that nothing of it was stored.

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"github.com/telemetryd/telemetryd/storage/influxtest"
)

// TestSecurity shares one InfluxDB between its parts, each in its own
// database.
func TestSecurity(t *testing.T) {
	influx := influxtest.Start(t)
	t.Run("DevicePaths", func(t *testing.T) { testSecurityDevicePaths(t, influx) })
	t.Run("ConnectionLimits", func(t *testing.T) { testSecurityConnectionLimits(t, influx) })
	t.Run("Viewers", func(t *testing.T) { testSecurityViewers(t, influx) })
	t.Run("LabelInjection", func(t *testing.T) { testSecurityLabelInjection(t, influx) })
	t.Run("WSS", func(t *testing.T) { testSecurityWSS(t, influx) })
	t.Run("MosquittoACL", func(t *testing.T) { testSecurityMosquittoACL(t, influx) })
	t.Run("MQTTOverTLS", func(t *testing.T) { testSecurityMQTTOverTLS(t, influx) })
	t.Run("InfluxTLS", func(t *testing.T) { testSecurityInfluxTLS(t, influx) })
	t.Run("CLI", func(t *testing.T) { testSecurityCLI(t, influx) })
}

// adminCall sends an admin API request to svc and decodes the answer.
func adminCall(t *testing.T, svc *service, method, path, body string) (int, map[string]any) {
	t.Helper()
	return adminCallURL(t, http.DefaultClient, svc.url(path), method, body)
}

func adminCallURL(t *testing.T, client *http.Client, url, method, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testAdminToken)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s %s: answer %q is not JSON", method, url, raw)
		}
	}
	return resp.StatusCode, out
}

// get walks a decoded JSON object.
func get(m map[string]any, path ...string) any {
	var v any = m
	for _, p := range path {
		o, _ := v.(map[string]any)
		v = o[p]
	}
	return v
}

func errCode(m map[string]any) string { s, _ := get(m, "error", "code").(string); return s }

// provision creates a device through the admin API and returns its id and token.
func provision(t *testing.T, svc *service, body string) (string, string) {
	t.Helper()
	status, out := adminCall(t, svc, "POST", "/api/v1/devices", body)
	if status != http.StatusCreated {
		t.Fatalf("create device %s: %d %v", body, status, out)
	}
	return get(out, "device", "id").(string), get(out, "token").(string)
}

// metric returns the value of one sample of GET /metrics (series is the
// name with its labels, as exposed), or -1 when it is absent.
func metric(t *testing.T, svc *service, series string) float64 {
	t.Helper()
	resp, err := http.Get(svc.url("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return -1
}

// pointsOf counts every point stored for device id, in any measurement.
func pointsOf(t *testing.T, influx *influxtest.Server, db, id string) int64 {
	t.Helper()
	var n int64
	for _, s := range influx.Query(t, db, `SELECT COUNT(*) FROM /.*/ WHERE "device_id" = '`+id+`'`) {
		for _, row := range s.Values {
			for _, v := range row[1:] {
				if num, ok := v.(json.Number); ok {
					c, _ := num.Int64()
					n = max(n, c) // COUNT(*) gives one column per field
				}
			}
		}
	}
	return n
}

// storedSeqs returns the "n" values stored for device id in measurement.
func storedSeqs(t *testing.T, influx *influxtest.Server, db, measurement, id string) map[int64]bool {
	t.Helper()
	out := map[int64]bool{}
	for _, s := range influx.Query(t, db, `SELECT "n" FROM `+influxtest.QuoteIdent(measurement)+` WHERE "device_id" = '`+id+`'`) {
		for _, v := range s.Values {
			n, _ := v[1].(json.Number).Int64()
			out[n] = true
		}
	}
	return out
}

// sendAcked sends a reading with seq n (field n) and waits for its ack,
// which the service sends once the reading is stored.
func sendAcked(t *testing.T, c *wsClient, measurement string, n int) {
	t.Helper()
	c.send(t, fmt.Sprintf(`{"seq":%d,"measurement":%q,"metrics":{"n":%d}}`, n, measurement, n))
	var a ackOrError
	c.nextJSON(t, &a)
	if a.Ack == nil || *a.Ack != uint64(n) {
		t.Fatalf("want ack %d, got %s", n, mustJSON(a))
	}
}

func withHeader(h http.Header, k, v string) http.Header {
	h = h.Clone()
	h.Set(k, v)
	return h
}

// dialStatus dials and expects the upgrade to be refused with status and code.
func dialStatus(t *testing.T, url string, h http.Header, status int, code string) {
	t.Helper()
	c, resp, err := dialWS(t, url, h)
	if err == nil {
		c.conn.WriteClose(1000, nil)
		t.Fatalf("dial %s: upgraded, want %d %s", url, status, code)
	}
	if resp == nil {
		t.Fatalf("dial %s: %v, want HTTP %d", url, err, status)
	}
	defer resp.Body.Close()
	var body map[string]any
	raw, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(raw, &body)
	if resp.StatusCode != status || errCode(body) != code {
		t.Fatalf("dial %s: %d %s, want %d %s", url, resp.StatusCode, raw, status, code)
	}
	if strings.Contains(string(raw), "tdv_") || strings.Contains(string(raw), testAdminToken) {
		t.Fatalf("a token was echoed: %s", raw)
	}
}

// testSecurityDevicePaths runs every device-side refusal against one
// service: bad token, revocation mid-connection, rotation grace, gateway
// for a foreign device, wrong Origin, oversized frame, rate limit.
func testSecurityDevicePaths(t *testing.T, influx *influxtest.Server) {
	const db = "sec_device_paths"
	svc := startService(t, influx, nil, tokensFile(t), "-influx-bucket", db+"/autogen",
		"-allowed-origins", "https://ops.example",
		"-max-frame-bytes", "4096",
		"-device-frame-rate", "1", "-device-frame-burst", "3", "-rate-limit-close", "5")
	ingestURL := svc.ws("/v1/ingest")

	t.Run("bad token", func(t *testing.T) {
		id, tok := provision(t, svc, `{"name":"victim"}`)
		for _, h := range []http.Header{nil, bearer(""), bearer("tdv_" + strings.Repeat("A", 43)), bearer(tok + "x"),
			bearer(testAdminToken), {"Authorization": {"Basic " + tok}}} {
			dialStatus(t, ingestURL, h, http.StatusUnauthorized, "unauthorized")
		}
		// ?token= works for constrained devices; a wrong one does not.
		dialStatus(t, ingestURL+"?token=tdv_nope", nil, http.StatusUnauthorized, "unauthorized")
		ok := mustDialWS(t, ingestURL+"?token="+tok, nil)
		sendAcked(t, ok, "sec_badtoken", 1)
		if n := pointsOf(t, influx, db, id); n != 1 {
			t.Fatalf("%d points for the device, want only the 1 sent with its token", n)
		}
	})

	t.Run("revoked mid-connection", func(t *testing.T) {
		id, tok := provision(t, svc, `{"name":"to-revoke"}`)
		dev := mustDialWS(t, ingestURL, bearer(tok))
		sendAcked(t, dev, "sec_revoke", 1)
		if status, out := adminCall(t, svc, "POST", "/api/v1/devices/"+id+"/revoke", ""); status != 200 || get(out, "device", "revoked") != true {
			t.Fatalf("revoke: %d %v", status, out)
		}
		// Frames sent after the revocation returned are never stored,
		// whether or not they still reach the server.
		for n := 2; n <= 4; n++ {
			_ = dev.conn.WriteString(fmt.Sprintf(`{"seq":%d,"measurement":"sec_revoke","metrics":{"n":%d}}`, n, n))
		}
		if code := dev.closeCode(t); code != 1008 {
			t.Fatalf("close code %d, want 1008", code)
		}
		dialStatus(t, ingestURL, bearer(tok), http.StatusUnauthorized, "unauthorized")
		// Barrier: another device's later reading is stored, so anything
		// of the revoked one would be too.
		_, other := provision(t, svc, `{"name":"barrier"}`)
		sendAcked(t, mustDialWS(t, ingestURL, bearer(other)), "sec_revoke_barrier", 1)
		if got := storedSeqs(t, influx, db, "sec_revoke", id); len(got) != 1 || !got[1] {
			t.Fatalf("stored %v, want only seq 1 (before the revocation)", got)
		}
	})

	t.Run("rotation grace", func(t *testing.T) {
		id, old := provision(t, svc, `{"name":"rotating"}`)
		status, out := adminCall(t, svc, "POST", "/api/v1/devices/"+id+"/rotate", `{"grace":"4s"}`)
		fresh, _ := get(out, "token").(string)
		if status != 200 || !strings.HasPrefix(fresh, "tdv_") || fresh == old {
			t.Fatalf("rotate: %d %v", status, out)
		}
		// Within the grace both tokens work (and store).
		sendAcked(t, mustDialWS(t, ingestURL, bearer(old)), "sec_rotate", 1)
		sendAcked(t, mustDialWS(t, ingestURL, bearer(fresh)), "sec_rotate", 2)
		// Then the old one is refused; the new one still works.
		eventually(t, 20*time.Second, "old token refused after the grace", func() bool {
			c, resp, err := dialWS(t, ingestURL, bearer(old))
			if err == nil {
				c.conn.WriteClose(1000, nil)
				return false
			}
			return resp != nil && resp.StatusCode == http.StatusUnauthorized
		})
		dialStatus(t, ingestURL, bearer(old), http.StatusUnauthorized, "unauthorized")
		sendAcked(t, mustDialWS(t, ingestURL, bearer(fresh)), "sec_rotate", 3)
		if got := storedSeqs(t, influx, db, "sec_rotate", id); len(got) != 3 {
			t.Fatalf("stored %v, want seqs 1..3", got)
		}
	})

	t.Run("gateway reporting for a foreign device", func(t *testing.T) {
		gw, gwTok := provision(t, svc, `{"name":"gw","kind":"gateway","labels":{"site":"plant-3"}}`)
		child, _ := provision(t, svc, `{"name":"child","gateway":"`+gw+`","labels":{"site":"plant-3","model":"x1"}}`)
		foreign, _ := provision(t, svc, `{"name":"foreign"}`)
		c := mustDialWS(t, ingestURL, bearer(gwTok))
		c.send(t, fmt.Sprintf(`{"seq":1,"readings":[
			{"device":%q,"measurement":"sec_gw","metrics":{"n":1}},
			{"device":%q,"measurement":"sec_gw","metrics":{"n":2}},
			{"measurement":"sec_gw","metrics":{"n":3}},
			{"device":"not-even-registered","measurement":"sec_gw","metrics":{"n":4}}]}`, child, foreign))
		var rej, ack ackOrError
		c.nextJSON(t, &rej)
		c.nextJSON(t, &ack)
		if rej.Error == nil || rej.Error.Code != "rejected" || len(rej.Error.Rejected) != 2 ||
			rej.Error.Rejected[0].Index != 1 || rej.Error.Rejected[0].Code != "forbidden_device" ||
			rej.Error.Rejected[1].Index != 3 || rej.Error.Rejected[1].Code != "forbidden_device" {
			t.Fatalf("error frame %s", mustJSON(rej))
		}
		if ack.Ack == nil || *ack.Ack != 1 {
			t.Fatalf("want ack 1, got %s", mustJSON(ack))
		}
		if n := pointsOf(t, influx, db, foreign); n != 0 {
			t.Fatalf("%d points stored for the foreign device", n)
		}
		if n := pointsOf(t, influx, db, "not-even-registered"); n != 0 {
			t.Fatalf("%d points stored for an unregistered device", n)
		}
		rows := influx.Query(t, db, `SELECT "n","model","site" FROM "sec_gw" WHERE "device_id"='`+child+`'`)
		if len(rows) != 1 || fmt.Sprint(rows[0].Values[0][1:]) != "[1 x1 plant-3]" {
			t.Fatalf("child reading (with the child's labels) = %v", rows)
		}
		if got := storedSeqs(t, influx, db, "sec_gw", gw); len(got) != 1 || !got[3] {
			t.Fatalf("gateway's own reading: %v", got)
		}
	})

	t.Run("wrong origin", func(t *testing.T) {
		id, tok := provision(t, svc, `{"name":"browser-device"}`)
		for _, origin := range []string{"https://evil.example", "http://ops.example", "https://ops.example.evil.example", "null"} {
			dialStatus(t, ingestURL, withHeader(bearer(tok), "Origin", origin), http.StatusForbidden, "origin_not_allowed")
			dialStatus(t, svc.ws("/v1/live"), withHeader(bearer(testAdminToken), "Origin", origin), http.StatusForbidden, "origin_not_allowed")
		}
		// The listed origin, and clients sending none, are let through.
		c := mustDialWS(t, ingestURL, withHeader(bearer(tok), "Origin", "https://ops.example"))
		mustDialWS(t, svc.ws("/v1/live"), withHeader(bearer(testAdminToken), "Origin", "https://ops.example"))
		sendAcked(t, c, "sec_origin", 1)
		if n := pointsOf(t, influx, db, id); n != 1 {
			t.Fatalf("%d points, want the 1 from the allowed origin", n)
		}
	})

	t.Run("oversized frame", func(t *testing.T) {
		id, tok := provision(t, svc, `{"name":"big"}`)
		c := mustDialWS(t, ingestURL, bearer(tok))
		c.send(t, `{"seq":1,"measurement":"sec_big","metrics":{"s":"`+strings.Repeat("x", 5000)+`"}}`)
		if code := c.closeCode(t); code != 1009 {
			t.Fatalf("close code %d, want 1009", code)
		}
		eventually(t, 5*time.Second, "1009 counted", func() bool {
			return metric(t, svc, `telemetryd_ws_policy_closes_total{reason="frame_too_big"}`) == 1
		})
		// A frame just under the limit is fine.
		c2 := mustDialWS(t, ingestURL, bearer(tok))
		c2.send(t, `{"seq":2,"measurement":"sec_big","metrics":{"s":"`+strings.Repeat("x", 3900)+`"}}`)
		var a ackOrError
		c2.nextJSON(t, &a)
		if a.Ack == nil || *a.Ack != 2 {
			t.Fatalf("want ack 2, got %s", mustJSON(a))
		}
		if n := pointsOf(t, influx, db, id); n != 1 {
			t.Fatalf("%d points, want only the frame under the limit", n)
		}
	})

	t.Run("rate limit", func(t *testing.T) {
		id, tok := provision(t, svc, `{"name":"chatty"}`)
		c := mustDialWS(t, ingestURL, bearer(tok))
		for n := 1; n <= 3; n++ { // the burst
			sendAcked(t, c, "sec_rate", n)
		}
		for n := 4; n <= 40; n++ {
			if c.conn.WriteString(fmt.Sprintf(`{"seq":%d,"measurement":"sec_rate","metrics":{"n":%d}}`, n, n)) != nil {
				break
			}
		}
		limited := map[int64]bool{}
		acked := map[int64]bool{}
	read:
		for {
			select {
			case m := <-c.msgs:
				var a ackOrError
				if err := json.Unmarshal([]byte(m), &a); err != nil {
					t.Fatal(err)
				}
				switch {
				case a.Ack != nil:
					acked[int64(*a.Ack)] = true
				case a.Error != nil && a.Error.Code == "rate_limited":
					if a.Error.Seq == nil || a.Error.RetryAfterMS <= 0 {
						t.Fatalf("rate_limited without seq or retry_after_ms: %s", m)
					}
					limited[int64(*a.Error.Seq)] = true
				default:
					t.Fatalf("unexpected answer %s", m)
				}
			case <-c.closed:
				break read
			case <-time.After(15 * time.Second):
				t.Fatal("socket not closed")
			}
		}
		for len(c.msgs) > 0 { // answers queued before the close
			var a ackOrError
			_ = json.Unmarshal([]byte(<-c.msgs), &a)
			if a.Error != nil && a.Error.Seq != nil && a.Error.Code == "rate_limited" {
				limited[int64(*a.Error.Seq)] = true
			}
		}
		if code := c.closeCode(t); code != 1013 {
			t.Fatalf("close code %d, want 1013", code)
		}
		if len(limited) < 5 {
			t.Fatalf("%d frames rate_limited before the close, want at least 5", len(limited))
		}
		if m := metric(t, svc, `telemetryd_ws_policy_closes_total{reason="rate_limited"}`); m != 1 {
			t.Fatalf("rate-limit closes counted %v, want 1", m)
		}
		if m := metric(t, svc, `telemetryd_frames_rejected_total{reason="rate_limited",transport="ws"}`); m < float64(len(limited)) {
			t.Fatalf("rate_limited frames counted %v, want ≥ %d", m, len(limited))
		}
		stored := storedSeqs(t, influx, db, "sec_rate", id)
		for n := range limited {
			if stored[n] {
				t.Errorf("rate-limited frame %d was stored", n)
			}
		}
		for n := range acked {
			if !stored[n] {
				t.Errorf("acked frame %d not stored", n)
			}
		}
	})
}

// testSecurityConnectionLimits covers the per-device and total connection
// limits and the handshake and idle timeouts (slow loris).
func testSecurityConnectionLimits(t *testing.T, influx *influxtest.Server) {
	const db = "sec_conn_limits"
	svc := startService(t, influx, nil, tokensFile(t), "-influx-bucket", db+"/autogen",
		"-max-conns-per-device", "2", "-max-conns", "3",
		"-read-header-timeout", "1s", "-ws-ping-interval", "300ms")
	ingestURL := svc.ws("/v1/ingest")
	d1, tok1 := provision(t, svc, `{"name":"d1"}`)
	_, tok2 := provision(t, svc, `{"name":"d2"}`)
	d3, tok3 := provision(t, svc, `{"name":"d3"}`)

	a := mustDialWS(t, ingestURL, bearer(tok1))
	mustDialWS(t, ingestURL, bearer(tok1))
	dialStatus(t, ingestURL, bearer(tok1), http.StatusTooManyRequests, "too_many_connections")
	mustDialWS(t, ingestURL, bearer(tok2))
	dialStatus(t, ingestURL, bearer(tok3), http.StatusServiceUnavailable, "server_busy")
	if n := pointsOf(t, influx, db, d3); n != 0 {
		t.Fatalf("%d points for a refused device", n)
	}
	if m := metric(t, svc, `telemetryd_ws_handshakes_rejected_total{reason="too_many_connections"}`); m != 1 {
		t.Fatalf("too_many_connections counted %v, want 1", m)
	}
	if m := metric(t, svc, `telemetryd_ws_handshakes_rejected_total{reason="server_busy"}`); m != 1 {
		t.Fatalf("server_busy counted %v, want 1", m)
	}
	// A closed socket frees its place.
	_ = a.conn.WriteClose(1000, nil)
	var c3 *wsClient
	eventually(t, 10*time.Second, "a place for d3", func() bool {
		c, _, err := dialWS(t, ingestURL, bearer(tok3))
		c3 = c
		return err == nil
	})
	sendAcked(t, c3, "sec_conns", 1)
	if n := pointsOf(t, influx, db, d3); n != 1 {
		t.Fatalf("%d points for d3, want 1", n)
	}
	if n := pointsOf(t, influx, db, d1); n != 0 {
		t.Fatalf("%d points for d1", n)
	}

	t.Run("slow handshake", func(t *testing.T) {
		conn, err := net.Dial("tcp", svc.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// Headers that never end.
		fmt.Fprintf(conn, "GET /v1/ingest HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n", svc.addr)
		_ = conn.SetReadDeadline(time.Now().Add(8 * time.Second))
		_, err = io.ReadAll(conn)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("the server kept a half-sent handshake open past -read-header-timeout")
		}
		eventually(t, 5*time.Second, "the cut handshake counted", func() bool {
			return metric(t, svc, "telemetryd_http_incomplete_requests_total") >= 1
		})
	})

	t.Run("silent socket", func(t *testing.T) {
		// Close everything else so that there is room.
		c3.conn.WriteClose(1000, nil)
		var conn net.Conn
		var br *bufio.Reader
		eventually(t, 10*time.Second, "upgrade", func() bool {
			var err error
			conn, err = net.Dial("tcp", svc.addr)
			if err != nil {
				return false
			}
			fmt.Fprintf(conn, "GET /v1/ingest HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
				"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer %s\r\n\r\n", svc.addr, tok3)
			br = bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
				conn.Close()
				return false
			}
			return true
		})
		defer conn.Close()
		// Never answer the server's pings: it must give up after two intervals.
		_ = conn.SetReadDeadline(time.Now().Add(8 * time.Second))
		_, err := io.ReadAll(br)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("the server kept a silent socket open")
		}
		// The close code is not counted separately: gws closes on the read
		// deadline as for any network error.
	})
}

// testSecurityViewers: a viewer restricted to one site never sees another
// site's readings, in snapshots or live; revoking a viewer closes its
// dashboards; /v1/live needs a token.
func testSecurityViewers(t *testing.T, influx *influxtest.Server) {
	const db = "sec_viewers"
	svc := startService(t, influx, nil, tokensFile(t), "-influx-bucket", db+"/autogen")
	ingestURL, liveURL := svc.ws("/v1/ingest"), svc.ws("/v1/live")
	p3, tok3 := provision(t, svc, `{"name":"p3","labels":{"site":"plant-3"}}`)
	p4, tok4 := provision(t, svc, `{"name":"p4","labels":{"site":"plant-4"}}`)
	d3, d4 := mustDialWS(t, ingestURL, bearer(tok3)), mustDialWS(t, ingestURL, bearer(tok4))
	sendAcked(t, d3, "env", 1)
	sendAcked(t, d4, "env", 1)
	// A plant-4 device claiming plant-3 in its payload: the label wins.
	d4.send(t, `{"seq":2,"measurement":"env","metrics":{"n":2},"tags":{"site":"plant-3"}}`)
	var a ackOrError
	d4.nextJSON(t, &a)

	status, out := adminCall(t, svc, "POST", "/api/v1/viewers", `{"name":"plant 3 ops","scope":{"site":"plant-3"}}`)
	vtok, _ := get(out, "token").(string)
	vid, _ := get(out, "viewer", "id").(string)
	if status != 201 || !strings.HasPrefix(vtok, "tvw_") {
		t.Fatalf("create viewer: %d %v", status, out)
	}
	dialStatus(t, liveURL, nil, http.StatusUnauthorized, "unauthorized")
	dialStatus(t, liveURL, bearer("tvw_nope"), http.StatusUnauthorized, "unauthorized")
	dialStatus(t, liveURL, bearer(tok3), http.StatusUnauthorized, "unauthorized") // a device token is no viewer token

	v := mustDialWS(t, liveURL+"?token="+vtok, nil)
	// Every way of asking for plant-4 yields nothing.
	subs := []string{
		`{"op":"subscribe","id":"all","devices":["*"]}`,
		`{"op":"subscribe","id":"p4","devices":["` + p4 + `"]}`,
		`{"op":"subscribe","id":"tag4","tags":{"site":"plant-4"}}`,
	}
	want := map[string]int{"all": 1, "p4": 0, "tag4": 0}
	for _, s := range subs {
		v.send(t, s)
		var snap liveMsg
		v.nextJSON(t, &snap)
		if snap.Type != "snapshot" || len(snap.Readings) != want[snap.Sub] {
			t.Fatalf("snapshot %s: %+v", snap.Sub, snap)
		}
		for _, r := range snap.Readings {
			if r.DeviceID != p3 || r.Tags["site"] != "plant-3" {
				t.Fatalf("viewer of plant-3 got %+v in a snapshot", r)
			}
		}
	}
	// The unrestricted admin sees both sites.
	admin := mustDialWS(t, liveURL, bearer(testAdminToken))
	admin.send(t, `{"op":"subscribe","id":"a","devices":["*"]}`)
	var snap liveMsg
	admin.nextJSON(t, &snap)
	if len(snap.Readings) != 2 {
		t.Fatalf("admin snapshot %+v", snap)
	}

	// Live: plant-4 first, then plant-3; the plant-3 reading arriving proves
	// the plant-4 one was not delivered (the hub keeps publish order).
	sendAcked(t, d4, "env", 3)
	sendAcked(t, d3, "env", 4)
	var live liveMsg
	v.nextJSON(t, &live)
	if live.Type != "readings" || live.Sub != "all" || len(live.Readings) != 1 || live.Readings[0].DeviceID != p3 {
		t.Fatalf("viewer of plant-3 got %+v", live)
	}
	if n := len(v.msgs); n != 0 {
		t.Fatalf("%d more messages for the plant-3 viewer", n)
	}

	// Revocation closes the open dashboard with 1008; the token is refused.
	if status, _ := adminCall(t, svc, "POST", "/api/v1/viewers/"+vid+"/revoke", ""); status != 200 {
		t.Fatalf("revoke viewer: %d", status)
	}
	if code := v.closeCode(t); code != 1008 {
		t.Fatalf("viewer close code %d, want 1008", code)
	}
	dialStatus(t, liveURL, bearer(vtok), http.StatusUnauthorized, "unauthorized")
}

// testSecurityLabelInjection: labels that could break line protocol are
// refused at creation (and update); odd but legal ones are stored verbatim.
func testSecurityLabelInjection(t *testing.T, influx *influxtest.Server) {
	const db = "sec_labels"
	svc := startService(t, influx, nil, tokensFile(t), "-influx-bucket", db+"/autogen")
	bad := []string{
		`{"name":"x","labels":{"site":"p3\nevil,device_id=x v=1 1"}}`,
		`{"name":"x","labels":{"site":"p3\r\nevil v=1"}}`,
		`{"name":"x","labels":{"site,evil=1 v":"p3"}}`,
		`{"name":"x","labels":{"site":"trailing\\"}}`,
		`{"name":"x","labels":{"device_id":"someone-else"}}`,
		`{"name":"x","labels":{"_measurement":"evil"}}`,
		`{"name":"x","labels":{"site":"` + strings.Repeat("a", 257) + `"}}`,
	}
	for _, body := range bad {
		status, out := adminCall(t, svc, "POST", "/api/v1/devices", body)
		if status != http.StatusBadRequest || errCode(out) != "invalid_request" {
			t.Fatalf("create %s: %d %v, want 400 invalid_request", body, status, out)
		}
	}
	if status, out := adminCall(t, svc, "GET", "/api/v1/devices", ""); status != 200 || len(get(out, "devices").([]any)) != 0 {
		t.Fatalf("refused devices were created: %v", out)
	}
	odd := `Halle 3, Süd="x" y=1 \n`
	id, tok := provision(t, svc, fmt.Sprintf(`{"name":"odd","labels":{"site":%q}}`, odd))
	status, out := adminCall(t, svc, "PATCH", "/api/v1/devices/"+id, `{"labels":{"site":"a\nb"}}`)
	if status != http.StatusBadRequest || errCode(out) != "invalid_request" {
		t.Fatalf("patch with injection: %d %v", status, out)
	}
	sendAcked(t, mustDialWS(t, svc.ws("/v1/ingest"), bearer(tok)), "sec_labels", 1)
	rows := influx.Query(t, db, `SELECT "n","site" FROM "sec_labels"`)
	if len(rows) != 1 || len(rows[0].Values) != 1 || rows[0].Values[0][2] != odd {
		t.Fatalf("stored %v, want the label verbatim", rows)
	}
	var names []string
	for _, s := range influx.Query(t, db, `SHOW MEASUREMENTS`) {
		for _, v := range s.Values {
			names = append(names, fmt.Sprint(v[0]))
		}
	}
	if fmt.Sprint(names) != "[sec_labels]" {
		t.Fatalf("measurements %v, want only sec_labels", names)
	}
	var tagKeys []string
	for _, s := range influx.Query(t, db, `SHOW TAG KEYS FROM "sec_labels"`) {
		for _, v := range s.Values {
			tagKeys = append(tagKeys, fmt.Sprint(v[0]))
		}
	}
	if fmt.Sprint(tagKeys) != "[device_id site]" {
		t.Fatalf("tag keys %v", tagKeys)
	}
}

// testPKI is a CA and a certificate for 127.0.0.1 signed by it, as files.
type testPKI struct {
	caFile, certFile, keyFile string
	pool                      *x509.CertPool
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "telemetryd test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	p := testPKI{caFile: filepath.Join(dir, "ca.pem"), certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem"), pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	write := func(path, typ string, der []byte) {
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(p.caFile, "CERTIFICATE", caDER)
	write(p.certFile, "CERTIFICATE", der)
	write(p.keyFile, "PRIVATE KEY", keyDER)
	return p
}

// testSecurityWSS: with -tls-cert/-tls-key the service speaks HTTPS and
// wss only; a device provisioned over HTTPS streams over wss end to end.
func testSecurityWSS(t *testing.T, influx *influxtest.Server) {
	const db = "sec_wss"
	pki := newTestPKI(t)
	svc := startService(t, influx, nil, tokensFile(t), "-influx-bucket", db+"/autogen", "-tls-cert", pki.certFile, "-tls-key", pki.keyFile)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.pool}}}
	status, out := adminCallURL(t, client, "https://"+svc.addr+"/api/v1/devices", "POST", `{"name":"tls-dev"}`)
	if status != 201 {
		t.Fatalf("create over https: %d %v", status, out)
	}
	id, tok := get(out, "device", "id").(string), get(out, "token").(string)

	c := &wsClient{msgs: make(chan string, 100), closed: make(chan struct{})}
	conn, resp, err := gws.NewClient(c, &gws.ClientOption{
		Addr: "wss://" + svc.addr + "/v1/ingest", RequestHeader: bearer(tok),
		TlsConfig: &tls.Config{RootCAs: pki.pool, ServerName: "127.0.0.1"},
	})
	if err != nil {
		t.Fatalf("wss dial: %v %v", err, resp)
	}
	c.conn = conn
	go conn.ReadLoop()
	t.Cleanup(func() { _ = conn.WriteClose(1000, nil) })
	sendAcked(t, c, "sec_tls", 1)
	if n := pointsOf(t, influx, db, id); n != 1 {
		t.Fatalf("%d points over wss, want 1", n)
	}

	// Plain HTTP and an untrusted certificate are refused.
	if _, _, err := dialWS(t, "ws://"+svc.addr+"/v1/ingest", bearer(tok)); err == nil {
		t.Fatal("plain ws:// accepted by a TLS listener")
	}
	if _, err := http.Get("https://" + svc.addr + "/healthz"); err == nil {
		t.Fatal("certificate accepted without its CA")
	}
	// The CLI talks HTTPS with -ca.
	var stdout, stderr strings.Builder
	env := func(k string) (string, bool) {
		if k == "TELEMETRY_ADMIN_TOKEN" {
			return testAdminToken, true
		}
		return "", false
	}
	if err := devicesCommand(t.Context(), []string{"get", id, "-url", "https://" + svc.addr, "-ca", pki.caFile, "-json"}, env, &stdout, &stderr); err != nil {
		t.Fatalf("cli over https: %v %s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), id) {
		t.Fatalf("cli output %q", stdout.String())
	}
}

// testSecurityCLI drives `telemetryd devices …` and `telemetryd viewers …`
// against a running service.
func testSecurityCLI(t *testing.T, influx *influxtest.Server) {
	const db = "sec_cli"
	svc := startService(t, influx, nil, tokensFile(t), "-influx-bucket", db+"/autogen")
	env := func(k string) (string, bool) {
		switch k {
		case "TELEMETRY_ADMIN_TOKEN":
			return testAdminToken, true
		case "TELEMETRY_URL":
			return "http://" + svc.addr, true
		}
		return "", false
	}
	cli := func(cmd func(context.Context, []string, func(string) (string, bool), io.Writer, io.Writer) error, args ...string) (string, error) {
		t.Helper()
		var out, errb strings.Builder
		err := cmd(t.Context(), args, env, &out, &errb)
		return out.String() + errb.String(), err
	}
	out, err := cli(devicesCommand, "create", "-name", "boiler 7", "-label", "site=plant-3", "-label", "model=b7")
	if err != nil || !strings.Contains(out, "token: tdv_") || !strings.Contains(out, "model=b7,site=plant-3") || !strings.Contains(out, "cannot be shown again") {
		t.Fatalf("create: %v\n%s", err, out)
	}
	id := strings.Fields(strings.Split(out, "\n")[1])[0]
	tok := strings.TrimSpace(strings.SplitN(out[strings.Index(out, "token: ")+7:], "\n", 2)[0])
	sendAcked(t, mustDialWS(t, svc.ws("/v1/ingest"), bearer(tok)), "cli", 1)

	out, err = cli(devicesCommand, "list", "-label", "site=plant-3", "-json")
	var list struct {
		Devices []struct {
			ID         string  `json:"id"`
			LastSeenAt *string `json:"last_seen_at"`
		} `json:"devices"`
	}
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list.Devices) != 1 || list.Devices[0].ID != id || list.Devices[0].LastSeenAt == nil {
		t.Fatalf("list: %v\n%s", err, out)
	}
	if out, err = cli(devicesCommand, "list", "-label", "site=plant-4"); err != nil || strings.Contains(out, id) {
		t.Fatalf("filtered list: %v\n%s", err, out)
	}
	// Flags after the id are parsed too.
	if out, err = cli(devicesCommand, "update", id, "-label", "site=plant-4", "-name", "boiler 8"); err != nil || !strings.Contains(out, "site=plant-4") || !strings.Contains(out, "boiler 8") {
		t.Fatalf("update: %v\n%s", err, out)
	}
	if out, err = cli(devicesCommand, "rotate", id, "-grace", "0s"); err != nil || !strings.Contains(out, "token: tdv_") {
		t.Fatalf("rotate: %v\n%s", err, out)
	}
	dialStatus(t, svc.ws("/v1/ingest"), bearer(tok), http.StatusUnauthorized, "unauthorized")
	if out, err = cli(devicesCommand, "revoke", id); err != nil || !strings.Contains(out, "true") {
		t.Fatalf("revoke: %v\n%s", err, out)
	}
	if out, err = cli(devicesCommand, "delete", id); err != nil || !strings.Contains(out, "deleted "+id) {
		t.Fatalf("delete: %v\n%s", err, out)
	}
	if _, err = cli(devicesCommand, "get", id); err == nil || !strings.Contains(err.Error(), "not_found (HTTP 404)") {
		t.Fatalf("get deleted: %v", err)
	}
	if _, err = cli(devicesCommand, "create", "-name", "x", "-label", "site=a\nb"); err == nil || !strings.Contains(err.Error(), "invalid_request") {
		t.Fatalf("create with a bad label: %v", err)
	}
	var out2, errb strings.Builder
	wrongEnv := func(k string) (string, bool) {
		if k == "TELEMETRY_ADMIN_TOKEN" {
			return "not-the-admin-token", true
		}
		return env(k)
	}
	if err := devicesCommand(t.Context(), []string{"list"}, wrongEnv, &out2, &errb); err == nil || !strings.Contains(err.Error(), "unauthorized") ||
		strings.Contains(err.Error(), "not-the-admin-token") {
		t.Fatalf("wrong admin token: %v", err)
	}

	out, err = cli(viewersCommand, "create", "-name", "ops", "-scope", "site=plant-3")
	if err != nil || !strings.Contains(out, "token: tvw_") || !strings.Contains(out, "site=plant-3") {
		t.Fatalf("viewers create: %v\n%s", err, out)
	}
	vid := strings.Fields(strings.Split(out, "\n")[1])[0]
	if out, err = cli(viewersCommand, "list"); err != nil || !strings.Contains(out, vid) || strings.Contains(out, "tvw_") {
		t.Fatalf("viewers list: %v\n%s", err, out)
	}
	if out, err = cli(viewersCommand, "revoke", vid); err != nil || !strings.Contains(out, "true") {
		t.Fatalf("viewers revoke: %v\n%s", err, out)
	}
	if out, err = cli(viewersCommand, "delete", vid); err != nil || !strings.Contains(out, "deleted") {
		t.Fatalf("viewers delete: %v\n%s", err, out)
	}
	if _, err = cli(devicesCommand, "frobnicate"); err == nil {
		t.Fatal("unknown command accepted")
	}
}

// TestHelpDocumentsSecurityFlags: telemetryd -h lists every identity,
// TLS and limit flag with its variable.
func TestHelpDocumentsSecurityFlags(t *testing.T) {
	var stderr strings.Builder
	_, err := parseConfig([]string{"-h"}, func(string) (string, bool) { return "", false }, &stderr)
	if err == nil {
		t.Fatal("-h did not stop")
	}
	for _, want := range []string{
		"-admin-token", "TELEMETRY_ADMIN_TOKEN", "-token-rotation-grace", "TELEMETRY_TOKEN_ROTATION_GRACE",
		"-tls-cert", "TELEMETRY_TLS_CERT", "-tls-key", "-mqtt-ca", "TELEMETRY_MQTT_CA", "-influx-ca", "TELEMETRY_INFLUX_CA",
		"-mosquitto-password-file", "-mosquitto-acl-file", "-mosquitto-pid-file",
		"-max-conns-per-device", "-max-conns", "-device-frame-rate", "-device-frame-burst", "-rate-limit-close",
		"-read-header-timeout", "-ws-ping-interval", "-max-labels", "-max-frame-bytes", "-max-readings", "-allowed-origins",
	} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("telemetryd -h does not mention %s", want)
		}
	}
}
