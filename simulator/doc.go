// Package simulator simulates a fleet of devices against telemetryd and
// proves that the whole path loses nothing: device → transport → storage
// and dashboard.
//
// # Contract
//
// cmd/simulator (and tests) call Run with a Config; Run blocks for the run
// and returns a Report. The package talks to the service only over the
// network, exactly as devices and dashboards do: the admin API to
// provision, the device WebSocket (/v1/ingest) and MQTT to send, the live
// dashboard WebSocket (/v1/live) and InfluxDB's HTTP query API to verify.
// It imports no service package but telemetry (for JSON string escaping).
//
// Goroutines: one per simulated connection (a device, or a gateway with its
// children) plus each connection's reader, one for the verifying dashboard
// and one for the progress output. Run returns only after all of them have
// ended. Every queue is bounded: a connection keeps at most
// Config.BufferFrames unanswered frames and skips (and counts) readings
// while its buffer is full; a publish waits for room in the link's PUBACK
// queue (twice the buffer).
//
// # Readings and the counting model
//
// Every reading carries the tag sim_run=<run id> (but in SenML, which has
// no tags: such a run is found by its devices and time window, see
// formats.go) and the field sim_seq, a per-device sequence number, and a
// device timestamp in nanoseconds that is strictly increasing per device.
// Config.Format chooses the encoding (json, senml, cbor, senml-cbor, lp).
// A reading is
//
//   - sent once its frame was written at least once;
//   - acked when its frame was answered with {"ack":seq} (WebSocket) or a
//     PUBACK (MQTT: the broker has it — only storage can tell more);
//   - rejected when the service named it in an error frame;
//   - stored when InfluxDB returns it for the run (Verify);
//   - seen live when the dashboard subscription delivered it (Verify).
//
// Losses, each listed by device and sim_seq: acked but not stored; acked
// but never seen live; valid but never answered by the end of the drain;
// valid but rejected; and readings with an injected fault that the service
// accepted or answered with an unexpected code. Stored-but-not-acked
// readings (a frame answered on a connection that then dropped) are
// "recovered": allowed, and counted.
//
// # Devices
//
// A device takes Rate readings per second (each interval ± Jitter), Batch
// readings per frame, plus Burst extra readings at once, fleet-wide, every
// Burst.Every. Frames stay outstanding until answered. A device that loses
// its connection reconnects after an exponential backoff with equal jitter
// (the first retry is immediate) and resends every unanswered frame with
// the same bytes — so the same timestamps, which makes storage idempotent.
// Error frames with "overloaded", "not_stored", "rate_limited" or
// "shutting_down" make it resend that frame after retry_after_ms.
//
// # Faults
//
// At most one fault is drawn per frame, with the configured probabilities:
//
//	malformed    the frame is cut short (invalid JSON, seq still readable);
//	             WebSocket: error invalid_payload for that seq; MQTT: never stored
//	invalid      one reading's first metric is NaN, a string declared float,
//	             1.5 declared int, 1e400 or an array; WebSocket: the reading is
//	             rejected with invalid_value; MQTT: never stored
//	skew         one reading is dated Config.SkewBy ahead; WebSocket: rejected
//	             with timestamp_in_future; MQTT: never stored
//	duplicate    the frame is sent twice (a new seq on WebSocket); both copies
//	             are acked and the readings are stored once
//	oversize     after the frame, one frame larger than MaxFrameBytes;
//	             WebSocket: closed with 1009. Not injected on MQTT (no limit
//	             to probe; the draw is spent so decisions stay reproducible)
//	disconnect   after the frame, the TCP connection is reset without a
//	             goodbye; the device reconnects and resends, nothing is lost
//	wrong_token  after the frame, a second connection with a wrong token;
//	             WebSocket: HTTP 401 at the upgrade; MQTT: CONNACK refused
//	             (requires a broker with password authentication)
//
// Malformed, invalid and skew count readings, the others count events. The
// report checks that every injected fault got its expected answer and that
// no other reading was refused.
package simulator
