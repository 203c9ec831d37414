package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/ingest/mqtttest"
	"github.com/telemetryd/telemetryd/storage/influxtest"
)

// shippedBrokerLimits returns the message and in-flight limits of
// deploy/mosquitto.conf, as config lines.
func shippedBrokerLimits(t *testing.T) string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "deploy", "mosquitto.conf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "message_size_limit ") || strings.HasPrefix(l, "max_inflight_bytes ") {
			out = append(out, l)
		}
	}
	if len(out) != 2 {
		t.Fatalf("deploy/mosquitto.conf sets %q, want message_size_limit and max_inflight_bytes", out)
	}
	return strings.Join(out, "\n") + "\n"
}

// TestMQTTDeviceLimits: an MQTT device over its limits — a message larger
// than the shipped broker's cap, one larger than telemetryd's
// -max-frame-bytes, a burst over its frame rate — is refused and counted
// per device and reason, and not stored (issue 17.8).
func TestMQTTDeviceLimits(t *testing.T) {
	influx := influxtest.Start(t)
	broker := mqtttest.Start(t, mqtttest.Options{ExtraConfig: shippedBrokerLimits(t)})
	svc := startService(t, influx, broker, tokensFile(t, "mqtt-lim", "tok-lim", "mqtt-ok", "tok-ok"),
		"-max-frame-bytes", "8192", "-device-frame-rate", "1", "-mqtt-device-frame-burst", "3")
	waitReady(t, svc)
	dev := mustMQTTDial(t, broker.URL(), "mqtt-lim-client", "", "")
	pub := func(device, payload string) {
		t.Helper()
		tok := dev.Publish("devices/"+device+"/telemetry", 1, false, payload)
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	received := func() float64 { return metric(t, svc, `telemetryd_frames_received_total{transport="mqtt"}`) }

	// Over the shipped broker cap (256 KiB): the broker drops it.
	pub("mqtt-lim", `{"measurement":"lim","metrics":{"pad":"`+strings.Repeat("x", 300<<10)+`"}}`)
	// Over -max-frame-bytes (8 KiB), under the broker cap: telemetryd
	// refuses it before decoding.
	pub("mqtt-lim", `{"measurement":"lim","metrics":{"pad":"`+strings.Repeat("x", 16<<10)+`"}}`)
	pub("mqtt-lim", `{"measurement":"lim","metrics":`) // invalid: counted for the device
	eventually(t, 15*time.Second, "the 16 KiB and invalid messages to arrive", func() bool { return received() >= 2 })
	// A burst of 30 over a bucket of 3 at 1/s.
	const burst = 30
	start := time.Now()
	for i := range burst {
		pub("mqtt-lim", fmt.Sprintf(`{"ts":%d,"measurement":"lim","metrics":{"n":%d}}`, 1700000000000+i, i))
	}
	elapsed := time.Since(start)
	// Another device is not limited by it.
	pub("mqtt-ok", `{"ts":1700000000000,"measurement":"ok","metrics":{"n":1}}`)
	eventually(t, 15*time.Second, "every message to arrive", func() bool { return received() >= 3+burst })
	eventually(t, 15*time.Second, "the other device's reading", func() bool { return pointsOf(t, influx, testDB, "mqtt-ok") == 1 })

	if v := received(); v != 3+burst {
		t.Fatalf("telemetryd received %v MQTT messages, want %d (the broker must drop the one over its cap)", v, 3+burst)
	}
	if v := metric(t, svc, `telemetryd_mqtt_refused_total{device="mqtt-lim",reason="invalid_payload"}`); v != 1 {
		t.Fatalf("invalid_payload refusals of mqtt-lim = %v, want 1", v)
	}
	if v := metric(t, svc, `telemetryd_mqtt_refused_total{device="mqtt-lim",reason="too_big"}`); v != 1 {
		t.Fatalf("too_big refusals of mqtt-lim = %v, want 1", v)
	}
	allowed := 3 + int(elapsed.Seconds()) + 1 // the bucket, and its refill meanwhile
	limited := metric(t, svc, `telemetryd_mqtt_refused_total{device="mqtt-lim",reason="rate_limited"}`)
	if limited < float64(burst-allowed) {
		t.Fatalf("rate_limited refusals of mqtt-lim = %v, want ≥ %d", limited, burst-allowed)
	}
	if n := pointsOf(t, influx, testDB, "mqtt-lim"); n != int64(burst)-int64(limited) {
		t.Fatalf("%d points of mqtt-lim stored, want %d (the burst less the refused)", n, burst-int(limited))
	}
}
