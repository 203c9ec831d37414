// Package payload decodes device payloads — WebSocket text frames and MQTT
// message bodies — into telemetry readings.
//
// # Contract
//
// Transports (the WebSocket and MQTT ingest servers) call Decoder.Decode once
// per received payload and hand the resulting readings to the bridge, which
// validates names and forwards them into the pipeline. Decoding only
// interprets the wire format: it does not check measurement, field or tag
// names against any charset or length rule.
//
// A Decoder is not safe for concurrent use: it owns a fastjson.Parser and
// scratch buffers that every call reuses. Native payloads without escapes
// take a one-pass fast path (fast.go) that builds no JSON tree; anything
// else, and every payload with a problem, goes through fastjson, which
// gives the same answer for whatever the fast path accepts. A single
// reading laid out like the last one the fast path decoded (same keys,
// order and spacing) is decoded from the Decoder's template of it, reading
// only its values (template.go). Keep one Decoder per connection or
// goroutine, or share them through a sync.Pool.
//
// The input buffer belongs to the caller and may be reused as soon as Decode
// returns (gws recycles its read buffers). Decode therefore copies every
// string it returns out of the input, and the returned Message — readings,
// fields, tags, rejections — owns all of its memory: it stays valid after
// later Decode calls on the same Decoder and may be handed to another
// goroutine. Strings may be shared between messages (a Decoder interns
// names and short string values), which is harmless because strings are
// immutable.
//
// # Formats
//
// The format is detected per payload:
//
//   - Native, single reading: an object with a "metrics" key, e.g.
//     {"seq":17,"ts":1763820000123,"measurement":"environment",
//     "metrics":{"temperature":21.4,"door_open":false,"status":"ok"},
//     "tags":{"site":"plant-3"},"device":"child-7"}.
//
//   - Native, batch: an object with a "readings" array of such reading objects.
//
//   - SenML JSON (RFC 8428): a top-level array of records, or an envelope
//     object {"seq":19,"measurement":"m","senml":[...records...]} so that
//     SenML frames can carry a sequence number to acknowledge.
//
//   - CBOR (RFC 8949, cbor.go): a payload starting with a CBOR array or map
//     header (never the first byte of text). The schemas above with the
//     same text keys, or SenML-CBOR with RFC 8428 §6's integer labels;
//     checked under fixed limits (fxamacker/cbor), then walked into the
//     value tree the JSON decoder builds and decoded by the same rules
//     (no JSON text in between; a CBOR integer is a number).
//
//   - InfluxDB line protocol (lineproto.go): a payload whose first line is
//     "measurement[,tags] field=...", decoded by line-protocol/v2, one
//     reading per line with its field types, nanosecond timestamps (HTTP
//     writes choose the precision: DecodeLineProtocol). A line that does
//     not parse is rejected alone.
//
// "seq", when present, must be a non-negative integer. Unknown keys are
// ignored for forward compatibility. When a structural key (such as "ts" or
// "metrics") repeats within one object, its first occurrence counts;
// repeated metric names or tag keys within one reading reject that reading.
//
// # Errors
//
// Problems with the payload as a whole (malformed JSON, wrong top-level
// type, no metrics/readings/senml key, bad "seq") make Decode return an
// error wrapping ErrInvalidPayload; more readings than Limits.MaxReadings
// gives ErrTooManyReadings. In both cases, when the payload was an object
// whose "seq" could still be read — even from malformed JSON, by a
// best-effort scan of its top-level keys — Message.Seq and Message.HasSeq are
// set so the caller can name the rejected frame.
//
// Problems with a single reading (or SenML record) do not fail the frame:
// its slot in Message.Readings is a zero Reading placeholder, and
// Message.Invalid gets a telemetry.Rejection with the reading's index and one
// of the Code* constants, so indexes stay aligned with the payload.
//
// # Values and times
//
// Native readings: "measurement" defaults to "telemetry" when absent or
// empty; "device" names a gateway's child device ("" is the sender itself);
// "tags" is an object of strings (null means none). A metric that is a JSON
// number is always a float field, however it is spelled (21 and 21.5 must
// not become an integer and a float field in InfluxDB); booleans and
// strings keep their type; {"value":..,"type":"int"|"float"|"bool"|"string",
// "unit":".."} gives an explicit type and unit. Number literals must follow
// the strict JSON grammar (fastjson lets NaN, inf, 01 or 1. through).
//
// "ts" is a Unix epoch whose unit follows from its magnitude (below 1e11
// seconds, 1e14 milliseconds, 1e17 microseconds, else nanoseconds; a
// fraction is allowed in any unit) or an RFC 3339 string; 0 or absent leaves
// Reading.Time 0 ("no device time"). Numeric times are converted from their
// decimal text exactly, never through float64; digits below a nanosecond
// are dropped.
//
// SenML: one reading with one field per record. The resolved name (bn+n) is
// split at its last '/' into the child device id and the field name. A
// resolved time below 2^28 seconds is relative to the receive time. A record
// that carries only base fields (bn, bt, bu, bv, bs, bver) and no name or
// value produces no reading: its slot is a placeholder and its index is
// listed in Message.Skipped, not in Message.Invalid. A malformed base field
// rejects every later record that relies on it until it is redefined, rather
// than letting them resolve against an older base (and so, perhaps, the
// wrong device). A label ending in '_' that is not understood rejects the
// whole pack, as RFC 8428 §4.4 requires.
package payload
