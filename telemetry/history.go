package telemetry

import "time"

// The read-back vocabulary: what the dashboard's API asks the store for
// and what the store answers. One definition, shared by storage (which
// answers) and web (which asks), so that cmd passes one to the other as is.

// HistoryQuery selects one field of one device over [Start, Stop).
type HistoryQuery struct {
	// Device is the device_id tag (required).
	Device string
	// Measurement, when set, restricts the query to one measurement.
	Measurement string
	// Field is the field to read (required).
	Field string
	// Start is inclusive, Stop exclusive; Start must be before Stop.
	Start, Stop time.Time
	// Every is the aggregation window. Zero means automatic: the store
	// returns raw points over narrow ranges and windows over wide ones.
	Every time.Duration
	// Tags are further tag equalities every point must satisfy (a
	// restricted viewer's scope).
	Tags map[string]string
	// MaxPoints is the point count automatic windows aim at (0: the
	// store's default).
	MaxPoints int
}

// History is the answer to a HistoryQuery.
type History struct {
	Device, Measurement, Field string
	// Every is the aggregation window used; 0 when the points are raw.
	Every time.Duration
	// Aggregate is "mean" (numbers) or "last" (booleans, strings) when
	// Every is not 0.
	Aggregate string
	// Points are sorted by time. Aggregated points are stamped with the end
	// of their window.
	Points []HistoryPoint
	// Truncated says raw points were left out: only the latest were kept.
	Truncated bool
}

// HistoryPoint is one value at one time (Unix ns).
type HistoryPoint struct {
	Time  int64
	Value Value
}

// SeriesQuery asks which series a device has points in over [Start, Stop).
type SeriesQuery struct {
	Device      string
	Start, Stop time.Time
	// Tags are further tag equalities (a restricted viewer's scope).
	Tags map[string]string
}

// SeriesInfo is one measurement and field of a device with its latest
// point in the range.
type SeriesInfo struct {
	Measurement, Field string
	Last               HistoryPoint
}
