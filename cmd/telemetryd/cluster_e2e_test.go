package main

// Issue 16's "Done means", each against three real telemetryd processes
// (cluster_harness_test.go). The subtests share one cluster; the ones that
// take a server away run last and bring it back.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/devices"
	"github.com/telemetryd/telemetryd/simulator"
)

func TestCluster(t *testing.T) {
	c := startCluster(t, "cluster_e2e")
	// Live first: its check of the last-value stream counts writes, which
	// the readings of the other subtests would add to.
	t.Run("Live", func(t *testing.T) { testClusterLive(t, c) })
	t.Run("Revoke", func(t *testing.T) { testClusterRevoke(t, c) })
	t.Run("MQTTShares", func(t *testing.T) { testClusterMQTTShares(t, c) })
	t.Run("NATSOutage", func(t *testing.T) { testClusterNATSOutage(t, c) })
	t.Run("RegistryOutage", func(t *testing.T) { testClusterRegistryOutage(t, c) })
	t.Run("Kill9", func(t *testing.T) { testClusterKill9(t, c) })
	t.Run("SpoolReplay", func(t *testing.T) { testClusterSpoolReplay(t, c) })
}

// testClusterRevoke: provisioned through A, connected through B, revoked
// through C: B closes the socket with 1008 within 1 s and stores nothing
// after.
func testClusterRevoke(t *testing.T, c *cluster) {
	id, tok := provision(t, c.a().svc(), `{"name":"roamer"}`)
	waitKnown(t, c.b(), id, clusterPropagation)
	dev := clusterDial(t, c.b(), tok)
	sendAcked(t, dev, "cluster_revoke", 1)

	if status, out := adminCall(t, c.c().svc(), "POST", "/api/v1/devices/"+id+"/revoke", ""); status != http.StatusOK {
		t.Fatalf("revoke on C: %d %v", status, out)
	}
	revoked := time.Now()
	select {
	case <-dev.closed:
	case <-time.After(clusterPropagation):
		t.Fatalf("B's socket still open %v after the revocation on C", clusterPropagation)
	}
	t.Logf("B closed the socket %v after C answered the revocation", time.Since(revoked))
	if code := dev.closeCode(t); code != 1008 {
		t.Fatalf("close code %d, want 1008", code)
	}
	// The token is refused on every instance once it has heard (within the
	// same bound); B stores nothing more of it.
	for _, n := range c.nodes {
		eventually(t, clusterPropagation, n.name+" heard of the revocation", func() bool {
			_, out := adminCall(t, n.svc(), "GET", "/api/v1/devices/"+id, "")
			revoked, _ := get(out, "device", "revoked").(bool)
			return revoked
		})
		dialStatus(t, n.ws("/v1/ingest"), bearer(tok), http.StatusUnauthorized, "unauthorized")
	}
	// A reading of another device through B after the revocation is the
	// barrier: once it is stored, anything of the revoked device B took
	// after the close would be too.
	_, other := provision(t, c.b().svc(), `{"name":"barrier"}`)
	sendAcked(t, clusterDial(t, c.b(), other), "cluster_revoke_barrier", 1)
	if got := storedSeqs(t, c.influx, c.db, "cluster_revoke", id); len(got) != 1 || !got[1] {
		t.Fatalf("stored %v, want only seq 1 (before the revocation)", got)
	}
}

