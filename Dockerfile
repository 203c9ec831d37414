# telemetryd container image: a static binary, built exactly as `make build`
# builds it, in a distroless image that runs as an unprivileged user.
#
#   docker build -t telemetryd .                      # the service (default target)
#   docker build --target simulator -t telemetryd-sim .
#
# Build flags are kept in step with the Makefile (GO_BUILD_FLAGS, GO_LDFLAGS
# and the go build command line); TestDockerfileBuildsLikeMakefile in
# cmd/telemetryd checks that they agree, and that GO_VERSION is go.mod's.

ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION}-bookworm AS build
ARG GO_BUILD_FLAGS="-trimpath"
ARG GO_LDFLAGS="-s -w"
ARG VERSION=dev
ARG REVISION=unknown
WORKDIR /src
# Modules first: this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build ${GO_BUILD_FLAGS} -ldflags "${GO_LDFLAGS} -X main.version=${VERSION} -X main.revision=${REVISION}" -o /out/ ./cmd/...
# State directories owned by the runtime user (distroless "nonroot", 65532):
# a fresh named volume mounted there inherits the owner.
RUN mkdir -p /state/telemetryd/mosquitto-auth /state/simulator

# The device simulator (docker-compose profile "simulator").
FROM gcr.io/distroless/static-debian12:nonroot AS simulator
COPY --from=build /out/simulator /simulator
COPY --from=build --chown=65532:65532 /state/simulator /var/lib/simulator
USER nonroot:nonroot
ENTRYPOINT ["/simulator"]

# The service. Last stage: the default target.
FROM gcr.io/distroless/static-debian12:nonroot AS telemetryd
COPY --from=build /out/telemetryd /telemetryd
COPY --from=build --chown=65532:65532 /state/telemetryd /var/lib/telemetryd
ENV TELEMETRY_HTTP_ADDR=:8080 \
    TELEMETRY_DATA_DIR=/var/lib/telemetryd \
    TELEMETRY_LOG_FORMAT=json
USER nonroot:nonroot
EXPOSE 8080
# No shell or curl in distroless: the binary checks its own /healthz.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["/telemetryd", "healthcheck"]
ENTRYPOINT ["/telemetryd"]
