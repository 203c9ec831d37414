package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/telemetryd/telemetryd/ingest/mqtttest"
	"github.com/telemetryd/telemetryd/storage/influxtest"
)

// mqttDial connects once (no retries) with the given credentials.
func mqttDial(url, clientID, user, password string) (mqtt.Client, error) {
	o := mqtt.NewClientOptions().AddBroker(url).SetClientID(clientID).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	if user != "" {
		o.SetUsername(user).SetPassword(password)
	}
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("connect timed out")
	}
	if tok.Error() != nil {
		return nil, tok.Error()
	}
	return c, nil
}

func mustMQTTDial(t *testing.T, url, clientID, user, password string) mqtt.Client {
	t.Helper()
	var c mqtt.Client
	// The broker reloads its files asynchronously after SIGHUP.
	eventually(t, 15*time.Second, "mqtt login of "+clientID, func() bool {
		var err error
		c, err = mqttDial(url, clientID, user, password)
		return err == nil
	})
	t.Cleanup(func() { c.Disconnect(50) })
	return c
}

// testSecurityMosquittoACL provisions devices through the admin API, lets
// the service write Mosquitto's password and ACL files, and checks with a
// real broker that devices log in with their tokens, publish only to their
// own topics (a gateway also to its devices'), and that nothing published
// to another device's topic reaches InfluxDB.
func testSecurityMosquittoACL(t *testing.T, influx *influxtest.Server) {
	const db = "sec_mqtt_acl"
	svc, broker, pwFile, aclFile := startWithBrokerAuth(t, influx, db)
	waitReady(t, svc) // the service's own account logged in and subscribed

	a, aTok := provision(t, svc, `{"name":"a"}`)
	b, bTok := provision(t, svc, `{"name":"b"}`)
	gw, gwTok := provision(t, svc, `{"name":"gw","kind":"gateway"}`)
	child, _ := provision(t, svc, `{"name":"child","gateway":"`+gw+`"}`)
	eventually(t, 10*time.Second, "files rewritten", func() bool {
		acl, _ := os.ReadFile(aclFile)
		return strings.Contains(string(acl), "topic write devices/"+child+"/telemetry")
	})
	broker.Reload(t)

	url := broker.URL()
	ca := mustMQTTDial(t, url, "dev-a", a, aTok)
	cb := mustMQTTDial(t, url, "dev-b", b, bTok)
	cg := mustMQTTDial(t, url, "dev-gw", gw, gwTok)
	pub := func(c mqtt.Client, dev string, n int) {
		t.Helper()
		publish(t, c, "devices/"+dev+"/telemetry", fmt.Sprintf(`{"measurement":"acl","metrics":{"n":%d}}`, n))
	}
	waitPoints := func(dev string, n int64) {
		t.Helper()
		eventually(t, 15*time.Second, fmt.Sprintf("%d points of %s", n, dev), func() bool { return pointsOf(t, influx, db, dev) == n })
	}

	// Wrong credentials are refused by the broker.
	for _, cred := range [][2]string{{a, bTok}, {a, aTok + "x"}, {"nobody", aTok}, {"", ""}, {"telemetryd", "wrong"}} {
		if c, err := mqttDial(url, "intruder", cred[0], cred[1]); err == nil {
			c.Disconnect(0)
			t.Fatalf("login as %q with a wrong password accepted", cred[0])
		}
	}

	// Device a may not read device topics.
	var sniffed atomic.Int64
	st := ca.Subscribe("devices/+/telemetry", 1, func(mqtt.Client, mqtt.Message) { sniffed.Add(1) })
	st.WaitTimeout(5 * time.Second)

	pub(ca, a, 1)
	waitPoints(a, 1)
	pub(ca, b, 99) // not a's topic: the broker drops it
	pub(ca, a, 2)  // barrier: same client, same order
	waitPoints(a, 2)
	pub(cb, b, 1)
	eventually(t, 15*time.Second, "b's own reading", func() bool { return storedSeqs(t, influx, db, "acl", b)[1] })
	if got := storedSeqs(t, influx, db, "acl", b); len(got) != 1 {
		t.Fatalf("b's readings %v, want only 1: a's publish to b's topic got through", got)
	}
	if n := sniffed.Load(); n != 0 {
		t.Fatalf("device a received %d messages from device topics", n)
	}

	// A gateway publishes for its device, not for others.
	pub(cg, child, 5)
	pub(cg, a, 98)
	pub(cg, gw, 6)
	waitPoints(gw, 1)
	waitPoints(child, 1)
	if got := storedSeqs(t, influx, db, "acl", a); len(got) != 2 || got[98] {
		t.Fatalf("a's readings %v, want 1 and 2 only", got)
	}

	// Revocation: the service drops the device's messages at once, before
	// the broker is even reloaded; after the reload it cannot log in.
	if status, _ := adminCall(t, svc, "POST", "/api/v1/devices/"+a+"/revoke", ""); status != 200 {
		t.Fatalf("revoke: %d", status)
	}
	pub(ca, a, 3)
	pub(cb, b, 2)
	eventually(t, 15*time.Second, "b's second reading", func() bool { return storedSeqs(t, influx, db, "acl", b)[2] })
	if n := pointsOf(t, influx, db, a); n != 2 {
		t.Fatalf("%d points of the revoked device, want 2", n)
	}
	eventually(t, 10*time.Second, "a removed from the files", func() bool {
		pw, _ := os.ReadFile(pwFile)
		return !strings.Contains(string(pw), a+":")
	})
	broker.Reload(t)
	eventually(t, 15*time.Second, "a refused by the broker", func() bool {
		c, err := mqttDial(url, "dev-a-again", a, aTok)
		if err == nil {
			c.Disconnect(0)
		}
		return err != nil
	})
}

