package simulator

import (
	"strings"
	"testing"
	"time"
)

func TestParseFaults(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{in: "", want: ""},
		{in: "malformed=0.01,invalid=0.02", want: "malformed=0.01,invalid=0.02"},
		{in: " skew = 0.5 , wrong-token=0.1", want: "skew=0.5,wrong_token=0.1"},
		{in: "all=0.01", want: "malformed=0.01,invalid=0.01,skew=0.01,duplicate=0.01,oversize=0.01,disconnect=0.01,wrong_token=0.01"},
		{in: "all=0.01,skew=0", want: "malformed=0.01,invalid=0.01,duplicate=0.01,oversize=0.01,disconnect=0.01,wrong_token=0.01"},
		{in: "nope=0.1", err: "unknown fault"},
		{in: "none=0.1", err: "unknown fault"},
		{in: "skew", err: "want name=rate"},
		{in: "skew=2", err: "from 0 to 1"},
		{in: "skew=-0.1", err: "from 0 to 1"},
		{in: "skew=NaN", err: "from 0 to 1"},
	} {
		f, err := ParseFaults(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseFaults(%q) error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || f.String() != tc.want {
			t.Errorf("ParseFaults(%q) = %q, %v; want %q", tc.in, f.String(), err, tc.want)
		}
	}
}

func TestParseBurst(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Burst
		ok   bool
	}{
		{"", Burst{}, true},
		{"20/10s", Burst{Size: 20, Every: 10 * time.Second}, true},
		{"0/1m", Burst{Size: 0, Every: time.Minute}, true},
		{"20", Burst{}, false},
		{"x/10s", Burst{}, false},
		{"-1/10s", Burst{}, false},
		{"5/0s", Burst{}, false},
		{"5/soon", Burst{}, false},
	} {
		b, err := ParseBurst(tc.in)
		if (err == nil) != tc.ok || b != tc.want {
			t.Errorf("ParseBurst(%q) = %+v, %v; want %+v ok=%v", tc.in, b, err, tc.want, tc.ok)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	base := Config{Devices: 2}
	for _, tc := range []struct {
		name string
		mod  func(c *Config)
		err  string
	}{
		{"defaults", func(*Config) {}, ""},
		{"transport", func(c *Config) { c.Transport = "carrier-pigeon" }, "transport"},
		{"profile", func(c *Config) { c.Profile = "weather" }, "profile"},
		{"empty fleet", func(c *Config) { c.Devices = 0 }, "nothing to simulate"},
		{"gateway mode needs devices", func(c *Config) { c.Transport, c.Devices = TransportGateway, 0 }, "nothing to simulate"},
		{"gateway mode", func(c *Config) { c.Transport, c.Devices = TransportGateway, 25 }, ""},
		{"fleet name", func(c *Config) { c.Fleet = "a b" }, "fleet"},
		{"run id", func(c *Config) { c.RunID = "x'y" }, "run id"},
		{"jitter", func(c *Config) { c.Jitter = 1.5 }, "jitter"},
		{"fault sum", func(c *Config) { c.Faults = Faults{Malformed: 0.6, Invalid: 0.6} }, "add up"},
		{"frame too big", func(c *Config) { c.Batch = 1000 }, "frame limit"},
		{"too many readings", func(c *Config) { c.Batch, c.MaxFrameBytes = 6000, 1<<30 }, "5000"},
		{"gateway frame", func(c *Config) { c.Gateways, c.ChildrenPerGateway, c.Batch = 1, 100, 10 }, "frame limit"},
		{"bad url", func(c *Config) { c.ServiceURL = "localhost" }, "service URL"},
		{"bucket", func(c *Config) { c.InfluxBucket = "/rp" }, "bucket"},
		{"burst", func(c *Config) { c.Burst = Burst{Size: 3} }, "burst"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.mod(&c)
			c = c.withDefaults()
			err := c.validate()
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("validate() = %v, want %q", err, tc.err)
			}
		})
	}
}

func TestGatewayModeDefaults(t *testing.T) {
	c := Config{Transport: TransportGateway, Devices: 25, ChildrenPerGateway: 10}.withDefaults()
	if c.Gateways != 3 {
		t.Fatalf("gateways = %d, want 3 (25 devices / 10 per gateway)", c.Gateways)
	}
	direct, gws, kids := layout(&c, "r1")
	if len(direct) != 0 || len(gws) != 3 || len(kids[2]) != 10 {
		t.Fatalf("layout: %d direct, %d gateways, %d children of the last", len(direct), len(gws), len(kids[2]))
	}
	if gws[0].name != "sim-r1-gw-0001" || kids[0][0].name != "sim-r1-gw-0001-c001" || kids[0][0].gateway != gws[0].name {
		t.Fatalf("names: %+v %+v", gws[0], kids[0][0])
	}
	c.CredsFile = "x.json"
	_, gws, _ = layout(&c, "r1")
	if gws[0].name != "sim-gw-0001" {
		t.Fatalf("with a credentials file names must not depend on the run: %q", gws[0].name)
	}
}
