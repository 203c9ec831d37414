package archtest

import (
	"fmt"
	"slices"
	"strings"
)

const module = "github.com/telemetryd/telemetryd"

// pkg is one package of the graph: its path relative to the module and
// its direct imports, as full import paths.
type pkg struct {
	Path    string
	Imports []string // non-test imports: what the rules govern
	Tests   []string // imports of its _test.go files
}

// adapters are the stages of the pipeline and their endpoints. Each may
// import, of this module, only telemetry and its own tree.
var adapters = []string{"ingest", "bridge", "live", "storage", "devices", "web"}

// wirers may import several adapters: cmd/ wires the service, simulator
// and bench drive it from outside.
var wirers = []string{"cmd", "simulator", "bench"}

// thirdParty names each client library's module and the trees that may
// import it outside tests: its adapter, and the load-testing clients.
var thirdParty = []struct {
	module  string
	allowed []string
}{
	{"github.com/lxzan/gws", []string{"ingest", "live", "simulator", "bench"}},
	{"github.com/eclipse/paho.mqtt.golang", []string{"ingest", "simulator", "bench"}},
	{"github.com/influxdata/influxdb-client-go", []string{"storage", "simulator", "bench"}},
	{"github.com/jackc/pgx", []string{"devices"}},
	{"github.com/nats-io/nats.go", []string{"live"}},
}

// tree is the top of a module-relative path: "ingest" for ingest/payload,
// "cmd/telemetryd" for cmd/telemetryd, "internal/testsupport" for itself.
func tree(p string) string {
	parts := strings.Split(p, "/")
	if (parts[0] == "cmd" || parts[0] == "internal") && len(parts) > 1 {
		return parts[0] + "/" + parts[1]
	}
	return parts[0]
}

func top(p string) string { return strings.Split(p, "/")[0] }

// testHelper reports whether p is a test-helper package (mqtttest,
// influxtest: named like net/http/httptest), which may use what tests use.
func testHelper(p string) bool {
	last := p[strings.LastIndex(p, "/")+1:]
	return strings.HasSuffix(last, "test") && last != "test"
}

// short is imp relative to the module when it is one of its packages.
func short(imp string) string {
	if rel, ok := strings.CutPrefix(imp, module+"/"); ok {
		return rel
	}
	return imp
}

func isStd(imp string) bool { return !strings.Contains(strings.Split(imp, "/")[0], ".") }

// violations checks graph g and returns one line per forbidden edge.
func violations(g map[string]pkg) []string {
	var out []string
	for _, name := range sortedKeys(g) {
		p := g[name]
		for _, imp := range p.Imports {
			if why := forbidden(p.Path, imp, false); why != "" {
				out = append(out, fmt.Sprintf("%s imports %s: %s", p.Path, short(imp), why))
			}
		}
		for _, imp := range p.Tests {
			if why := forbidden(p.Path, imp, true); why != "" {
				out = append(out, fmt.Sprintf("%s (tests) import %s: %s", p.Path, short(imp), why))
			}
		}
	}
	return out
}

// forbidden returns why the edge from → imp breaks a rule, or "".
func forbidden(from, imp string, test bool) string {
	if isStd(imp) {
		return ""
	}
	rel, internal := strings.CutPrefix(imp, module+"/")
	if !internal {
		if test {
			return "" // tests may use any client to talk to the real servers
		}
		for _, tp := range thirdParty {
			if imp == tp.module || strings.HasPrefix(imp, tp.module+"/") {
				if !slices.Contains(tp.allowed, top(from)) {
					return fmt.Sprintf("%s is for %s only (client libraries stay in their adapter)", tp.module, strings.Join(tp.allowed, ", "))
				}
			}
		}
		if top(from) == "telemetry" {
			return "telemetry is the leaf package: standard library only"
		}
		return ""
	}
	if rel == from || tree(rel) == tree(from) {
		return "" // its own tree (a package's external test imports itself)
	}
	if tree(rel) == "internal/testsupport" {
		if test || testHelper(from) {
			return ""
		}
		return "internal/testsupport is for tests and test-helper packages only"
	}
	if top(from) == "telemetry" {
		return "telemetry is the leaf package: standard library only"
	}
	if slices.Contains(adapters, top(from)) {
		if top(rel) == "telemetry" {
			return ""
		}
		if test && testHelper(rel) {
			return "" // e.g. storage's tests start InfluxDB with storage/influxtest
		}
		return "an adapter imports only telemetry of this module (and its own sub-packages); cmd/ wires the adapters together"
	}
	if slices.Contains(adapters, top(rel)) && !slices.Contains(wirers, top(from)) {
		return "only cmd/ (and the simulator and bench harnesses) may import an adapter"
	}
	if (top(from) == "simulator" && top(rel) == "bench") || (top(from) == "bench" && top(rel) == "simulator") {
		return "simulator and bench are separate tools: neither imports the other"
	}
	return ""
}

func sortedKeys(g map[string]pkg) []string {
	keys := make([]string, 0, len(g))
	for k := range g {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
