// Package ingest holds the device transports: the WebSocket endpoint
// (/v1/ingest, gws inside net/http), the HTTP endpoints (POST /v1/ingest
// and the InfluxDB-compatible /api/v2/write and /write, http.go) and the
// MQTT consumer (paho, QoS 1, persistent session, manual acks). Each decodes device payloads with
// ingest/payload and hands frames to a telemetry.Consumer (the bridge).
//
// Contract with the consumer: a transport acknowledges a device only from
// the frame's Done callback, i.e. after the consumer reports the readings
// durable — a WebSocket {"ack":seq} frame or an MQTT PUBACK, the latter in
// receive order. Transports never call the consumer from a library callback
// that must not block: the MQTT handler only enqueues (bounded, sized above
// the broker's in-flight window); WebSocket frames are consumed on their own
// connection's read loop, so back-pressure slows only that device.
// Done itself never blocks, for either transport: it runs on the
// consumer's completer, which serves every device. The MQTT Done only
// queues the PUBACK (bounded like the intake queue); each connection's own
// ack sender writes it, so a stalled broker socket delays PUBACKs only.
// An HTTP request is one frame, answered from its Done: the status is the
// ack.
// A WebSocket's answers (acks, error frames, the close frame) leave in
// order through a bounded per-socket queue; those due at the same time are
// written with one syscall (wswriter.go). Acks and rejections keep frame
// order even when frames complete out of order (wsanswers.go); a resent
// frame is recognised and not stored twice (wsdedup.go). MQTT devices get
// the WebSocket size and rate limits (mqttlimits.go). The MQTT connection's writes
// (PUBACKs) are coalesced the same way, bounded at 64 KiB (coalesce.go).
//
// Identity: WebSocket devices authenticate at the upgrade, HTTP devices on
// every request, through the Authenticator declared here (HTTP shares the
// WebSocket endpoint's limits and per-device frame-rate bucket); MQTT devices are authenticated by the broker,
// and the device id is taken from the topic.
package ingest
