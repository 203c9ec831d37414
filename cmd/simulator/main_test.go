package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/simulator"
)

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestParseFlagsAndEnv(t *testing.T) {
	env := envOf(map[string]string{
		"TELEMETRY_URL":             "http://svc:9000",
		"TELEMETRY_ADMIN_TOKEN":     "admin-secret",
		"TELEMETRY_MQTT_URL":        "tcp://broker:1884",
		"TELEMETRY_INFLUX_URL":      "http://influx:8087",
		"TELEMETRY_INFLUX_BUCKET":   "metrics/week",
		"TELEMETRY_INFLUX_TOKEN":    "u:p",
		"TELEMETRY_MAX_FRAME_BYTES": "65536",
	})
	o, err := parse([]string{
		"-devices", "500", "-rate", "2", "-transport", "mixed", "-duration", "60s", "-profile", "vehicle",
		"-faults", "malformed=0.01,skew=0.02", "-fault-skew", "0.03", "-fault-wrong-token", "0.001",
		"-burst", "20/10s", "-verify", "-url", "http://override:1",
	}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c := o.cfg
	if c.ServiceURL != "http://override:1" || c.AdminToken != "admin-secret" || c.MQTTURL != "tcp://broker:1884" ||
		c.InfluxURL != "http://influx:8087" || c.InfluxBucket != "metrics/week" || c.InfluxToken != "u:p" || c.MaxFrameBytes != 65536 {
		t.Fatalf("endpoints %+v", c)
	}
	if c.Devices != 500 || c.Rate != 2 || c.Transport != simulator.TransportMixed || c.Duration != time.Minute ||
		c.Profile != "vehicle" || !c.Verify || c.Burst != (simulator.Burst{Size: 20, Every: 10 * time.Second}) {
		t.Fatalf("load %+v", c)
	}
	// A per-fault flag wins over -faults; the others stay.
	if want := "malformed=0.01,skew=0.03,wrong_token=0.001"; c.Faults.String() != want {
		t.Fatalf("faults %q, want %q", c.Faults.String(), want)
	}
}

func TestParseSeveralURLs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want []string
	}{
		{nil, nil, []string{"http://127.0.0.1:8080"}},
		{nil, map[string]string{"TELEMETRY_URL": "http://a:1,http://b:2"}, []string{"http://a:1", "http://b:2"}},
		{[]string{"-url", "http://a:1, http://b:2,http://c:3"}, map[string]string{"TELEMETRY_URL": "http://env:1"}, []string{"http://a:1", "http://b:2", "http://c:3"}},
		{[]string{"-url", "http://a:1", "-url", "http://b:2"}, nil, []string{"http://a:1", "http://b:2"}},
	} {
		o, err := parse(tc.args, envOf(tc.env), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if got := o.cfg.ServiceURLs; strings.Join(got, " ") != strings.Join(tc.want, " ") || o.cfg.ServiceURL != tc.want[0] {
			t.Errorf("%v %v: urls %v (service %s), want %v", tc.args, tc.env, got, o.cfg.ServiceURL, tc.want)
		}
	}
}

func TestRunExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"-h"}, 0, "Usage: simulator"},
		{[]string{"-transport", "pigeon"}, 2, "transport"},
		{[]string{"-faults", "gremlins=1"}, 2, "unknown fault"},
		{[]string{"-burst", "lots"}, 2, "burst"},
		{[]string{"extra"}, 2, "unexpected arguments"},
		{[]string{"-provision-only"}, 2, "credentials file"},
		// Nothing listens on port 1: provisioning fails, the run cannot take place.
		{[]string{"-url", "http://127.0.0.1:1", "-admin-token", "x", "-devices", "1", "-quiet"}, 2, "admin API"},
	} {
		var stdout, stderr strings.Builder
		code := run(context.Background(), tc.args, envOf(nil), &stdout, &stderr)
		if code != tc.code || !strings.Contains(stdout.String()+stderr.String(), tc.out) {
			t.Errorf("%v: exit %d, want %d; output %q lacks %q", tc.args, code, tc.code, stdout.String()+stderr.String(), tc.out)
		}
	}
}