// testClusterRegistryOutage: PostgreSQL stopped for 10 s: known devices
// keep ingesting on every instance (open sockets and new connections),
// provisioning answers 503 everywhere, and works again afterwards.
func testClusterRegistryOutage(t *testing.T, c *cluster) {
	const outage = 10 * time.Second
	type known struct {
		id, tok string
		cl      *wsClient
		seq     int
	}
	var devs []*known
	for i, n := range c.nodes {
		id, tok := provision(t, n.svc(), fmt.Sprintf(`{"name":"known-%d"}`, i))
		devs = append(devs, &known{id: id, tok: tok})
	}
	// Every device is known everywhere before the outage; each holds a
	// socket to the instance after the one that provisioned it.
	for i, d := range devs {
		n := c.nodes[(i+1)%len(c.nodes)]
		for _, m := range c.nodes {
			waitKnown(t, m, d.id, clusterPropagation)
		}
		d.cl = clusterDial(t, n, d.tok)
	}

	c.pg.Stop(t)
	stopped := time.Now()
	for time.Since(stopped) < outage {
		for i, d := range devs {
			d.seq++
			sendAcked(t, d.cl, "cluster_pg_outage", d.seq)
			// A new connection to yet another instance, from memory.
			n := c.nodes[(i+2)%len(c.nodes)]
			fresh := clusterDial(t, n, d.tok)
			d.seq++
			sendAcked(t, fresh, "cluster_pg_outage", d.seq)
			_ = fresh.conn.WriteClose(1000, nil)
		}
		for _, n := range c.nodes {
			status, out := adminCall(t, n.svc(), "POST", "/api/v1/devices", `{"name":"during"}`)
			if status != http.StatusServiceUnavailable || errCode(out) != devices.APICodeUnavailable {
				t.Fatalf("provisioning on %s while PostgreSQL is down: %d %v", n.name, status, out)
			}
		}
		time.Sleep(500 * time.Millisecond) // the outage's pace, not a wait for a condition
	}
	for _, d := range devs {
		if got := storedSeqs(t, c.influx, c.db, "cluster_pg_outage", d.id); len(got) != d.seq {
			t.Fatalf("device %s: stored %d of %d readings acked during the outage", d.id, len(got), d.seq)
		}
	}

	c.pg.Start(t)
	for i, n := range c.nodes {
		var id, tok string
		eventually(t, clusterWait, "provisioning on "+n.name+" after PostgreSQL is back", func() bool {
			status, out := adminCall(t, n.svc(), "POST", "/api/v1/devices", fmt.Sprintf(`{"name":"after-%d"}`, i))
			id, _ = get(out, "device", "id").(string)
			tok, _ = get(out, "token").(string)
			return status == http.StatusCreated
		})
		// The other instances hear of it once their change feed is back
		// (a full reload on reconnection).
		next := c.nodes[(i+1)%len(c.nodes)]
		waitKnown(t, next, id, clusterWait)
		sendAcked(t, clusterDial(t, next, tok), "cluster_pg_after", 1)
	}
}

// mqttShares is each instance's count of MQTT messages consumed (its
// share-group members' telemetryd_mqtt_client_messages_total).
func (c *cluster) mqttShares(t *testing.T) []float64 {
	t.Helper()
	var out []float64
	for _, n := range c.nodes {
		sum := 0.0
		for series, v := range scrape(t, n.svc()) {
			if strings.HasPrefix(series, "telemetryd_mqtt_client_messages_total{") {
				sum += v
			}
		}
		out = append(out, sum)
	}
	return out
}

// provisionAll provisions n devices, spread over the instances, and waits
// until every instance knows every one.
func (c *cluster) provisionAll(t *testing.T, prefix string, n int) (ids, toks []string) {
	t.Helper()
	for i := range n {
		id, tok := provision(t, c.nodes[i%len(c.nodes)].svc(), fmt.Sprintf(`{"name":"%s-%d"}`, prefix, i))
		ids, toks = append(ids, id), append(toks, tok)
	}
	for _, node := range c.nodes {
		for _, id := range ids {
			waitKnown(t, node, id, clusterWait)
		}
	}
	return ids, toks
}

