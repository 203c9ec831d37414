package main

import (
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"github.com/telemetryd/telemetryd/storage/influxtest"
)

// clientFrom is an HTTP client whose connections leave from local address
// ip (Linux routes all of 127/8 to lo).
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

// TestAuthFailuresThrottled: repeated bad admin and device tokens from
// 127.0.0.1 are answered 429 with Retry-After; valid clients from
// 127.0.0.2 are not slowed (issue 17.11).
func TestAuthFailuresThrottled(t *testing.T) {
	influx := influxtest.Start(t)
	svc := startService(t, influx, nil, tokensFile(t, "guard-dev", "tok-guard-dev"))
	attacker, good := clientFrom("127.0.0.1"), clientFrom("127.0.0.2")
	call := func(c *http.Client, path, token string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", svc.url(path), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	// Admin token guesses, then device token guesses on the upgrade.
	var throttled *http.Response
	for i := range 40 {
		path, tok := "/api/v1/devices", "wrong-admin-token-"+strconv.Itoa(i)
		if i%2 == 1 {
			path, tok = "/v1/ingest", "wrong-device-token-"+strconv.Itoa(i)
		}
		resp := call(attacker, path, tok)
		if resp.StatusCode == http.StatusTooManyRequests {
			throttled = resp
			break
		}
		if resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("guess %d on %s: %d", i, path, resp.StatusCode)
		}
	}
	if throttled == nil {
		t.Fatal("40 bad tokens from one address were never throttled")
	}
	if ra, err := strconv.Atoi(throttled.Header.Get("Retry-After")); err != nil || ra < 1 {
		t.Fatalf("429 without a usable Retry-After: %q", throttled.Header.Get("Retry-After"))
	}
	// The blocked address is refused on every authenticated endpoint.
	if resp := call(attacker, "/v1/ingest", "tok-guard-dev"); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("device upgrade from the blocked address: %d, want 429", resp.StatusCode)
	}
	// A valid operator and a valid device elsewhere are unaffected.
	if resp := call(good, "/api/v1/devices", testAdminToken); resp.StatusCode != http.StatusOK {
		t.Fatalf("admin from 127.0.0.2: %d, want 200", resp.StatusCode)
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
	c := &wsClient{msgs: make(chan string, 16), closed: make(chan struct{})}
	conn, resp, err := gws.NewClient(c, &gws.ClientOption{
		Addr: svc.ws("/v1/ingest"), RequestHeader: bearer("tok-guard-dev"),
		NewDialer: func() (gws.Dialer, error) { return d, nil },
	})
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("device from 127.0.0.2: %v (HTTP %d)", err, status)
	}
	c.conn = conn
	go conn.ReadLoop()
	defer conn.WriteClose(1000, nil)
	sendAcked(t, c, "guard", 1)
	if v := metric(t, svc, "telemetryd_auth_throttled_total"); v < 2 {
		t.Fatalf("telemetryd_auth_throttled_total = %v, want ≥ 2", v)
	}
}
