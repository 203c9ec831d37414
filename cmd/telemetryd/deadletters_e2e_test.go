package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/storage"
	"github.com/telemetryd/telemetryd/storage/influxtest"
)

// TestDeadLetterReplayUsesServiceStorageSettings: `telemetryd deadletters
// replay` reaches an https InfluxDB with the service's -influx-ca, as the
// service does, and writes the letters to the real InfluxDB (issue 17.9).
func TestDeadLetterReplayUsesServiceStorageSettings(t *testing.T) {
	influx := influxtest.Start(t)
	const db = "dl_replay_tls"
	influx.CreateDB(t, db)
	pki := newTestPKI(t)
	target, err := url.Parse(influx.URL())
	if err != nil {
		t.Fatal(err)
	}
	proxy := httptest.NewUnstartedServer(httputil.NewSingleHostReverseProxy(target))
	cert, err := tls.LoadX509KeyPair(pki.certFile, pki.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	proxy.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	proxy.StartTLS()
	t.Cleanup(proxy.Close)

	dataDir := t.TempDir()
	var file strings.Builder
	for _, line := range []string{`dl,device_id=d1 n=1i 1700000000000000000`, `dl,device_id=d1 n=2i 1700000001000000000`} {
		b, _ := json.Marshal(storage.DeadLetter{Time: time.Now().UTC(), Error: "field type conflict", Line: line})
		file.Write(append(b, '\n'))
	}
	if err := os.WriteFile(filepath.Join(dataDir, "deadletters.jsonl"), []byte(file.String()), 0o640); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr strings.Builder
	err = deadlettersCommand(ctx, []string{"replay", "-data-dir", dataDir, "-influx-url", proxy.URL,
		"-influx-bucket", db + "/autogen", "-influx-ca", pki.caFile}, func(string) (string, bool) { return "", false }, &stdout, &stderr)
	if err != nil {
		t.Fatalf("replay through https with -influx-ca: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	if n := influx.CountPoints(t, db, "dl", "n"); n != 2 {
		t.Fatalf("%d points replayed, want 2", n)
	}
	if letters, err := storage.ReadDeadLetters(filepath.Join(dataDir, "deadletters.jsonl")); err != nil || len(letters) != 0 {
		t.Fatalf("dead letters left: %d %v", len(letters), err)
	}
}
