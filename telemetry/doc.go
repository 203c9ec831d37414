// Package telemetry defines the values that flow through telemetryd: the
// readings a device reports, the frame that carries them from a transport
// into the pipeline together with its acknowledgement callback, and the
// Consumer interface every pipeline stage accepts frames through.
//
// It is the leaf of the import graph: it imports only the standard library,
// so every other package can share its vocabulary (including the error
// sentinels used to classify failures) without importing each other.
//
// history.go holds the read-back vocabulary (HistoryQuery, History,
// SeriesQuery, SeriesInfo) that the dashboard's API asks and the store
// answers, so that the two share one definition.
//
// Histogram is shared machinery: a lock-free latency histogram that
// pipeline stages keep for metrics without importing a metrics library.
//
// It also holds what every endpoint must answer alike (wire.go): the
// WebSocket close codes, the JSON error answer (WriteHTTPError) and the
// refusals before an upgrade, the bearer-token rule, and the Viewer every
// dashboard endpoint authenticates (viewer.go).
//
// Values are plain data. A Reading handed to a Consumer belongs to the
// Consumer from then on; the caller must not modify it afterwards.
package telemetry
