// Command telemetryd ingests device telemetry over WebSocket and MQTT,
// writes it to InfluxDB and rebroadcasts it live to dashboards.
//
// It is the only place that reads flags and the environment and the only
// place that knows every package: run builds each stage with its
// downstream (storage → bridge → live, transports) and runs them until a
// signal, then shuts down in order: ingest stops, the bridge drains and
// flushes, owed acks go out, transports close, dashboards close.
//
// Where the pieces are: config.go the settings; components.go each
// component's configuration; registry.go identity (device and viewer
// authentication, revocation, the Mosquitto file sync); server.go the
// public HTTP listener (TLS, connection counting); web.go the dashboard
// page and its API; metrics.go /metrics; admin.go the pprof listener;
// admin_cli.go the operator commands, through devices/adminclient.
package main
