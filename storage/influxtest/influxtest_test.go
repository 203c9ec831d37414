package influxtest_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/storage/influxtest"
)

func TestServer(t *testing.T) {
	s := influxtest.Start(t)
	if !strings.HasPrefix(s.URL(), "http://127.0.0.1:") {
		t.Fatalf("URL %q", s.URL())
	}
	s.CreateDB(t, "db one")
	s.CreateDB(t, "db one") // idempotent

	client := &http.Client{Timeout: 10 * time.Second}
	write := func() int {
		resp, err := client.Post(s.URL()+"/write?db=db+one", "text/plain",
			strings.NewReader("m,device_id=a v=1.5,n=2i 1\nm,device_id=b v=2.5 2\n"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := write(); code != http.StatusNoContent {
		t.Fatalf("write: status %d", code)
	}
	if n := s.CountPoints(t, "db one", "m", "v"); n != 2 {
		t.Fatalf("CountPoints = %d, want 2", n)
	}
	if n := s.CountPoints(t, "db one", "m", "n"); n != 1 {
		t.Fatalf("CountPoints(n) = %d, want 1", n)
	}
	if n := s.CountPoints(t, "db one", "nothing", "v"); n != 0 {
		t.Fatalf("CountPoints(nothing) = %d, want 0", n)
	}
	series := s.Query(t, "db one", `SELECT "v" FROM "m" GROUP BY "device_id"`)
	if len(series) != 2 || series[0].Tags["device_id"] != "a" || series[0].Columns[1] != "v" {
		t.Fatalf("series %+v", series)
	}

	s.Freeze(t)
	fast := &http.Client{Timeout: 200 * time.Millisecond}
	if resp, err := fast.Get(s.URL() + "/ping"); err == nil {
		resp.Body.Close()
		t.Fatal("frozen server answered /ping")
	}
	s.Thaw(t)

	s.Kill(t)
	if resp, err := fast.Get(s.URL() + "/ping"); err == nil {
		resp.Body.Close()
		t.Fatal("killed server answered /ping")
	}
	s.Restart(t)
	if n := s.CountPoints(t, "db one", "m", "v"); n != 2 {
		t.Fatalf("after restart CountPoints = %d, want 2", n)
	}
	s.Restart(t) // restarting a running server kills it first
	if code := write(); code != http.StatusNoContent {
		t.Fatalf("write after restart: status %d", code)
	}
}
