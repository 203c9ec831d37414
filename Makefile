# telemetryd — `make run` starts the local stack, `make test` runs every test.
# Both install what is missing first (make tools): InfluxDB 1.8.10 built from
# the Go module proxy into .tools/bin, Mosquitto and Chromium from apt.

GO      ?= go
TOOLS   := $(CURDIR)/.tools/bin
INFLUXD := $(TOOLS)/influxd
export PATH := $(TOOLS):$(PATH)

.PHONY: all build tools apt-lists node run run-cluster test test-unit fuzz vet fmt-check bench bench-smoke clean docs test-browser screenshot

all: build

# How binaries are built, here and in the Dockerfile (its ARGs of the same
# names and its go build line mirror these; TestDockerfileBuildsLikeMakefile
# in cmd/telemetryd fails when they drift): static, trimmed, stamped.
VERSION        ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION       ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
GO_BUILD_FLAGS := -trimpath
GO_LDFLAGS     := -s -w

build:
	CGO_ENABLED=0 $(GO) build $(GO_BUILD_FLAGS) -ldflags "$(GO_LDFLAGS) -X main.version=$(VERSION) -X main.revision=$(REVISION)" -o bin/ ./cmd/...

# docs/configuration.md is generated from the code (a test compares it).
docs:
	$(GO) run ./cmd/telemetryd config-reference > docs/configuration.md
	$(GO) run ./cmd/telemetryd config-reference -readme README.md

# What the tests and `make run` / `make run-cluster` need besides Go:
# InfluxDB 1.8.10 built from the module proxy; from apt Mosquitto, Chromium
# (browser tests), docker-compose (compose files validated), PostgreSQL 15
# (shared registry), nats-server (live relay across instances), HAProxy
# (run-cluster's balancer), Node.js and npm (the Node ws client tests).
PG_BIN  ?= /usr/lib/postgresql/15/bin
APT_TOOLS := /usr/sbin/mosquitto /usr/bin/chromium /usr/bin/docker-compose $(PG_BIN)/initdb /usr/sbin/nats-server /usr/sbin/haproxy
tools: $(INFLUXD) $(APT_TOOLS) node

$(INFLUXD):
	GOBIN=$(TOOLS) $(GO) install github.com/influxdata/influxdb/cmd/influxd@v1.8.10

APT_GET := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq
apt-lists:
	@command -v apt-get >/dev/null || { echo "install mosquitto, chromium, docker-compose, postgresql, nats-server, haproxy, nodejs and npm with your package manager" >&2; exit 1; }
	@test -n "$$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -print -quit 2>/dev/null)" || apt-get update -qq

/usr/sbin/mosquitto /usr/bin/chromium /usr/bin/docker-compose: | apt-lists
	$(APT_GET) mosquitto mosquitto-clients chromium docker-compose >/dev/null

$(PG_BIN)/initdb: | apt-lists
	$(APT_GET) postgresql >/dev/null

/usr/sbin/nats-server: | apt-lists
	$(APT_GET) nats-server >/dev/null

/usr/sbin/haproxy: | apt-lists
	$(APT_GET) haproxy >/dev/null

node: | apt-lists
	@command -v node >/dev/null && command -v npm >/dev/null || $(APT_GET) nodejs npm >/dev/null

run: tools build
	./deploy/run-local.sh

# Three instances on PostgreSQL, NATS, Mosquitto and InfluxDB behind
# HAProxy, with the demo fleet (docs/cluster.md, "Running it").
run-cluster: tools build
	PG_BIN=$(PG_BIN) ./deploy/run-cluster.sh

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# Every test, integration tests included: they start their own InfluxDB and
# Mosquitto on free loopback ports. CI=true turns a missing server into a failure.
test: tools fmt-check vet
	$(GO) test -race -count=1 -timeout 20m ./...
	$(MAKE) fuzz FUZZTIME=10s

# The dashboard end to end in headless Chromium (also part of make test);
# its screenshots are kept in $(ARTIFACTS).
ARTIFACTS ?= $(CURDIR)/artifacts
test-browser: tools
	TELEMETRY_ARTIFACTS=$(ARTIFACTS) $(GO) test -race -count=1 -run 'Browser' ./cmd/telemetryd

# Refreshes docs/screenshot.png (the README's picture) from the browser test.
screenshot: tools
	TELEMETRY_UPDATE_SCREENSHOT=1 TELEMETRY_ARTIFACTS=$(ARTIFACTS) $(GO) test -count=1 -run '^TestBrowserDashboard$$' ./cmd/telemetryd

FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./ingest/payload/
	$(GO) test -run '^$$' -fuzz '^FuzzFastPathAgrees$$' -fuzztime $(FUZZTIME) ./ingest/payload/
	$(GO) test -run '^$$' -fuzz '^FuzzTemplateAgrees$$' -fuzztime $(FUZZTIME) ./ingest/payload/
	$(GO) test -run '^$$' -fuzz '^FuzzLineProtocol$$' -fuzztime $(FUZZTIME) ./ingest/payload/
	$(GO) test -run '^$$' -fuzz '^FuzzCBOR$$' -fuzztime $(FUZZTIME) ./ingest/payload/
	$(GO) test -run '^$$' -fuzz '^FuzzCBORMatchesJSON$$' -fuzztime $(FUZZTIME) ./ingest/payload/
	$(GO) test -run '^$$' -fuzz '^FuzzMessagePos$$' -fuzztime $(FUZZTIME) ./live/
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./live/relay/

# The benchmark harness (docs/performance.md): the shipped binary against
# raw baselines in the same run; table in bench/out/results.{json,md}.
# BENCHFLAGS passes harness flags, e.g. BENCHFLAGS="-scenarios P1,P3 -duration 30s".
# bench-smoke is its seconds-long CI form (also run by `make test` as
# TestSmoke in ./bench).
bench bench-smoke: $(INFLUXD) /usr/sbin/mosquitto build
	$(GO) build -o bin/bench ./bench
	./bin/bench -telemetryd bin/telemetryd -out bench/out $(if $(filter bench-smoke,$@),-smoke) $(BENCHFLAGS)

clean:
	rm -rf bin
