package main

// The cluster as users run it: real PostgreSQL (devices/pgtest), NATS with
// JetStream (the nats-server binary), Mosquitto (ingest/mqtttest), InfluxDB
// (storage/influxtest) and three telemetryd PROCESSES on free loopback
// ports, each with its own data dir and instance id, sharing the registry,
// NATS, the broker and InfluxDB. The tests of "Done means" in issue 16 run
// against one such cluster (cluster_e2e_test.go).

import (
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/devices/pgtest"
	"github.com/telemetryd/telemetryd/ingest/mqtttest"
	"github.com/telemetryd/telemetryd/internal/testsupport"
	"github.com/telemetryd/telemetryd/live/relay/natstest"
	"github.com/telemetryd/telemetryd/storage/influxtest"
)

// clusterShareGroup is the instances' MQTT share group.
const clusterShareGroup = "telemetryd"

// cluster is the shared servers and the three instances a, b, c.
type cluster struct {
	t      *testing.T
	pg     *pgtest.Server
	broker *mqtttest.Broker
	influx *influxtest.Server
	nats   clusterNATS // nil without the live fan-out
	db     string
	nodes  []*clusterNode
}

// clusterNATS is what the harness needs of a NATS server.
type clusterNATS interface {
	URL() string
	Stop()
	Restart(t testing.TB)
}

// clusterNode is one telemetryd process of the cluster.
type clusterNode struct {
	*proc
	name    string
	dataDir string
}

// svc lets the in-process helpers (adminCall, provision, scrape,
// waitMetric) address the process; its address survives restarts.
func (n *clusterNode) svc() *service { return &service{addr: n.getAddr()} }

func (n *clusterNode) url(path string) string { return "http://" + n.getAddr() + path }

// startCluster starts the servers and three instances sharing them.
func startCluster(t *testing.T, db string) *cluster {
	t.Helper()
	c := &cluster{t: t, db: db}
	c.pg = pgtest.Start(t)
	c.influx = influxtest.Start(t)
	c.broker = mqtttest.Start(t, mqtttest.Options{})
	c.influx.CreateDB(t, db)
	if binaryHasFlag(t, "live-nats-url") {
		c.nats = startClusterNATS(t)
	}
	for _, name := range []string{"a", "b", "c"} {
		n := &clusterNode{name: name, dataDir: filepath.Join(t.TempDir(), "data-"+name)}
		n.proc = startProc(t, c.args(n)...)
		c.nodes = append(c.nodes, n)
	}
	for _, n := range c.nodes {
		n.waitReady()
	}
	return c
}

// args are node n's flags: the shared servers, its own data dir and
// instance id, and the cluster settings the binary knows.
func (c *cluster) args(n *clusterNode) []string {
	args := []string{
		"-registry-url", c.pg.URL(),
		"-influx-url", c.influx.URL(), "-influx-bucket", c.db + "/autogen",
		"-mqtt-url", c.broker.URL(),
		"-admin-token", testAdminToken,
		"-data-dir", n.dataDir,
		"-shutdown-grace", "10s",
		"-log-level", "info",
	}
	if binaryHasFlag(c.t, "instance-id") {
		args = append(args, "-instance-id", n.name)
	}
	if binaryHasFlag(c.t, "mqtt-share-group") {
		// The client ids are <mqtt-client-id>-<instance-id>-<n>.
		args = append(args, "-mqtt-share-group", clusterShareGroup, "-mqtt-client-id", "telemetryd")
	} else {
		// Without share groups, one client id each (and every instance
		// consumes every message: no MQTT test runs then).
		args = append(args, "-mqtt-client-id", "telemetryd-"+n.name)
	}
	if c.nats != nil {
		args = append(args, "-live-nats-url", c.nats.URL())
	}
	return args
}

func (c *cluster) a() *clusterNode { return c.nodes[0] }
func (c *cluster) b() *clusterNode { return c.nodes[1] }
func (c *cluster) c() *clusterNode { return c.nodes[2] }

// urls are the instances' base URLs.
func (c *cluster) urls() []string {
	var out []string
	for _, n := range c.nodes {
		out = append(out, n.url(""))
	}
	return out
}

// requireFeature fails (CI=true) or skips a test that needs a cluster
// setting this binary does not have yet.
func requireFeature(t *testing.T, flag, what string) {
	t.Helper()
	if !binaryHasFlag(t, flag) {
		testsupport.Missing(t, "telemetryd has no -"+flag+": "+what+" not built")
	}
}

var (
	helpOnce sync.Once
	helpText string
)

// binaryHasFlag reports whether the built telemetryd knows -name.
func binaryHasFlag(t *testing.T, name string) bool {
	t.Helper()
	bin := telemetrydBinary(t)
	helpOnce.Do(func() {
		out, _ := exec.Command(bin, "-h").CombinedOutput()
		helpText = string(out)
	})
	return strings.Contains(helpText, "-"+name+" ") || strings.Contains(helpText, "-"+name+"\n")
}

// clusterDial connects a device over WebSocket to instance n.
func clusterDial(t *testing.T, n *clusterNode, token string) *wsClient {
	t.Helper()
	return mustDialWS(t, n.ws("/v1/ingest"), bearer(token))
}

// waitKnown waits until instance n's registry holds device id. It asks the
// admin API (served from n's memory) rather than polling a device upgrade:
// every refused upgrade counts against the address in the auth guard.
func waitKnown(t *testing.T, n *clusterNode, id string, within time.Duration) {
	t.Helper()
	eventually(t, within, "device "+id+" known on "+n.name, func() bool {
		status, _ := adminCall(t, n.svc(), "GET", "/api/v1/devices/"+id, "")
		return status == http.StatusOK
	})
}

// httpStatus is GET url's status, 0 when it cannot be reached.
func httpStatus(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// clusterWait is the bound of the harness's polls on the 2-core machine.
const clusterWait = 30 * time.Second

// startClusterNATS runs Debian's nats-server binary with JetStream, as
// `make run-cluster` does (missing: skipped, or a failure under CI=true).
func startClusterNATS(t *testing.T) clusterNATS { return natstest.StartBinary(t) }
