package main

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/storage"
	"github.com/telemetryd/telemetryd/storage/influxtest"
)

// TestSpoolReplayOfADeadInstance: an instance acks readings while InfluxDB
// refuses writes (they go to its disk spool) and then stops for good. While
// it ran, spool-replay refused its data dir (the lock); afterwards,
// spool-replay run against the real InfluxDB writes every reading and
// leaves the spool empty; a second run finds nothing to do.
func TestSpoolReplayOfADeadInstance(t *testing.T) {
	const n = 30
	influx := influxtest.Start(t)
	target, _ := url.Parse(influx.URL())
	proxy := httputil.NewSingleHostReverseProxy(target)
	var down atomic.Bool
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() && r.URL.Path != "/ping" {
			http.Error(w, "down for the test", http.StatusServiceUnavailable)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	dataDir := t.TempDir()
	svc := startService(t, influx, nil, tokensFile(t, "spool-dev", "tok-spool"),
		"-influx-url", front.URL, "-influx-gzip=false", "-data-dir", dataDir, "-spool-after", "200ms")
	waitReady(t, svc)

	down.Store(true)
	c := mustDialWS(t, svc.ws("/v1/ingest"), bearer("tok-spool"))
	base := time.Now().Add(-time.Hour).UnixMilli()
	for i := 1; i <= n; i++ {
		c.send(t, fmt.Sprintf(`{"seq":%d,"ts":%d,"measurement":"orphan","metrics":{"v":%d}}`, i, base+int64(i), i))
		var ack ackOrError
		c.nextJSON(t, &ack)
		if ack.Ack == nil || *ack.Ack != uint64(i) {
			t.Fatalf("frame %d: %+v", i, ack)
		}
	}
	waitMetric(t, svc, "acked readings spooled", atLeast(1), "telemetryd_storage_spooled_writes_total")

	replay := func() (string, error) {
		var out strings.Builder
		err := spoolReplayCommand(t.Context(), []string{"-data-dir", dataDir, "-influx-url", influx.URL(),
			"-influx-bucket", testDB + "/autogen", "-influx-gzip=false"}, func(string) (string, bool) { return "", false }, &out, &out)
		return out.String(), err
	}
	// The live instance holds its data dir.
	if out, err := replay(); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("data dir %s is in use by pid", dataDir)) {
		t.Fatalf("spool-replay beside the live instance: %v\n%s", err, out)
	}

	svc.stop(t) // gone for good, its spool left behind
	if got := influx.CountPoints(t, testDB, "orphan", "v"); got != 0 {
		t.Fatalf("%d readings reached InfluxDB while it was down", got)
	}
	out, err := replay()
	if err != nil {
		t.Fatalf("spool-replay: %v\n%s", err, out)
	}
	t.Logf("spool-replay: %s", out)
	if got := influx.CountPoints(t, testDB, "orphan", "v"); got != n {
		t.Fatalf("%d readings stored after the replay, want %d", got, n)
	}
	sp, rep, err := storage.OpenSpool(filepath.Join(dataDir, "spool"), storage.SpoolConfig{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	sp.Close()
	if rep.Records != 0 {
		t.Fatalf("spool still holds %d records", rep.Records)
	}
	if out, err := replay(); err != nil || !strings.Contains(out, "nothing to replay") {
		t.Fatalf("second spool-replay: %v\n%s", err, out)
	}
}

// TestDataDirTakenByTwoProcesses: a second telemetryd process on a data
// dir in use exits at once, naming the holder.
func TestDataDirTakenByTwoProcesses(t *testing.T) {
	influx := influxtest.Start(t)
	dataDir := t.TempDir()
	svc := startService(t, influx, nil, tokensFile(t), "-data-dir", dataDir)
	waitReady(t, svc)
	cmd := exec.Command(telemetrydBinary(t), "-http-addr", "127.0.0.1:0", "-mqtt-url", "", "-influx-url", influx.URL(), "-data-dir", dataDir)
	out, err := cmd.CombinedOutput()
	want := fmt.Sprintf("data dir %s is in use by pid %d", dataDir, os.Getpid())
	if err == nil || !strings.Contains(string(out), want) {
		t.Fatalf("second process: %v\n%s\nwant %q", err, out, want)
	}
}