// testSecurityMQTTOverTLS: the service consumes from an ssl:// listener
// whose certificate is signed by the CA given with -mqtt-ca.
func testSecurityMQTTOverTLS(t *testing.T, influx *influxtest.Server) {
	const db = "sec_mqtt_tls"
	pki := newTestPKI(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	broker := mqtttest.Start(t, mqtttest.Options{ExtraConfig: fmt.Sprintf("listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\n",
		port, pki.caFile, pki.certFile, pki.keyFile)})
	svc := startService(t, influx, broker, tokensFile(t), "-influx-bucket", db+"/autogen",
		"-mqtt-url", fmt.Sprintf("ssl://127.0.0.1:%d", port), "-mqtt-ca", pki.caFile)
	waitReady(t, svc) // connected over TLS: its only broker URL is ssl://
	id, _ := provision(t, svc, `{"name":"tls-mqtt"}`)
	pub := newMQTTClient(t, broker.URL(), "tls-test-pub") // the plain listener
	publish(t, pub, "devices/"+id+"/telemetry", `{"measurement":"tls","metrics":{"n":1}}`)
	eventually(t, 15*time.Second, "reading stored through the TLS consumer", func() bool { return pointsOf(t, influx, db, id) == 1 })
}

// testSecurityInfluxTLS: with an https:// InfluxDB URL the service checks
// the server's certificate against -influx-ca, and writes through TLS. A
// TLS-terminating proxy in front of the real influxd plays the server.
func testSecurityInfluxTLS(t *testing.T, influx *influxtest.Server) {
	const db = "sec_influx_tls"
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

	// Without the CA, InfluxDB is not trusted.
	cfg, err := parseConfig([]string{"-influx-url", proxy.URL, "-influx-bucket", db + "/autogen"}, func(string) (string, bool) { return "", false }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	store, err := newStorage(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if err := store.Connect(ctx); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("untrusted InfluxDB: %v", err)
	}

	svc := startService(t, influx, nil, tokensFile(t), "-influx-bucket", db+"/autogen", "-influx-url", proxy.URL, "-influx-ca", pki.caFile)
	id, tok := provision(t, svc, `{"name":"via-https-influx"}`)
	sendAcked(t, mustDialWS(t, svc.ws("/v1/ingest"), bearer(tok)), "tls_influx", 1)
	if n := pointsOf(t, influx, db, id); n != 1 {
		t.Fatalf("%d points written through https, want 1", n)
	}
}

// startWithBrokerAuth runs telemetryd against a Mosquitto that authenticates
// every client with the password and ACL files generated from the registry
// (anonymous access off), writing to database db. It returns the service,
// the broker and the two files, which the service rewrites on every
// registry change.
func startWithBrokerAuth(t *testing.T, influx *influxtest.Server, db string) (*service, *mqtttest.Broker, string, string) {
	t.Helper()
	const svcPassword = "service-password-for-tests"
	dataDir, dir := t.TempDir(), t.TempDir()
	pwFile, aclFile := filepath.Join(dir, "passwd"), filepath.Join(dir, "acl")
	env := func(k string) (string, bool) {
		switch k {
		case "TELEMETRY_MQTT_USERNAME":
			return "telemetryd", true
		case "TELEMETRY_MQTT_PASSWORD":
			return svcPassword, true
		}
		return "", false
	}
	// The subcommand writes the first files (the service account only), so
	// that the broker can start with anonymous access off.
	var stdout, stderr strings.Builder
	if err := mosquittoAuthCommand(t.Context(), []string{"-password-file", pwFile, "-acl-file", aclFile, "-data-dir", dataDir}, env, &stdout, &stderr); err != nil {
		t.Fatalf("mosquitto-auth: %v %s", err, stderr.String())
	}
	broker := mqtttest.Start(t, mqtttest.Options{PasswordFile: pwFile, ACLFile: aclFile})
	svc := startService(t, influx, broker, tokensFile(t), "-influx-bucket", db+"/autogen", "-data-dir", dataDir,
		"-mqtt-username", "telemetryd", "-mqtt-password", svcPassword,
		"-mosquitto-password-file", pwFile, "-mosquitto-acl-file", aclFile)
	return svc, broker, pwFile, aclFile
}
