// Package bridge is the middle of the pipeline: it takes decoded frames from
// the transports (it implements telemetry.Consumer), normalizes every reading,
// publishes the accepted ones to the live Hub at once, and writes them to
// durable storage in batches, acknowledging each frame only after its
// readings are durable.
//
// Data flows one way: transports call Bridge.Consume; the Bridge calls its
// Sink (storage) from the writer goroutines started by Run and the Hub
// through a non-blocking Publish. Acknowledgements travel back as the
// frame's own Done callback, never as a call into the transport.
//
// Blocking: Consume blocks only while the bounded write queue is full, and no
// longer than its ctx allows; Hub.Publish never blocks. A slow storage
// therefore slows devices (back-pressure), never dashboards; a slow
// dashboard never slows anything but itself.
//
// Normalizing includes converting declared units to canonical ones
// (units.go) and holding every measurement/field to one type, the one
// InfluxDB has (typeguard.go), so that a type conflict is rejected as one
// reading (type_conflict) instead of failing a whole storage batch.
//
// The dashboard side (the Hub and the /v1/live WebSocket handler) lives here
// too, because it consumes the same normalized readings. The same
// subscriptions are served as Server-Sent Events (/v1/live/sse, sse.go), and
// the Hub derives device presence from the readings it sees (presence.go):
// online from a reading until a silence longer than the device's timeout,
// announced to subscriptions that ask for it.
package bridge
