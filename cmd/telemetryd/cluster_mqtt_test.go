package main

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/ingest/mqtttest"
	"github.com/telemetryd/telemetryd/storage/influxtest"
)

func TestResolveInstanceID(t *testing.T) {
	host := func(h string, err error) func() (string, error) { return func() (string, error) { return h, err } }
	noHost := errors.New("no host name")
	tests := []struct {
		name     string
		cfg      config
		hostname func() (string, error)
		want     string
		clientID string
		err      bool
	}{
		{"single instance keeps its client id", config{MQTTClientID: "telemetryd"}, host("box1", nil), "box1", "telemetryd", false},
		{"host name is the default", config{MQTTClientID: "telemetryd", MQTTShareGroup: "fleet"}, host("node-2.example", nil), "node-2.example", "telemetryd-node-2.example", false},
		{"host name made safe", config{MQTTClientID: "t", MQTTShareGroup: "fleet"}, host("pod 3/x+y", nil), "pod-3-x-y", "t-pod-3-x-y", false},
		{"given id wins", config{MQTTClientID: "t", MQTTShareGroup: "fleet", InstanceID: "a"}, host("box1", nil), "a", "t-a", false},
		{"given id checked", config{InstanceID: "a/b"}, host("box1", nil), "", "", true},
		{"given id too long", config{InstanceID: fmt.Sprintf("%065d", 0)}, host("box1", nil), "", "", true},
		{"no host name, no cluster: fine", config{MQTTClientID: "telemetryd"}, host("", noHost), "", "telemetryd", false},
		{"no host name in a cluster: refused", config{MQTTShareGroup: "fleet"}, host("", noHost), "", "", true},
	}
	for _, tt := range tests {
		c := tt.cfg
		err := c.resolveInstanceID(tt.hostname)
		if (err != nil) != tt.err {
			t.Errorf("%s: error %v, want error %v", tt.name, err, tt.err)
			continue
		}
		if err != nil {
			continue
		}
		if c.InstanceID != tt.want || mqttClientID(c) != tt.clientID {
			t.Errorf("%s: instance %q client %q; want %q %q", tt.name, c.InstanceID, mqttClientID(c), tt.want, tt.clientID)
		}
	}
}

// TestMQTTShareGroupAcrossInstances: two telemetryd instances in one MQTT
// share group, on a real Mosquitto and InfluxDB. 20 devices publish a known
// set of readings: every one is stored, each is consumed by exactly one
// instance (their counters add up to the total, the readings written too),
// and each instance's metrics show the share it consumed. Then B stops,
// more is published, and B restarted under the same instance id picks its
// session back up: its share of what was published while it was away is
// stored too.
func TestMQTTShareGroupAcrossInstances(t *testing.T) {
	const devices, perDevice = 20, 10
	influx := influxtest.Start(t)
	broker := mqtttest.Start(t, mqtttest.Options{})
	var pairs []string
	for d := range devices {
		pairs = append(pairs, fmt.Sprintf("share-dev-%d", d), fmt.Sprintf("tok-%d", d))
	}
	tokens := tokensFile(t, pairs...)
	a := startService(t, influx, broker, tokens, "-mqtt-share-group", "fleet", "-instance-id", "a")
	b := startService(t, influx, broker, tokens, "-mqtt-share-group", "fleet", "-instance-id", "b")
	waitReady(t, a)
	waitReady(t, b)

	pub := newMQTTClient(t, broker.URL(), "share-publisher")
	base := time.Now().Add(-time.Hour).UnixMilli()
	publishRound := func(from, to int) {
		for i := from; i < to; i++ {
			for d := range devices {
				publish(t, pub, fmt.Sprintf("devices/share-dev-%d/telemetry", d),
					fmt.Sprintf(`{"ts":%d,"measurement":"share","metrics":{"v":%d}}`, base+int64(i), i))
			}
		}
	}
	publishRound(0, perDevice)
	const total = devices * perDevice
	eventually(t, 30*time.Second, "every reading stored", func() bool {
		return influx.CountPoints(t, testDB, "share", "v") == total
	})
	// The counters follow the writes' answers, which may trail the points
	// becoming queryable by a moment: poll them too.
	var frames, written float64
	eventually(t, 10*time.Second, "the counters of both instances to add up", func() bool {
		frames, written = 0, 0
		for _, svc := range []*service{a, b} {
			m := scrape(t, svc)
			frames += m.get("telemetryd_frames_received_total", `transport="mqtt"`)
			written += m.get("telemetryd_readings_written_total")
		}
		return frames == total && written == total
	})
	for _, s := range []struct {
		name string
		svc  *service
	}{{"a", a}, {"b", b}} {
		share := scrape(t, s.svc).get("telemetryd_mqtt_client_messages_total", `client_id="telemetryd-test-`+t.Name()+"-"+s.name+`-0"`)
		if share <= 0 {
			t.Errorf("instance %s consumed no share (telemetryd_mqtt_client_messages_total = %v)", s.name, share)
		}
		t.Logf("instance %s consumed %v of %d messages", s.name, share, total)
	}

	// B away: A gets only its own share; B's waits in B's sessions.
	b.stop(t)
	publishRound(perDevice, 2*perDevice)
	b2 := startService(t, influx, broker, tokens, "-mqtt-share-group", "fleet", "-instance-id", "b")
	eventually(t, 30*time.Second, "every reading stored, B's share after its return", func() bool {
		return influx.CountPoints(t, testDB, "share", "v") == 2*total
	})
	if got := scrape(t, b2).get("telemetryd_frames_received_total", `transport="mqtt"`); got <= 0 {
		t.Fatalf("restarted B consumed %v: its session's share should have waited for it", got)
	}
}