// testClusterMQTTShares: 20 MQTT devices publish a known set of readings;
// each is stored once, every instance consumed a share (its metrics say
// how much), none is lost.
func testClusterMQTTShares(t *testing.T, c *cluster) {
	requireFeature(t, "mqtt-share-group", "MQTT shared subscriptions")
	const devs, per = 20, 10
	ids, _ := c.provisionAll(t, "mqtt-share", devs)
	before := c.mqttShares(t)
	base := time.Now().Add(-time.Hour).UnixMilli()
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := newMQTTClient(t, c.broker.URL(), "share-dev-"+strconv.Itoa(i))
			for seq := 1; seq <= per; seq++ {
				tok := cl.Publish("devices/"+id+"/telemetry", 1, false,
					fmt.Sprintf(`{"seq":%d,"ts":%d,"measurement":"cluster_mqtt","metrics":{"n":%d}}`, seq, base+int64(seq), seq))
				if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
					t.Errorf("device %s seq %d: no PUBACK (%v)", id, seq, tok.Error())
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	eventually(t, clusterWait, "every MQTT reading stored", func() bool {
		return c.influx.CountPoints(t, c.db, "cluster_mqtt", "n") >= devs*per
	})
	for _, id := range ids {
		rows := c.influx.Query(t, c.db, `SELECT "n" FROM "cluster_mqtt" WHERE "device_id" = '`+id+`'`)
		seen := map[string]int{}
		for _, s := range rows {
			for _, v := range s.Values {
				seen[fmt.Sprint(v[1])]++
			}
		}
		for seq := 1; seq <= per; seq++ {
			if k := strconv.Itoa(seq); seen[k] != 1 {
				t.Errorf("device %s seq %d stored %d times", id, seq, seen[k])
			}
		}
	}
	if got := c.influx.CountPoints(t, c.db, "cluster_mqtt", "n"); got != devs*per {
		t.Fatalf("%d points stored, want %d (each reading once)", got, devs*per)
	}
	after := c.mqttShares(t)
	total := 0.0
	for i, n := range c.nodes {
		share := after[i] - before[i]
		t.Logf("instance %s consumed %.0f of %d MQTT messages", n.name, share, devs*per)
		if share < 1 {
			t.Errorf("instance %s consumed no share", n.name)
		}
		total += share
	}
	if total != devs*per {
		t.Errorf("the instances consumed %.0f messages in all, want %d (each once)", total, devs*per)
	}
}

var (
	simOnce sync.Once
	simPath string
	simErr  error
)

// simulatorBinary builds cmd/simulator once, beside the telemetryd binary.
func simulatorBinary(t *testing.T) string {
	t.Helper()
	dir := filepath.Dir(telemetrydBinary(t))
	simOnce.Do(func() {
		simPath = filepath.Join(dir, "simulator")
		if out, err := exec.Command("go", "build", "-o", simPath, "../simulator").CombinedOutput(); err != nil {
			simErr = &buildError{err: err, out: string(out)}
		}
	})
	if simErr != nil {
		t.Fatalf("building the simulator: %v", simErr)
	}
	return simPath
}

// testClusterKill9: under mixed WebSocket and MQTT load from the simulator
// (all three instances as -url), B is killed with SIGKILL and restarted
// 5 s later: its WebSocket devices reconnect through A and C, its MQTT
// share waits for it at the broker, and -verify (InfluxDB plus a dashboard
// on every instance) finds every acknowledged reading stored, none lost.
func testClusterKill9(t *testing.T, c *cluster) {
	requireFeature(t, "mqtt-share-group", "MQTT shared subscriptions")
	// -verify wants every reading on a dashboard: the one on B misses
	// what B ingests before it reconnects unless the others relay it.
	requireFeature(t, "live-nats-url", "the NATS live fan-out")
	const devs, per = 12, 200
	dir := t.TempDir()
	report, creds := filepath.Join(dir, "report.json"), filepath.Join(dir, "creds.json")
	common := []string{"-url", strings.Join(c.urls(), ","), "-admin-token", testAdminToken,
		"-mqtt-url", c.broker.URL(), "-influx-url", c.influx.URL(), "-influx-bucket", c.db + "/autogen",
		"-fleet", "kill9", "-devices", strconv.Itoa(devs), "-transport", "mixed", "-creds", creds}
	// The fleet is provisioned first and known everywhere before the load:
	// a device that dials an instance which has not heard of it yet is
	// refused, and refusals count against the address in the auth guard.
	if out, err := exec.Command(simulatorBinary(t), append(common, "-provision-only")...).CombinedOutput(); err != nil {
		t.Fatalf("simulator -provision-only: %v\n%s", err, out)
	}
	fleet, err := simulator.LoadCredentials(creds)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		for _, d := range fleet.Devices {
			waitKnown(t, n, d.ID, clusterWait)
		}
	}
	b := c.b()
	loadBefore := scrape(t, b.svc())
	sim := exec.Command(simulatorBinary(t), append(common,
		"-profile", "environment", "-rate", "25", "-readings-per-device", strconv.Itoa(per), "-seed", "9",
		"-backoff-min", "50ms", "-backoff-max", "1s",
		"-verify", "-verify-timeout", "60s", "-drain-timeout", "60s", "-report", report, "-quiet")...)
	out := &syncBuffer{}
	sim.Stdout, sim.Stderr = out, out
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sim.Wait() }()
	t.Cleanup(func() {
		if sim.ProcessState == nil {
			_ = sim.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("simulator output:\n%s", tail(out.String(), 4000))
		}
	})
	eventually(t, clusterWait, "load on B over both transports", func() bool {
		m := scrape(t, b.svc())
		for _, tr := range []string{`transport="ws"`, `transport="mqtt"`} {
			if m.get("telemetryd_readings_accepted_total", tr) <= loadBefore.get("telemetryd_readings_accepted_total", tr) {
				return false
			}
		}
		return m.get("telemetryd_ws_connections") >= 1
	})
	b.kill9()
	time.Sleep(5 * time.Second) // the outage the issue prescribes, not a wait for a condition
	b.start()
	b.waitReady()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("simulator: %v\n%s", err, out)
		}
	case <-time.After(3 * time.Minute):
		t.Fatalf("simulator still running\n%s", out)
	}
	raw, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	var rep simulator.Report
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	r := rep.Readings
	t.Logf("readings %+v; connections per instance %v, %d failovers", r, rep.Connection.PerService, rep.Connection.Failovers)
	if !rep.OK || !rep.Verified || r.Valid != devs*per || r.Acked != r.Valid || r.Stored != r.Valid {
		t.Fatalf("simulator report not OK (verified %v): %v; readings %+v\n%s", rep.Verified, rep.Failures, r, out)
	}
	if rep.Connection.Failovers < 1 {
		t.Fatalf("no device failed over from B: %+v", rep.Connection)
	}
}

