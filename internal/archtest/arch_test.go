package archtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

// TestImportGraph checks the module's real import graph.
func TestImportGraph(t *testing.T) {
	g := loadGraph(t)
	for _, must := range []string{"telemetry", "ingest", "bridge", "storage", "devices", "live", "cmd/telemetryd"} {
		if _, ok := g[must]; !ok {
			t.Fatalf("go list did not report %s: the graph is not the module's", must)
		}
	}
	for _, v := range violations(g) {
		t.Error(v)
	}
}

// loadGraph runs go list over the module (the test runs in
// internal/archtest; ../.. is the module root).
func loadGraph(t *testing.T) map[string]pkg {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go not in PATH: %v", err)
	}
	cmd := exec.Command(goBin, "list", "-e", "-json=ImportPath,Imports,TestImports,XTestImports,Error", "./...")
	cmd.Dir = "../.."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	g := map[string]pkg{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct {
			ImportPath                         string
			Imports, TestImports, XTestImports []string
			Error                              *struct{ Err string }
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		if p.Error != nil {
			t.Fatalf("go list %s: %s", p.ImportPath, p.Error.Err)
		}
		rel, ok := strings.CutPrefix(p.ImportPath, module+"/")
		if !ok {
			continue
		}
		g[rel] = pkg{Path: rel, Imports: p.Imports, Tests: append(p.TestImports, p.XTestImports...)}
	}
	return g
}

// TestRules: the checker on synthetic graphs, so that each rule is seen to
// fail.
func TestRules(t *testing.T) {
	const gws, paho, influx = "github.com/lxzan/gws", "github.com/eclipse/paho.mqtt.golang", "github.com/influxdata/influxdb-client-go/v2"
	m := func(rel ...string) []string { // this module's packages
		for i, r := range rel {
			rel[i] = module + "/" + r
		}
		return rel
	}
	live := pkg{Path: "live"}
	for _, tc := range []struct {
		name string
		g    []pkg
		want string // substring of the one violation; "" for none
	}{
		{"clean", []pkg{
			{Path: "telemetry", Imports: []string{"strings"}},
			{Path: "ingest", Imports: append(m("telemetry", "ingest/payload"), gws, paho), Tests: m("internal/testsupport", "ingest/mqtttest")},
			{Path: "ingest/mqtttest", Imports: m("internal/testsupport")},
			{Path: "bridge", Imports: m("telemetry")},
			{Path: "storage", Imports: append(m("telemetry"), influx+"/api"), Tests: m("storage/influxtest")},
			{Path: "cmd/telemetryd", Imports: m("ingest", "bridge", "storage", "live", "devices", "web"), Tests: []string{gws}},
			{Path: "simulator", Imports: append(m("telemetry"), gws, paho)},
			{Path: "bench", Imports: append(m("bridge", "storage/influxtest"), gws)},
			live,
		}, ""},
		{"ingest → bridge", []pkg{{Path: "ingest", Imports: m("bridge")}, live}, "ingest imports bridge: an adapter imports only telemetry"},
		{"live → bridge", []pkg{{Path: "live", Imports: m("bridge")}}, "live imports bridge"},
		{"sub-package too", []pkg{{Path: "storage/spool", Imports: m("devices")}, live}, "storage/spool imports devices"},
		{"adapter test → another adapter", []pkg{{Path: "ingest", Tests: m("bridge")}, live}, "ingest (tests) import bridge"},
		{"testsupport outside tests", []pkg{{Path: "devices", Imports: m("internal/testsupport")}, live}, "for tests and test-helper packages only"},
		{"telemetry imports a module package", []pkg{{Path: "telemetry", Imports: m("ingest/payload")}, live}, "leaf package"},
		{"telemetry imports third party", []pkg{{Path: "telemetry", Imports: []string{"github.com/google/uuid"}}, live}, "leaf package"},
		{"a non-cmd package wires adapters", []pkg{{Path: "internal/wiring", Imports: m("storage")}, live}, "only cmd/"},
		{"simulator → bench", []pkg{{Path: "simulator", Imports: m("bench")}, live}, "neither imports the other"},
		{"gws in bridge once live exists", []pkg{{Path: "bridge", Imports: []string{gws}}, live}, "bridge imports github.com/lxzan/gws"},
		{"paho in cmd", []pkg{{Path: "cmd/telemetryd", Imports: []string{paho + "/packets"}}, live}, "paho.mqtt.golang is for ingest"},
		{"influx client in bridge", []pkg{{Path: "bridge", Imports: []string{influx}}, live}, "influxdb-client-go is for storage"},
		{"gws in web", []pkg{{Path: "web", Imports: []string{gws}}, live}, "lxzan/gws is for ingest, live"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := map[string]pkg{}
			for _, p := range tc.g {
				g[p.Path] = p
			}
			got := violations(g)
			switch {
			case tc.want == "" && len(got) != 0:
				t.Fatalf("violations %q, want none", got)
			case tc.want != "" && (len(got) != 1 || !strings.Contains(got[0], tc.want)):
				t.Fatalf("violations %q, want one containing %q", got, tc.want)
			}
		})
	}
}
