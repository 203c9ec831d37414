package main

// `make run-cluster` (deploy/run-cluster.sh) and its balancer's
// configuration (deploy/haproxy.cfg).

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/internal/testsupport"
)

// haproxyEnv is the environment deploy/haproxy.cfg reads its addresses from.
func haproxyEnv(lb, stats string, instances ...string) []string {
	return append(os.Environ(), "HAPROXY_BIND="+lb, "HAPROXY_STATS_BIND="+stats,
		"TELEMETRYD_A="+instances[0], "TELEMETRYD_B="+instances[1], "TELEMETRYD_C="+instances[2])
}

// TestHAProxyConfig: the shipped configuration is valid for HAProxy itself
// with its addresses set, and refused without them (a check that cannot
// fail would prove nothing); the launcher's check mode agrees.
func TestHAProxyConfig(t *testing.T) {
	haproxy := testsupport.Binary(t, "", "make tools installs it", "/usr/sbin/haproxy", "haproxy")
	cfg := filepath.Join(repoRoot, "deploy", "haproxy.cfg")
	check := func(env []string) (string, error) {
		cmd := exec.Command(haproxy, "-c", "-f", cfg)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	env := haproxyEnv("127.0.0.1:8080", "127.0.0.1:8404", "127.0.0.1:8181", "127.0.0.1:8182", "telemetryd-c:8080")
	if out, err := check(env); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	// As docker-compose's cluster profile sets it (names resolved later).
	compose := haproxyEnv(":8080", ":8404", "telemetryd-a:8080", "telemetryd-b:8080", "telemetryd-c:8080")
	if out, err := check(compose); err != nil {
		t.Fatalf("haproxy -c with the compose environment: %v\n%s", err, out)
	}
	if out, err := check([]string{"PATH=" + os.Getenv("PATH")}); err == nil {
		t.Fatalf("haproxy -c accepted the configuration without addresses:\n%s", out)
	}
	raw, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"uri /readyz", "timeout tunnel", "option redispatch"} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("deploy/haproxy.cfg lacks %q", want)
		}
	}
	cmd := exec.Command("bash", filepath.Join(repoRoot, "deploy", "run-cluster.sh"))
	cmd.Env = append(os.Environ(), "CLUSTER_CHECK=1", "TELEMETRY_DATA_DIR="+t.TempDir())
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "haproxy configuration OK") {
		t.Fatalf("run-cluster.sh check: %v\n%s", err, out)
	}
}

