package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/bridge"
	"github.com/telemetryd/telemetryd/ingest/payload"
	"github.com/telemetryd/telemetryd/internal/testsupport"
	"github.com/telemetryd/telemetryd/telemetry"
)

const repoRoot = "../.."

func TestConfigReferenceIsUpToDate(t *testing.T) {
	var b bytes.Buffer
	if err := writeConfigReference(&b); err != nil {
		t.Fatal(err)
	}
	committed, err := os.ReadFile(filepath.Join(repoRoot, "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.Bytes(), committed) {
		t.Fatal("docs/configuration.md is not what `telemetryd config-reference` prints: run `make docs` and commit it")
	}
	// Every flag is in the table with its variable.
	_, fs, err := parseFlags(nil, func(string) (string, bool) { return "", false }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	fs.VisitAll(func(f *flag.Flag) {
		n++
		if !strings.Contains(b.String(), "| `-"+f.Name+"` | `TELEMETRY_") {
			t.Errorf("flag -%s missing from the reference", f.Name)
		}
	})
	if n < 20 {
		t.Fatalf("only %d flags", n)
	}
}

func TestReadmeConfigTableIsUpToDate(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := readmeWithTable(string(readme))
	if err != nil {
		t.Fatal(err)
	}
	if want != string(readme) {
		t.Fatal("the README's configuration table differs from the code: run `make docs` and commit it")
	}
}

func TestConfigReferenceCommand(t *testing.T) {
	var out bytes.Buffer
	if err := subcommands()["config-reference"](context.Background(), nil, nil, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| `-http-addr` | `TELEMETRY_HTTP_ADDR` | `:8080` |", "### `[[units.rule]]`", "| `Cel` |", "`kPa` (x × 1000)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("reference lacks %q", want)
		}
	}
	if err := configReferenceCommand(context.Background(), []string{"extra"}, nil, io.Discard, io.Discard); err == nil {
		t.Error("extra argument accepted")
	}
}

func TestLoadRules(t *testing.T) {
	tests := []struct {
		name, file string
		wantErr    string // substring; "" for success
		check      func(t *testing.T, r rules)
	}{
		{name: "no file: defaults", check: func(t *testing.T, r rules) {
			if r.units.Disabled || !r.units.KeepOriginal || r.types.Disabled || r.types.Declared != nil {
				t.Errorf("defaults %+v %+v", r.units, r.types)
			}
		}},
		{name: "everything", file: `
[limits]
max_tags = 8
max_fields = 50
[units]
keep_original = false
[[units.rule]]
measurement = "boiler"
field = "temp"
target = "degF"
[[units.rule]]
field = "adc"
off = true
[types]
max_fields = 10
[types.fields.power]
energy = "integer"
on = "bool"
[types.fields."*"]
status = "string"
`, check: func(t *testing.T, r rules) {
			if r.units.KeepOriginal || len(r.units.Rules) != 2 || r.units.Rules[0] != (bridge.UnitRule{Measurement: "boiler", Field: "temp", Target: "degF"}) ||
				!r.units.Rules[1].Off {
				t.Errorf("units %+v", r.units)
			}
			if r.types.MaxFields != 10 || r.types.Declared["power"]["energy"] != telemetry.KindInt ||
				r.types.Declared["power"]["on"] != telemetry.KindBool || r.types.Declared["*"]["status"] != telemetry.KindString {
				t.Errorf("types %+v", r.types)
			}
			var bc bridge.Config
			var pl payload.Limits
			r.applyBridge(&bc)
			r.applyPayload(&pl)
			if bc.Limits.MaxTags != 8 || pl.MaxFields != 50 || bc.Units.Rules[0].Target != "degF" {
				t.Errorf("applied %+v %+v", bc.Limits, pl)
			}
		}},
		{name: "typo", file: "[units]\nkeep_orignal = true\n", wantErr: "unknown keys: units.keep_orignal"},
		{name: "bad type", file: "[types.fields.m]\nx = \"double\"\n", wantErr: `types.fields.m.x: type "double"`},
		{name: "bad target", file: "[[units.rule]]\nfield = \"t\"\ntarget = \"furlong\"\n", wantErr: `unknown target unit "furlong"`},
		{name: "negative", file: "[limits]\nmax_tags = -1\n", wantErr: "max_tags: -1 is negative"},
		{name: "not toml", file: "[limits\n", wantErr: "rules.toml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := ""
			if tt.file != "" {
				path = filepath.Join(t.TempDir(), "rules.toml")
				if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			r, err := loadRules(path)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatal(err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("err %v, want %q", err, tt.wantErr)
			case tt.check != nil:
				tt.check(t, r)
			}
		})
	}
	if _, err := loadRules(filepath.Join(t.TempDir(), "missing.toml")); err == nil {
		t.Error("missing file accepted")
	}
}

func TestVersionCommand(t *testing.T) {
	var out bytes.Buffer
	if err := subcommands()["version"](context.Background(), nil, nil, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^telemetryd dev \(revision \S+(, modified)?, go1\.\d+`).MatchString(out.String()) {
		t.Fatalf("version output %q", out.String())
	}
	if b := currentBuild(); b.Version != "dev" || b.Revision == "" || !strings.HasPrefix(b.GoVersion, "go1.") {
		t.Fatalf("build %+v", b)
	}
}

func TestHealthcheckCommand(t *testing.T) {
	for _, tt := range []struct{ listen, url string }{
		{":8080", "http://127.0.0.1:8080/healthz"},
		{"0.0.0.0:9000", "http://127.0.0.1:9000/healthz"},
		{"[::]:8080", "http://[::1]:8080/healthz"},
		{"10.0.0.5:8080", "http://10.0.0.5:8080/healthz"},
	} {
		if got := healthURL(tt.listen); got != tt.url {
			t.Errorf("healthURL(%q) = %q, want %q", tt.listen, got, tt.url)
		}
	}
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
	}))
	defer srv.Close()
	env := func(k string) (string, bool) {
		if k == "TELEMETRY_HTTP_ADDR" {
			return strings.TrimPrefix(srv.URL, "http://"), true
		}
		return "", false
	}
	hc := subcommands()["healthcheck"]
	if err := hc(context.Background(), nil, env, io.Discard, io.Discard); err != nil {
		t.Fatalf("healthy service: %v", err)
	}
	status = http.StatusServiceUnavailable
	if err := hc(context.Background(), nil, env, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("unhealthy service: %v", err)
	}
	srv.Close()
	if err := hc(context.Background(), []string{"-url", srv.URL + "/healthz"}, env, io.Discard, io.Discard); err == nil {
		t.Fatal("no service: healthy")
	}
}

func TestAdminListenerServesPprofOnly(t *testing.T) {
	stop, err := startAdmin("", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	stop() // off: nothing to stop
	addr, stop, err := listenAdmin("127.0.0.1:0", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	for path, want := range map[string]int{
		"/debug/pprof/":                  http.StatusOK,
		"/debug/pprof/goroutine?debug=1": http.StatusOK,
		"/debug/pprof/heap":              http.StatusOK,
		"/debug/pprof/cmdline":           http.StatusOK,
		"/metrics":                       http.StatusNotFound,
		"/v1/ingest":                     http.StatusNotFound,
	} {
		resp, err := http.Get("http://" + addr.String() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %s, want %d", path, resp.Status, want)
		}
	}
}

// TestDockerComposeConfig validates docker-compose.yml with docker-compose
// itself (no Docker engine needed), with and without the simulator profile.
func TestDockerComposeConfig(t *testing.T) {
	dc := testsupport.Binary(t, "", "make tools installs it", "docker-compose")
	file := filepath.Join(repoRoot, "docker-compose.yml")
	for _, args := range [][]string{{"config", "-q"}, {"--profile", "simulator", "config", "-q"},
		{"--profile", "influxdb3", "config", "-q"}, {"--profile", "influxdb1", "config", "-q"}, {"--profile", "cluster", "config", "-q"}, {"config", "--services"}} {
		cmd := exec.Command(dc, append([]string{"-f", file, "--project-directory", repoRoot}, args...)...)
		cmd.Env = append(os.Environ(), "COMPOSE_PROJECT_NAME=telemetryd-test")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("docker-compose %v: %v\n%s", args, err, out)
		}
		if args[1] == "--services" {
			got := strings.Fields(string(out))
			for _, want := range []string{"influxdb", "mosquitto-auth", "mosquitto", "telemetryd", "prometheus", "grafana",
				"postgres", "nats", "mosquitto-cluster", "telemetryd-a", "telemetryd-b", "telemetryd-c", "haproxy"} {
				if !strings.Contains(" "+strings.Join(got, " ")+" ", " "+want+" ") {
					t.Errorf("service %s missing: %v", want, got)
				}
			}
		}
	}
	// Bind-mounted files must exist (docker-compose config does not check).
	compose, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`(?m)^\s*- \./([^:\s]+):`).FindAllStringSubmatch(string(compose), -1) {
		if _, err := os.Stat(filepath.Join(repoRoot, m[1])); err != nil {
			t.Errorf("bind mount source: %v", err)
		}
	}
}

// TestDockerfileBuildsLikeMakefile: the Dockerfile's go build line, with
// its ARG defaults substituted, is the Makefile's build command (as make
// itself expands it), except for the output directory; and the builder's
// Go is go.mod's.
func TestDockerfileBuildsLikeMakefile(t *testing.T) {
	mk := testsupport.Binary(t, "", "make tools installs it", "make")
	out, err := exec.Command(mk, "-s", "-n", "-C", repoRoot, "build", "GO=go", "VERSION=v1.2.3", "REVISION=abc123").CombinedOutput()
	if err != nil {
		t.Fatalf("make -n build: %v\n%s", err, out)
	}
	makeCmd := strings.TrimSpace(string(out))

	df, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	args := map[string]string{}
	var run string
	for _, line := range strings.Split(string(df), "\n") {
		if m := regexp.MustCompile(`^ARG (\w+)=(.*)$`).FindStringSubmatch(line); m != nil {
			args[m[1]] = strings.Trim(m[2], `"`)
		}
		if strings.HasPrefix(line, "RUN ") && strings.Contains(line, " go build ") {
			run = strings.TrimPrefix(line, "RUN ")
		}
	}
	if run == "" {
		t.Fatal("no RUN ... go build line in the Dockerfile")
	}
	args["VERSION"], args["REVISION"] = "v1.2.3", "abc123"
	dockerCmd := regexp.MustCompile(`\$\{(\w+)\}`).ReplaceAllStringFunc(run, func(v string) string {
		name := v[2 : len(v)-1]
		val, ok := args[name]
		if !ok {
			t.Errorf("Dockerfile uses ${%s} without an ARG default", name)
		}
		return val
	})
	norm := func(cmd string) string { // the output directory differs: bin/ vs /out/
		return regexp.MustCompile(`-o \S+`).ReplaceAllString(cmd, "-o OUT")
	}
	if norm(makeCmd) != norm(dockerCmd) {
		t.Fatalf("the Dockerfile does not build what the Makefile builds:\nmake:   %s\ndocker: %s", makeCmd, dockerCmd)
	}
	if !strings.HasPrefix(makeCmd, "CGO_ENABLED=0 go build -trimpath ") {
		t.Fatalf("make build is not a static, trimmed build: %s", makeCmd)
	}

	mod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goLine := regexp.MustCompile(`(?m)^go (\S+)$`).FindStringSubmatch(string(mod))
	if goLine == nil || args["GO_VERSION"] != goLine[1] {
		t.Fatalf("Dockerfile GO_VERSION %q, go.mod says %v", args["GO_VERSION"], goLine)
	}
	for _, want := range []string{"FROM gcr.io/distroless/static", "USER nonroot:nonroot", "EXPOSE 8080", `CMD ["/telemetryd", "healthcheck"]`, `ENTRYPOINT ["/telemetryd"]`} {
		if !bytes.Contains(df, []byte(want)) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}

func TestGrafanaProvisioning(t *testing.T) {
	ds, err := os.ReadFile(filepath.Join(repoRoot, "deploy/grafana/provisioning/datasources/influxdb.yml"))
	if err != nil {
		t.Fatal(err)
	}
	uid := regexp.MustCompile(`uid: (\S+)`).FindStringSubmatch(string(ds))
	if uid == nil || !strings.Contains(string(ds), "version: InfluxQL") || strings.Contains(string(ds), "version: Flux") {
		t.Fatalf("data source:\n%s", ds)
	}
	dash, err := os.ReadFile(filepath.Join(repoRoot, "deploy/grafana/dashboards/telemetry.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title      string `json:"title"`
			Datasource struct {
				UID string `json:"uid"`
			} `json:"datasource"`
			Targets []struct {
				Query string `json:"query"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(dash, &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	if d.UID == "" || len(d.Panels) == 0 || !strings.Contains(string(dash), `"value": "`+uid[1]+`"`) {
		t.Fatalf("dashboard %+v", d)
	}
	for _, p := range d.Panels {
		// The data source is the dashboard's variable, whose default is uid.
		if p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 || !strings.HasPrefix(p.Targets[0].Query, "SELECT ") {
			t.Errorf("panel %q: data source %q (want ${datasource}), targets %+v", p.Title, p.Datasource.UID, p.Targets)
		}
	}
}

// TestComposeMosquittoEntrypoint runs the compose stack's Mosquitto setup
// (deploy/mosquitto/run.sh with deploy/mosquitto/mosquitto.conf and the
// project's deploy/mosquitto.conf) against the local mosquitto, rooted in a
// temporary directory instead of /mosquitto: the configuration loads, the
// 0600 files of another user are installed for the broker, and a rewrite
// of the password file is picked up without a restart. It needs root (as
// in the container) and the mosquitto user the Debian package creates.
func TestComposeMosquittoEntrypoint(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, like the container's entrypoint")
	}
	testsupport.Binary(t, "", "make tools installs it", "mosquitto")
	pub := testsupport.Binary(t, "", "make tools installs it", "mosquitto_pub")
	pw := testsupport.Binary(t, "", "make tools installs it", "mosquitto_passwd")
	if err := exec.Command("id", "mosquitto").Run(); err != nil {
		t.Skip("no mosquitto user")
	}
	home, err := os.MkdirTemp("", "mosquitto-home-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	for _, d := range []string{"config/conf.d", "auth"} {
		if err := os.MkdirAll(filepath.Join(home, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(home, 0o755); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	conf, err := os.ReadFile(filepath.Join(repoRoot, "deploy/mosquitto/mosquitto.conf"))
	if err != nil {
		t.Fatal(err)
	}
	c := strings.ReplaceAll(string(conf), "/mosquitto/", home+"/")
	c = strings.Replace(c, "listener 1883 0.0.0.0", "listener "+port+" 127.0.0.1", 1)
	c = strings.Replace(c, "log_dest stdout", "log_dest stderr", 1)
	mustWriteFile(t, filepath.Join(home, "config/mosquitto.conf"), c, 0o644)
	project, err := os.ReadFile(filepath.Join(repoRoot, "deploy/mosquitto.conf"))
	if err != nil {
		t.Fatal(err)
	}
	mustWriteFile(t, filepath.Join(home, "config/conf.d/telemetryd.conf"), string(project), 0o644)
	setPassword := func(user, pass string) {
		t.Helper()
		if out, err := exec.Command(pw, "-b", filepath.Join(home, "auth/passwd"), user, pass).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd: %v %s", err, out)
		}
	}
	mustWriteFile(t, filepath.Join(home, "auth/passwd"), "", 0o600)
	setPassword("svc", "svc-pass")
	mustWriteFile(t, filepath.Join(home, "auth/acl"), "user svc\ntopic read devices/+/telemetry\n", 0o600)

	script, err := filepath.Abs(filepath.Join(repoRoot, "deploy/mosquitto/run.sh"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", script)
	cmd.Env = append(os.Environ(), "MOSQUITTO_HOME="+home, "AUTH_RELOAD_INTERVAL=0.2")
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		<-exited
		if t.Failed() {
			t.Logf("run.sh and mosquitto:\n%s", logs.String())
		}
	})
	login := func(user, pass string) bool {
		return exec.Command(pub, "-h", "127.0.0.1", "-p", port, "-u", user, "-P", pass, "-t", "healthcheck", "-n", "-q", "0").Run() == nil
	}
	eventually(t, 15*time.Second, "the service account logs in", func() bool { return login("svc", "svc-pass") })
	if login("svc", "wrong") || login("dev-1", "tok-1") {
		t.Fatal("a wrong or unknown password logged in")
	}
	setPassword("dev-1", "tok-1") // what telemetryd does when a device is registered
	eventually(t, 15*time.Second, "the new device logs in after the reload", func() bool { return login("dev-1", "tok-1") })
	if !strings.Contains(logs.String(), "mosquitto reloaded") {
		t.Errorf("no reload logged:\n%s", logs.String())
	}
	// SIGTERM (docker stop) stops the broker and the script.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		exited <- nil // for the cleanup
	case <-time.After(15 * time.Second):
		t.Fatal("run.sh did not stop on SIGTERM")
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

func mustWriteFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

// TestMetricsAreDocumented: every metric family is in docs/operations.md.
func TestMetricsAreDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(repoRoot, "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range metricDefs() {
		if !bytes.Contains(doc, []byte("| `"+d.name+"` |")) {
			t.Errorf("%s is not in the metrics table of docs/operations.md", d.name)
		}
	}
}