// testClusterSpoolReplay: a fourth instance, whose path to InfluxDB
// refuses writes, acknowledges a device's readings from its disk spool and
// is then killed with SIGKILL, never to come back. `telemetryd
// spool-replay`, run as a process against its data dir, is refused while
// the instance lives (the data-dir lock) and afterwards writes every
// reading to the shared InfluxDB.
func testClusterSpoolReplay(t *testing.T, c *cluster) {
	requireFeature(t, "mqtt-share-group", "spool-replay")
	const n = 30
	target, _ := url.Parse(c.influx.URL())
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
	d := &clusterNode{name: "d", dataDir: filepath.Join(t.TempDir(), "data-d")}
	args := append(c.args(d), "-influx-url", front.URL, "-influx-gzip=false", "-spool-after", "200ms", "-mqtt-url", "")
	d.proc = startProc(t, args...)
	d.waitReady()
	id, tok := provision(t, c.a().svc(), `{"name":"orphan"}`)
	waitKnown(t, d, id, clusterWait)
	down.Store(true)
	dev := clusterDial(t, d, tok)
	for i := 1; i <= n; i++ {
		sendAcked(t, dev, "cluster_orphan", i)
	}
	waitMetric(t, d.svc(), "acked readings spooled", atLeast(1), "telemetryd_storage_spooled_writes_total")

	replay := func() (string, error) {
		cmd := exec.Command(telemetrydBinary(t), "spool-replay", "-data-dir", d.dataDir,
			"-influx-url", c.influx.URL(), "-influx-bucket", c.db+"/autogen", "-influx-gzip=false")
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := replay(); err == nil || !strings.Contains(out, "is in use by pid") {
		t.Fatalf("spool-replay beside the live instance: %v\n%s", err, out)
	}
	d.kill9() // gone for good, its spool left behind
	if got := storedSeqs(t, c.influx, c.db, "cluster_orphan", id); len(got) != 0 {
		t.Fatalf("%d readings reached InfluxDB through the refusing path", len(got))
	}
	out, err := replay()
	if err != nil {
		t.Fatalf("spool-replay: %v\n%s", err, out)
	}
	t.Logf("spool-replay: %s", strings.TrimSpace(out))
	if got := storedSeqs(t, c.influx, c.db, "cluster_orphan", id); len(got) != n {
		t.Fatalf("%d of %d acknowledged readings stored after the replay", len(got), n)
	}
	if out, err := replay(); err != nil || !strings.Contains(out, "nothing to replay") {
		t.Fatalf("second spool-replay: %v\n%s", err, out)
	}
}