// TestRunClusterSmoke runs `make run-cluster`'s script for real on free
// ports with a small demo fleet: through HAProxy the cluster is ready and
// serves the admin API, every instance ingests, the fleet's MQTT load is
// shared among the three, and SIGINT (Ctrl-C) stops everything.
func TestRunClusterSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole cluster")
	}
	requireFeature(t, "mqtt-share-group", "MQTT shared subscriptions")
	requireFeature(t, "live-nats-url", "the NATS live fan-out")
	testsupport.Binary(t, "", "make tools installs it", "/usr/sbin/haproxy", "haproxy")
	testsupport.Binary(t, "", "make tools installs it", "/usr/sbin/nats-server", "nats-server")
	influxd := testsupport.Binary(t, "TELEMETRY_INFLUXD", "make tools installs it", ".tools/bin/influxd", "influxd")
	telemetryd, simulator := telemetrydBinary(t), simulatorBinary(t)
	// The PostgreSQL user must reach its directory inside the data dir.
	data, err := os.MkdirTemp("", "run-cluster-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(data) })
	if err := os.Chmod(data, 0o755); err != nil {
		t.Fatal(err)
	}
	port := func() string { return freePort(t) }
	lb, stats, inst := port(), port(), []string{port(), port(), port()}
	influxPort, pgPort, natsPort := port(), port(), port()
	cmd := exec.Command("bash", filepath.Join(repoRoot, "deploy", "run-cluster.sh"))
	cmd.Env = append(os.Environ(), "TELEMETRY_DATA_DIR="+data,
		"LB_PORT="+lb, "LB_STATS_PORT="+stats, "INSTANCE_PORTS="+strings.Join(inst, " "),
		"PG_PORT="+pgPort, "NATS_PORT="+natsPort, "NATS_MONITOR_PORT="+port(),
		"INFLUX_PORT="+influxPort, "MQTT_PORT="+port(),
		"TELEMETRYD_BIN="+telemetryd, "SIMULATOR_BIN="+simulator, "INFLUXD_BIN="+influxd,
		"SIMULATOR_DEVICES=6", "TELEMETRY_LOG_FORMAT=json")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	printed := make(chan struct{})
	exited := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			out.Write([]byte(sc.Text() + "\n"))
			if strings.Contains(sc.Text(), "Ctrl-C stops everything") {
				close(printed)
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		exited <- cmd.Wait()
	}()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
			select {
			case <-exited:
			case <-time.After(60 * time.Second):
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			}
		}
		if t.Failed() {
			t.Logf("run-cluster.sh:\n%s", out)
			for _, f := range []string{"telemetryd-a.log", "simulator.log", "haproxy.log"} {
				raw, _ := os.ReadFile(filepath.Join(data, "logs", f))
				t.Logf("%s:\n%s", f, tail(string(raw), 3000))
			}
		}
	})
	select {
	case <-printed:
	case err := <-exited:
		t.Fatalf("run-cluster.sh exited: %v\n%s", err, out)
	case <-time.After(120 * time.Second):
		t.Fatalf("run-cluster.sh did not print its URLs\n%s", out)
	}
	for _, want := range []string{"http://127.0.0.1:" + lb, "127.0.0.1:" + inst[0], "127.0.0.1:" + inst[2], "nats://", "postgres://"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("URLs printed lack %s", want)
		}
	}
	through := &service{addr: "127.0.0.1:" + lb}
	if s := httpStatus(through.url("/readyz")); s != http.StatusOK {
		t.Fatalf("readyz through HAProxy: %d", s)
	}
	admin, err := os.ReadFile(filepath.Join(data, "secrets", "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", through.url("/api/v1/devices"), nil)
	req.Header.Set("Authorization", "Bearer "+string(admin))
	eventually(t, clusterWait, "the demo fleet provisioned, through HAProxy", func() bool {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK && strings.Count(string(body), `"demo-dev-`) == 6
	})
	// Every instance consumes its share of the fleet's MQTT messages; the
	// WebSocket devices come through HAProxy.
	for i, p := range inst {
		svc := &service{addr: "127.0.0.1:" + p}
		waitMetric(t, svc, "instance "+strconv.Itoa(i)+" consumes MQTT", atLeast(1), "telemetryd_mqtt_client_messages_total")
	}
	eventually(t, clusterWait, "WebSocket readings through HAProxy", func() bool {
		n := 0.0
		for _, p := range inst {
			n += max(0, scrape(t, &service{addr: "127.0.0.1:" + p}).get("telemetryd_readings_accepted_total", `transport="ws"`))
		}
		return n > 0
	})

	// kill -9 of instance b: HAProxy takes it out of rotation, requests
	// through it keep being answered, and the WebSocket devices go on
	// through a and c.
	m := regexp.MustCompile(`b http://127\.0\.0\.1:\d+\s+\(pid (\d+)\)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no pid of instance b in the banner:\n%s", out)
	}
	pid, _ := strconv.Atoi(m[1])
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, clusterWait, "HAProxy marks b DOWN", func() bool {
		resp, err := http.Get("http://127.0.0.1:" + stats + "/;csv")
		if err != nil {
			return false
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return strings.Contains(string(body), "\ntelemetryd,b,") && regexp.MustCompile(`\ntelemetryd,b,(?:[^,\n]*,){15}DOWN`).Match(body)
	})
	for range 6 {
		if s := httpStatus(through.url("/readyz")); s != http.StatusOK {
			t.Fatalf("readyz through HAProxy with b down: %d", s)
		}
	}
	wsOn := func() float64 {
		n := 0.0
		for _, p := range []string{inst[0], inst[2]} {
			n += max(0, scrape(t, &service{addr: "127.0.0.1:" + p}).get("telemetryd_readings_accepted_total", `transport="ws"`))
		}
		return n
	}
	was := wsOn()
	eventually(t, clusterWait, "WebSocket readings through a and c with b down", func() bool { return wsOn() > was+5 })

	// Ctrl-C: everything stops, every port is released.
	stopped = true
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(60 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		t.Fatalf("run-cluster.sh did not stop on SIGINT\n%s", out)
	}
	for _, p := range append([]string{lb, influxPort, pgPort, natsPort}, inst...) {
		eventually(t, 30*time.Second, "port "+p+" released", func() bool {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+p, time.Second)
			if err == nil {
				c.Close()
			}
			return err != nil
		})
	}
}
