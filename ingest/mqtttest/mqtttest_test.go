package mqtttest_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/telemetryd/telemetryd/ingest/mqtttest"
	"github.com/telemetryd/telemetryd/internal/testsupport"
)

const waitTimeout = 10 * time.Second

// connect connects a paho client and fails the test on error. Messages on
// any topic go to the returned channel (the default handler is set before
// Connect, so a persistent session's backlog is not lost).
func connect(t *testing.T, b *mqtttest.Broker, id string, clean bool, user, pass string) (mqtt.Client, chan mqtt.Message) {
	t.Helper()
	msgs := make(chan mqtt.Message, 100)
	opts := mqtt.NewClientOptions().
		AddBroker(b.URL()).
		SetClientID(id).
		SetCleanSession(clean).
		SetAutoReconnect(false).
		SetConnectTimeout(5 * time.Second).
		SetWriteTimeout(5 * time.Second).
		SetOrderMatters(false).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { msgs <- m })
	if user != "" {
		opts.SetUsername(user).SetPassword(pass)
	}
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(waitTimeout) {
		t.Fatalf("connect %s: timed out", id)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("connect %s: %v", id, err)
	}
	t.Cleanup(func() {
		if c.IsConnected() {
			c.Disconnect(100)
		}
	})
	return c, msgs
}

func wait(t *testing.T, what string, tok mqtt.Token) {
	t.Helper()
	if !tok.WaitTimeout(waitTimeout) {
		t.Fatalf("%s: timed out", what)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func receive(t *testing.T, msgs <-chan mqtt.Message, topic, payload string) {
	t.Helper()
	select {
	case m := <-msgs:
		if m.Topic() != topic || string(m.Payload()) != payload {
			t.Fatalf("received %s %q, want %s %q", m.Topic(), m.Payload(), topic, payload)
		}
		if m.Qos() != 1 {
			t.Errorf("received QoS %d, want 1", m.Qos())
		}
	case <-time.After(waitTimeout):
		t.Fatalf("no message on %s within %v", topic, waitTimeout)
	}
}

func TestPublishSubscribe(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})
	if !strings.HasPrefix(b.URL(), "tcp://127.0.0.1:") || !strings.HasSuffix(b.URL(), b.Addr()) {
		t.Fatalf("URL %q Addr %q", b.URL(), b.Addr())
	}
	sub, msgs := connect(t, b, "sub", false, "", "")
	wait(t, "subscribe", sub.Subscribe("telemetry/#", 1, nil))
	pub, _ := connect(t, b, "pub", true, "", "")
	wait(t, "publish", pub.Publish("telemetry/dev-1", 1, false, "hello"))
	receive(t, msgs, "telemetry/dev-1", "hello")
}

func TestRestartKeepsPersistentSession(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})

	sub, _ := connect(t, b, "bridge-1", false, "", "")
	wait(t, "subscribe", sub.Subscribe("telemetry/#", 1, nil))
	sub.Disconnect(100)

	pub, _ := connect(t, b, "pub", true, "", "")
	wait(t, "publish", pub.Publish("telemetry/dev-1", 1, false, "queued while offline"))
	pub.Disconnect(100)

	b.Restart(t)

	// Same client ID, clean session false: the broker restored the session
	// (subscription and queued message) from its persistence file.
	_, msgs := connect(t, b, "bridge-1", false, "", "")
	receive(t, msgs, "telemetry/dev-1", "queued while offline")
}

func TestKillAndRestart(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})
	c, _ := connect(t, b, "c", true, "", "")
	b.Kill(t)
	testsupport.Eventually(t, waitTimeout, "the client to see the killed broker gone", func() bool { return !c.IsConnectionOpen() })
	b.Restart(t)
	sub, msgs := connect(t, b, "c2", true, "", "")
	wait(t, "subscribe", sub.Subscribe("a/b", 1, nil))
	wait(t, "publish", sub.Publish("a/b", 1, false, "x"))
	receive(t, msgs, "a/b", "x")
}

func TestPasswordFileAndReload(t *testing.T) {
	dir := t.TempDir()
	pwfile := filepath.Join(dir, "passwd")
	// Mosquitto needs hashed passwords: mosquitto_passwd -U hashes a
	// plain-text file in place.
	pwTool := testsupport.Binary(t, "", "it comes with mosquitto (make tools)", "mosquitto_passwd")
	if err := os.WriteFile(pwfile, []byte("dev-1:secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	runPasswd(t, pwTool, pwfile)

	b := mqtttest.Start(t, mqtttest.Options{PasswordFile: pwfile})
	c, msgs := connect(t, b, "dev-1", true, "dev-1", "secret")
	wait(t, "subscribe", c.Subscribe("x", 1, nil))
	wait(t, "publish", c.Publish("x", 1, false, "ok"))
	receive(t, msgs, "x", "ok")

	// Anonymous and wrong passwords are refused.
	for _, cred := range [][2]string{{"", ""}, {"dev-1", "wrong"}} {
		opts := mqtt.NewClientOptions().AddBroker(b.URL()).SetClientID("anon").
			SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
		if cred[0] != "" {
			opts.SetUsername(cred[0]).SetPassword(cred[1])
		}
		cl := mqtt.NewClient(opts)
		tok := cl.Connect()
		if !tok.WaitTimeout(waitTimeout) {
			t.Fatal("connect timed out")
		}
		if tok.Error() == nil {
			cl.Disconnect(10)
			t.Fatalf("connect with %q succeeded, want refused", cred)
		}
	}

	// Change the password and reload: the new one works.
	if err := os.WriteFile(pwfile, []byte("dev-1:other\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	runPasswd(t, pwTool, pwfile)
	b.Reload(t)
	deadline := time.Now().Add(waitTimeout)
	for {
		cl := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(b.URL()).SetClientID("dev-1b").
			SetUsername("dev-1").SetPassword("other").SetAutoReconnect(false).SetConnectTimeout(5 * time.Second))
		tok := cl.Connect()
		if tok.WaitTimeout(waitTimeout) && tok.Error() == nil {
			cl.Disconnect(10)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("new password refused after Reload: %v\n%s", tok.Error(), b.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func runPasswd(t *testing.T, tool, file string) {
	t.Helper()
	if out, err := exec.Command(tool, "-U", file).CombinedOutput(); err != nil {
		t.Fatalf("%s -U %s: %v\n%s", tool, file, err, out)
	}
}
