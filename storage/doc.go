// Package storage is telemetryd's InfluxDB adapter: it sends batches of
// line protocol to InfluxDB OSS 1.8 (through its /api/v2 compatibility
// endpoints) or 2.x, and classifies what went wrong.
//
// # Contract
//
// Storage does not encode anything: the bridge encodes readings as line
// protocol (nanosecond precision) and hands storage the bytes. One call of
// [Influx.Write] is one HTTP request: a POST of those bytes, not copied, to
// the v2 write endpoint through influxdb-client-go's HTTP service, which
// supplies auth and error decoding (its write APIs would take the batch as a
// string: a copy of every batch). There is no hidden buffering, batching or
// retrying, so
// a nil error means InfluxDB accepted every line of the batch. The caller
// owns retries and acknowledgements.
//
// Errors from Write are *[WriteError]:
//
//   - Permanent (errors.Is(err, telemetry.ErrPermanent)): any 4xx except 408
//     and 429. Resending the same bytes fails again. InfluxDB 1.8 answers a
//     batch in which some lines are bad (unparseable line, field type
//     conflict, point outside the retention policy) with 400 "partial write:
//     ..." after storing the good lines; WriteError.Message carries the
//     server's text so the caller can tell which readings were dropped.
//     A type conflict between two lines of the same batch for a field that
//     does not exist yet is answered with 400 "field type conflict" and
//     nothing of the batch is stored. A missing database is 404.
//   - Transient (everything else): 5xx, 408, 429 (RetryAfter set from the
//     Retry-After header), network errors and timeouts (Status 0). Retry
//     later with back-off. A cancelled or expired context also satisfies
//     errors.Is(err, context.Canceled) / errors.Is(err, context.DeadlineExceeded),
//     and so does the per-request [Config.Timeout]. InfluxDB 1.8 answers a
//     write to a missing retention policy with 500, i.e. transient.
//
// Writes are idempotent when timestamps come from the device: InfluxDB keeps
// one value per (measurement, tag set, field, timestamp), so a redelivered
// batch overwrites rather than duplicates.
//
// # Schema
//
// One point per reading:
//
//   - measurement: the reading's measurement;
//   - tags: device_id = the authenticated device, plus the payload's tags
//     and the device's registry labels (the bridge adds them); tag values
//     are strings;
//   - fields: one per metric, named after it, typed by the metric's declared
//     kind: float unless declared integer (written 5i), boolean, or string.
//     InfluxDB fixes a field's type on first write (per shard), so a kind
//     must never change for a given measurement and field;
//   - timestamp: the device's time in Unix nanoseconds, or the bridge's
//     receive time when the device gave none.
//
// For example:
//
//	climate,device_id=dev-7,room=kitchen temp=21.4,humidity=48.5,door=false,count=5i,note="ok" 1700000000000000000
//
// String field values escape only '"' and '\' on the wire; InfluxDB 1.8 does
// not unescape \n, \r or \t, so the bridge writes a newline inside a quoted
// string value as a raw newline, which InfluxDB accepts and stores as is.
//
// # Reading back
//
// [Influx.History] and [Influx.Series] read one device's points back, and
// [Influx.FieldTypes] the stored field types, in InfluxQL over GET /query,
// which 1.8, 2.x (through the bucket's DBRP mapping) and 3.x (its v1 API)
// all answer (influxql.go). Statements are built from strictly validated
// values only, and every identifier and string literal is quoted by the
// InfluxQL rules anyway; anything else is refused with an error matching
// [ErrInvalidHistoryQuery] and telemetry.ErrPermanent before the server is
// asked. History is one or two requests, Series three or more (bounded by
// [MaxSeries]), each bounded by [Config.Timeout] and ctx.
//
// # Servers
//
// [Detect] asks the server which InfluxDB it is (/ping's X-Influxdb-Version,
// else /health); [Influx.Connect] calls it and fails with [ErrUnknownServer]
// (permanent) when the server is none it knows. [Open] is [New] then one
// Connect; a service that starts before its database uses New, Connect
// once, and [Influx.KeepConnecting] in the background: until connected,
// Write fails with the transient [ErrNotConnected] (so a durable caller
// spools), and [Influx.State] says why. On 1.8 the token is
// "user:password" (or "" without auth), the org is "" and the bucket is
// "db/rp" or "db"; Open creates the database with CREATE DATABASE
// (idempotent). On 2.x the token is an API token, and org and bucket must
// exist. On 3.x the token is a 3.x token, the org is "" and the bucket is
// the database.
package storage
