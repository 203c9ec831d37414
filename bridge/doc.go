// Package bridge is the middle of the pipeline and has one job: it takes
// decoded frames from the transports (it implements telemetry.Consumer),
// normalizes every reading, encodes the accepted ones as line protocol,
// batches them for durable storage, and completes each frame, in the order
// frames arrived, only after its readings are durable.
//
// Data flows one way: transports call Bridge.Consume; the Bridge calls its
// Sink (storage) from the writer goroutines started by Run, and hands each
// frame's accepted readings to its Publisher (the live hub) at once.
// Acknowledgements travel back as the frame's own Done callback, never as a
// call into the transport.
//
// Blocking: Consume blocks only while the bounded write queue is full, and
// no longer than its ctx allows; Publisher.Publish must not block. A slow
// storage therefore slows devices (back-pressure), never dashboards.
//
// Normalizing includes converting declared units to canonical ones
// (units.go) and holding every measurement/field to one type, the one
// InfluxDB has (typeguard.go), so that a type conflict is rejected as one
// reading (type_conflict) instead of failing a whole storage batch.
package bridge
