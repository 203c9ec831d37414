package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/storage/influxtest"
)

// nodeWS returns the node binary and the directory of the Node ws client
// (testdata/nodews), installing ws there when node_modules is missing. A
// missing node skips the test, or fails it under CI=true.
func nodeWS(t *testing.T) (string, string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		const msg = "node not found: run `make tools` (installs nodejs and npm)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dir, err := filepath.Abs(filepath.Join("testdata", "nodews"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "ws")); err != nil {
		npm, err := exec.LookPath("npm")
		if err != nil {
			t.Fatalf("npm not found (needed once to install ws): %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, npm, "install", "--no-save", "--no-audit", "--no-fund", "ws@8")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm install ws@8: %v\n%s", err, out)
		}
	}
	return node, dir
}

// TestOversizedFrameNodeWS: a Node ws client that sends a 4 MiB frame in
// one call gets the 1009 close frame with its reason, not a dropped
// connection (1006) (issue 17.2).
func TestOversizedFrameNodeWS(t *testing.T) {
	node, dir := nodeWS(t)
	influx := influxtest.Start(t)
	svc := startService(t, influx, nil, tokensFile(t, "big-dev", "tok-big"))
	for _, size := range []int{4 << 20, 4 << 20, 4 << 20, 4 << 20, 4 << 20, 300 << 10} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, node, filepath.Join(dir, "oversized.js"), svc.ws("/v1/ingest"), "tok-big", strconv.Itoa(size))
		cmd.Dir = dir
		start := time.Now()
		out, err := cmd.Output()
		cancel()
		t.Logf("%d bytes: %s in %v", size, strings.TrimSpace(string(out)), time.Since(start))
		if err != nil {
			t.Fatalf("node: %v\n%s", err, out)
		}
		var got struct {
			Code   int
			Reason string
		}
		if err := json.Unmarshal([]byte(strings.TrimSpace(string(out))), &got); err != nil {
			t.Fatalf("node printed %q: %v", out, err)
		}
		if got.Code != 1009 || got.Reason == "" {
			t.Fatalf("%d-byte frame: close %d %q, want 1009 with its reason", size, got.Code, got.Reason)
		}
	}
}
