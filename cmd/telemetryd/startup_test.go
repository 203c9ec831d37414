package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/storage"
	"github.com/telemetryd/telemetryd/storage/influxtest"
)

// getReady GETs /readyz and decodes its body.
func getReady(t *testing.T, svc *service) (int, readyBody, string) {
	t.Helper()
	resp, err := http.Get(svc.url("/readyz"))
	if err != nil {
		return 0, readyBody{}, err.Error()
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var b readyBody
	_ = json.Unmarshal(raw, &b)
	return resp.StatusCode, b, string(raw)
}

// TestStartWhileInfluxDBIsFrozen: after a power cut InfluxDB comes up last.
// telemetryd starts against a frozen InfluxDB (it accepts connections and
// never answers), listens, says it is ready but degraded, and acks readings
// from the spool; once InfluxDB answers, the spool replays, the type guard
// is seeded with what InfluxDB held before the start, and /readyz says ok.
// SIGTERM (ctx cancel) then turns /readyz to 503 "draining" while devices
// are still served.
func TestStartWhileInfluxDBIsFrozen(t *testing.T) {
	influx := influxtest.Start(t)
	influx.CreateDB(t, testDB)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	seed, err := storage.Open(ctx, storage.Config{URL: influx.URL(), Bucket: testDB + "/autogen"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := seed.Write(ctx, []byte("tank,device_id=old level=5i 1000000000\n")); err != nil {
		t.Fatal(err)
	}
	seed.Close()
	influx.Freeze(t)

	svc := startService(t, influx, nil, tokensFile(t, "boot-1", "tok-boot"), "-influx-timeout", "1s", "-drain-delay", "5s")
	if resp, err := http.Get(svc.url("/healthz")); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	code, body, raw := getReady(t, svc)
	if code != http.StatusOK || body.Status != "degraded" || body.Storage != "unreachable" || !strings.HasPrefix(body.Checks["spool"], "ok") {
		t.Fatalf("readyz while InfluxDB is frozen: %d %s", code, raw)
	}
	if n := strings.Count(svc.stderr.String(), "InfluxDB unreachable at start"); n != 1 {
		t.Fatalf("the unreachable InfluxDB logged %d times at start, want once", n)
	}

	// Acked while InfluxDB is away: fsynced to the spool.
	dev := mustDialWS(t, svc.ws("/v1/ingest"), bearer("tok-boot"))
	const frames = 5
	for i := 1; i <= frames; i++ {
		sendAcked(t, dev, "boot", i)
	}
	waitMetric(t, svc, "batches spooled", atLeast(1), "telemetryd_storage_spooled_writes_total")

	influx.Thaw(t)
	eventually(t, 60*time.Second, "spooled readings replayed into InfluxDB", func() bool {
		return influx.CountPoints(t, testDB, "boot", "n") == frames
	})
	eventually(t, 30*time.Second, "readyz ok", func() bool {
		code, body, _ := getReady(t, svc)
		return code == http.StatusOK && body.Status == "ok" && body.Storage == "ok"
	})
	log := svc.stderr.String()
	if !strings.Contains(log, "field types loaded from storage") {
		t.Fatalf("the type guard was not seeded once InfluxDB answered:\n%s", tail(log, 4000))
	}
	if n := strings.Count(log, "influxdb still unreachable"); n > 2 {
		t.Fatalf("retries logged %d times; want state changes only", n)
	}
	// tank.level is an integer in InfluxDB since before the start: a
	// string is the guard's type_conflict, not InfluxDB's refusal.
	dev.send(t, `{"seq":10,"measurement":"tank","metrics":{"level":"full"}}`)
	// The frame is answered twice, ack and rejection (in either order).
	var a, b ackOrError
	dev.nextJSON(t, &a)
	dev.nextJSON(t, &b)
	if a.Error == nil {
		a, b = b, a
	}
	if a.Error == nil || len(a.Error.Rejected) != 1 || a.Error.Rejected[0].Code != "type_conflict" || b.Ack == nil || *b.Ack != 10 {
		t.Fatalf("a string into the integer tank.level: %s %s", mustJSON(a), mustJSON(b))
	}

	// SIGTERM: /readyz says draining first, while devices are still served.
	svc.cancel()
	eventually(t, 5*time.Second, "readyz draining", func() bool {
		code, body, _ := getReady(t, svc)
		return code == http.StatusServiceUnavailable && body.Status == "draining"
	})
	late := mustDialWS(t, svc.ws("/v1/ingest"), bearer("tok-boot"))
	sendAcked(t, late, "boot", 11)
	if code, body, raw := getReady(t, svc); code != http.StatusServiceUnavailable || body.Status != "draining" {
		t.Fatalf("readyz after the drain window (machine too slow?): %d %s", code, raw)
	}
	select {
	case <-svc.done:
	case <-time.After(60 * time.Second):
		t.Fatal("telemetryd did not stop")
	}
	if svc.err != nil {
		t.Fatal(svc.err)
	}
	if n := influx.CountPoints(t, testDB, "boot", "n"); n != frames+1 {
		t.Fatalf("%d boot points stored, want %d", n, frames+1)
	}
}

// TestStartWithoutSpoolWhileInfluxDBIsFrozen: without the spool nothing
// can be made durable, so the service listens but is not ready (503) until
// InfluxDB answers.
func TestStartWithoutSpoolWhileInfluxDBIsFrozen(t *testing.T) {
	influx := influxtest.Start(t)
	influx.Freeze(t)
	svc := startService(t, influx, nil, tokensFile(t, "d-1", "tok-d"), "-influx-timeout", "1s", "-spool=false")
	if resp, err := http.Get(svc.url("/healthz")); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	code, body, raw := getReady(t, svc)
	if code != http.StatusServiceUnavailable || body.Status != "unavailable" || body.Storage != "unreachable" || body.Checks["spool"] != "off" {
		t.Fatalf("readyz without spool and InfluxDB: %d %s", code, raw)
	}
	if !strings.Contains(svc.stderr.String(), "waiting for it in the background") {
		t.Fatalf("no log line says the service waits for InfluxDB:\n%s", tail(svc.stderr.String(), 4000))
	}
	influx.Thaw(t)
	eventually(t, 30*time.Second, "readyz ok", func() bool {
		code, body, _ := getReady(t, svc)
		return code == http.StatusOK && body.Status == "ok"
	})
	sendAcked(t, mustDialWS(t, svc.ws("/v1/ingest"), bearer("tok-d")), "direct", 1)
	if n := influx.CountPoints(t, testDB, "direct", "n"); n != 1 {
		t.Fatalf("%d points stored, want 1", n)
	}
}

// TestNotAnInfluxDBLearnedAfterStart: the server at -influx-url answers only
// after the start, and then as no InfluxDB does. The service keeps spooling,
// logs the failure as an error once, and /readyz reports storage "failed"
// while the spool has room.
func TestNotAnInfluxDBLearnedAfterStart(t *testing.T) {
	release := make(chan struct{})
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(web.Close)
	answer := sync.OnceFunc(func() { close(release) })
	t.Cleanup(answer)
	svc := startServiceAt(t, web.URL, "", tokensFile(t, "d-1", "tok-d"), "-influx-timeout", "1s")
	code, body, raw := getReady(t, svc)
	if code != http.StatusOK || body.Storage != "unreachable" {
		t.Fatalf("readyz before the server answers: %d %s", code, raw)
	}
	answer()
	eventually(t, 30*time.Second, "readyz reports the failure", func() bool {
		code, body, _ := getReady(t, svc)
		return code == http.StatusOK && body.Status == "degraded" && body.Storage == "failed" &&
			strings.Contains(body.Checks["influxdb"], "not an InfluxDB")
	})
	if n := strings.Count(svc.stderr.String(), "retrying will not help"); n != 1 {
		t.Fatalf("the permanent failure logged %d times, want once", n)
	}
	sendAcked(t, mustDialWS(t, svc.ws("/v1/ingest"), bearer("tok-d")), "kept", 1) // into the spool
}

// TestBinaryStartsWhileInfluxDBIsFrozenAndDrainsOnSIGTERM: the real binary,
// InfluxDB frozen at start: it serves, /readyz is 200 degraded; SIGTERM
// turns /readyz to 503 draining before the process exits.
func TestBinaryStartsWhileInfluxDBIsFrozenAndDrainsOnSIGTERM(t *testing.T) {
	influx := influxtest.Start(t)
	influx.Freeze(t)
	p := startProc(t, "-influx-url", influx.URL(), "-influx-bucket", testDB+"/autogen", "-influx-timeout", "1s",
		"-device-tokens", tokensFile(t, "d-1", "tok-d"), "-data-dir", t.TempDir(), "-drain-delay", "5s", "-mqtt-url", "")
	ready := func() (int, readyBody) {
		resp, err := http.Get("http://" + p.getAddr() + "/readyz")
		if err != nil {
			return 0, readyBody{}
		}
		defer resp.Body.Close()
		var b readyBody
		_ = json.NewDecoder(resp.Body).Decode(&b)
		return resp.StatusCode, b
	}
	if code, b := ready(); code != http.StatusOK || b.Status != "degraded" || b.Storage != "unreachable" {
		t.Fatalf("readyz while InfluxDB is frozen: %d %+v", code, b)
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	eventually(t, 5*time.Second, "readyz draining", func() bool {
		code, b := ready()
		return code == http.StatusServiceUnavailable && b.Status == "draining"
	})
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("telemetryd did not exit")
	}
}
