package storage

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/telemetryd/telemetryd/telemetry"
)

// History read-back. InfluxDB 1.8 (Flux v0.65) has no bound query
// parameters (its /api/v2/query ignores "params": a query that uses them
// fails with `undefined identifier "params"`), so the Flux text is
// built here, and only from values this file validated and re-formatted
// itself: names pass the allow-list the bridge applies before writing
// ([A-Za-z0-9_.:/-]), times are re-emitted as RFC 3339 from time.Time,
// durations as integer nanoseconds, and every string goes through
// fluxString, a complete Flux string-literal escaper. Nothing the caller
// passes is copied into the query unquoted.

// History limits.
const (
	// DefaultHistoryPoints is HistoryQuery.MaxPoints when zero.
	DefaultHistoryPoints = 1000
	// MaxHistoryPoints bounds the points of one answer: an explicit Every
	// may not ask for more windows than this, and raw answers keep the
	// latest MaxHistoryPoints points.
	MaxHistoryPoints = 10000
	// RawHistoryRange is the widest range returned raw when Every is zero;
	// wider ranges are aggregated.
	RawHistoryRange = 30 * time.Minute
	maxNameLen      = 128
	maxTagValueLen  = 256
	maxHistoryTags  = 32
)

// HistoryQuery selects one field of one device over a time range.
type HistoryQuery struct {
	// Device is the device_id tag (required).
	Device string
	// Measurement, when set, restricts the query to one measurement.
	Measurement string
	// Field is the field to read (required).
	Field string
	// Start is inclusive, Stop exclusive; Start must be before Stop.
	Start, Stop time.Time
	// Every is the aggregation window. Zero means automatic: raw points
	// when the range is at most RawHistoryRange, else windows of about
	// range/MaxPoints, rounded up to a round duration.
	Every time.Duration
	// Tags are further tag equalities every point must satisfy (a
	// restricted viewer's scope).
	Tags map[string]string
	// MaxPoints is the point count automatic windows aim at (default
	// DefaultHistoryPoints, at most MaxHistoryPoints).
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
	// Truncated says raw points were left out: only the latest
	// MaxHistoryPoints were kept.
	Truncated bool
}

// HistoryPoint is one value at one time (Unix ns).
type HistoryPoint struct {
	Time  int64
	Value telemetry.Value
}

// ErrInvalidHistoryQuery is matched (errors.Is) by every error of a query
// refused before it reached InfluxDB; such errors match
// telemetry.ErrPermanent too (the same query will fail again).
var ErrInvalidHistoryQuery = errors.New("invalid history query")

type queryError struct{ msg string }

func (e *queryError) Error() string   { return "invalid history query: " + e.msg }
func (e *queryError) Unwrap() []error { return []error{ErrInvalidHistoryQuery, telemetry.ErrPermanent} }

func invalid(format string, args ...any) error {
	return &queryError{msg: fmt.Sprintf(format, args...)}
}

// History reads back the points of one field of one device. Invalid
// queries fail with an error matching telemetry.ErrPermanent and nothing is
// sent to InfluxDB. Aggregated queries first read one point to learn the
// field's type (mean needs numbers), then the windows.
func (s *Influx) History(ctx context.Context, q HistoryQuery) (History, error) {
	if s.closed.Load() {
		return History{}, fmt.Errorf("storage: history: %w", telemetry.ErrClosed)
	}
	plan, err := planHistory(q)
	if err != nil {
		return History{}, err
	}
	h := History{Device: q.Device, Measurement: q.Measurement, Field: q.Field, Every: plan.every}
	if plan.every > 0 {
		sample, err := s.queryPoints(ctx, buildHistoryFlux(s.cfg.Bucket, q, historySample))
		if err != nil {
			return History{}, err
		}
		if len(sample) == 0 {
			h.Every = 0
			return h, nil
		}
		fn := historyLast
		switch sample[0].Value.Kind() {
		case telemetry.KindFloat, telemetry.KindInt:
			fn = historyMean
		}
		plan.fn = fn
		h.Aggregate = string(fn)
	}
	h.Points, err = s.queryPoints(ctx, buildHistoryFlux(s.cfg.Bucket, q, plan))
	if err != nil {
		return History{}, err
	}
	h.Truncated = plan.every == 0 && len(h.Points) >= MaxHistoryPoints
	return h, nil
}

func (s *Influx) queryPoints(ctx context.Context, flux string) ([]HistoryPoint, error) {
	res, err := s.client.QueryAPI(s.cfg.Org).Query(ctx, flux)
	if err != nil {
		return nil, fmt.Errorf("storage: history: %w", withContext(ctx, err))
	}
	defer res.Close()
	var pts []HistoryPoint
	for res.Next() {
		rec := res.Record()
		v, ok := toValue(rec.Value())
		if !ok {
			continue // null (an empty window) or an unknown type
		}
		pts = append(pts, HistoryPoint{Time: rec.Time().UnixNano(), Value: v})
		if len(pts) > MaxHistoryPoints+1 {
			break // the query bounds its rows; this guards against a server that does not
		}
	}
	if err := res.Err(); err != nil {
		return nil, fmt.Errorf("storage: history: %w", withContext(ctx, err))
	}
	slices.SortStableFunc(pts, func(a, b HistoryPoint) int {
		switch {
		case a.Time < b.Time:
			return -1
		case a.Time > b.Time:
			return 1
		}
		return 0
	})
	return pts, nil
}

type historyFn string

const (
	historyMean historyFn = "mean"
	historyLast historyFn = "last"
)

// historyPlan is what the query builder needs beyond the query: the window
// (0: raw), the aggregate, and the sample mode (one point, to learn the type).
type historyPlan struct {
	every  time.Duration
	fn     historyFn
	sample bool
}

var historySample = historyPlan{sample: true}

// planHistory validates q and chooses the window.
func planHistory(q HistoryQuery) (historyPlan, error) {
	if err := validateHistoryQuery(q); err != nil {
		return historyPlan{}, err
	}
	span := q.Stop.Sub(q.Start)
	maxPoints := q.MaxPoints
	if maxPoints <= 0 {
		maxPoints = DefaultHistoryPoints
	}
	maxPoints = min(maxPoints, MaxHistoryPoints)
	switch {
	case q.Every > 0:
		if span/q.Every > MaxHistoryPoints {
			return historyPlan{}, invalid("every %s gives more than %d windows over %s", q.Every, MaxHistoryPoints, span)
		}
		return historyPlan{every: q.Every}, nil
	case span <= RawHistoryRange:
		return historyPlan{}, nil
	}
	return historyPlan{every: roundStep((span + time.Duration(maxPoints) - 1) / time.Duration(maxPoints))}, nil
}

// roundSteps are the windows automatic aggregation chooses from.
var roundSteps = [...]time.Duration{
	time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second, 30 * time.Second,
	time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute,
	time.Hour, 2 * time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour,
}

// roundStep rounds d up to a round window (whole days beyond a day).
func roundStep(d time.Duration) time.Duration {
	for _, s := range roundSteps {
		if d <= s {
			return s
		}
	}
	day := 24 * time.Hour
	return (d + day - 1) / day * day
}

// validateHistoryQuery applies the allow-lists. It (with validateSelection)
// is the only gate between a caller's strings and the Flux text.
func validateHistoryQuery(q HistoryQuery) error {
	if err := validateSelection(q.Device, q.Start, q.Stop, q.Tags); err != nil {
		return err
	}
	if q.Measurement != "" && !ValidName(q.Measurement) {
		return invalid("measurement must be 1 to %d of [A-Za-z0-9_.:/-], not starting with '_' and not \"time\"", maxNameLen)
	}
	if !ValidName(q.Field) {
		return invalid("field must be 1 to %d of [A-Za-z0-9_.:/-], not starting with '_' and not \"time\"", maxNameLen)
	}
	if q.Every < 0 || (q.Every > 0 && q.Every < time.Millisecond) {
		return invalid("every must be at least 1ms")
	}
	return nil
}

// validateSelection checks what every read-back query has: a device, a
// time range and tag filters.
func validateSelection(device string, start, stop time.Time, tags map[string]string) error {
	if !telemetry.ValidDeviceID(device) {
		return invalid("device must be 1 to %d of [A-Za-z0-9_.:-]", telemetry.MaxDeviceIDLen)
	}
	if start.IsZero() || stop.IsZero() || !start.Before(stop) {
		return invalid("start must be before stop")
	}
	// Flux times are int64 nanoseconds.
	if start.Year() < 1678 || stop.Year() > 2261 {
		return invalid("times must be between the years 1678 and 2261")
	}
	if len(tags) > maxHistoryTags {
		return invalid("at most %d tag filters", maxHistoryTags)
	}
	for k, v := range tags {
		if !ValidName(k) && k != "device_id" {
			return invalid("tag key %q is not a valid name", clipQ(k))
		}
		if !validTagValue(v) {
			return invalid("tag %q: value must be 1 to %d bytes of printable UTF-8", clipQ(k), maxTagValueLen)
		}
	}
	return nil
}

// ValidName reports whether s may name a measurement, field or tag key: 1
// to 128 of [A-Za-z0-9_.:/-], not starting with '_' (InfluxDB's columns
// such as _value), and not "time". These are the bridge's rules for what
// it writes.
func ValidName(s string) bool {
	return len(s) <= maxNameLen && allowed(s) && s[0] != '_' && s != "time"
}

func allowed(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '_', c == '.', c == ':', c == '/', c == '-':
		default:
			return false
		}
	}
	return true
}

// validTagValue: printable UTF-8 of 1 to 256 bytes, as the bridge stores.
func validTagValue(s string) bool {
	if s == "" || len(s) > maxTagValueLen || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

func clipQ(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// buildHistoryFlux renders a validated query. Every caller-supplied string
// is a fluxString literal; times and durations are formatted from Go values.
func buildHistoryFlux(bucket string, q HistoryQuery, p historyPlan) string {
	var b strings.Builder
	cond := "r._field == " + fluxString(q.Field)
	if q.Measurement != "" {
		cond += " and r._measurement == " + fluxString(q.Measurement)
	}
	writeSelection(&b, bucket, q.Device, q.Start, q.Stop, q.Tags, cond)
	switch {
	case p.sample:
		b.WriteString("  |> limit(n: 1)\n  |> group()\n  |> limit(n: 1)\n")
	case p.every > 0:
		// One series per device and field, whatever its other tags.
		b.WriteString("  |> group()\n  |> aggregateWindow(every: ")
		b.WriteString(fluxDuration(p.every))
		b.WriteString(", fn: ")
		b.WriteString(string(p.fn))
		b.WriteString(", createEmpty: false)\n  |> sort(columns: [\"_time\"])\n")
	default:
		b.WriteString("  |> group()\n  |> sort(columns: [\"_time\"])\n  |> tail(n: ")
		b.WriteString(strconv.Itoa(MaxHistoryPoints))
		b.WriteString(")\n")
	}
	b.WriteString(`  |> keep(columns: ["_time", "_value"])`)
	return b.String()
}

// writeSelection writes from |> range |> filter for one device, its tag
// filters and the extra condition cond (already rendered from validated
// names).
func writeSelection(b *strings.Builder, bucket, device string, start, stop time.Time, tags map[string]string, cond string) {
	b.WriteString("from(bucket: ")
	b.WriteString(fluxString(bucket))
	b.WriteString(")\n  |> range(start: ")
	b.WriteString(fluxTime(start))
	b.WriteString(", stop: ")
	// InfluxDB 1.8 returns points stamped exactly at stop (and windows them
	// wrongly); stopping 1ns earlier makes stop exclusive on every version.
	b.WriteString(fluxTime(stop.Add(-1)))
	b.WriteString(")\n  |> filter(fn: (r) => ")
	if cond != "" {
		b.WriteString(cond)
		b.WriteString(" and ")
	}
	b.WriteString("r.device_id == ")
	b.WriteString(fluxString(device))
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		b.WriteString(" and r[")
		b.WriteString(fluxString(k))
		b.WriteString("] == ")
		b.WriteString(fluxString(tags[k]))
	}
	b.WriteString(")\n")
}

// fluxString quotes s as a Flux string literal. Flux strings escape \ and ";
// $ (which could start an interpolation) and control bytes are written as
// \xNN, except newline, carriage return and tab, which have short escapes.
// Every other UTF-8 sequence stands for itself; invalid UTF-8 is replaced
// (the validators reject it before it gets here).
func fluxString(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		switch {
		case r == '\\' || r == '"':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '$':
			// Flux v0.65's scanner knows "\${" but not "\$", and reads "$"
			// followed by any character but "{" as two characters (so "$\""
			// would end the literal); a byte escape is read the same by
			// every version.
			b.WriteString(`\x24`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// fluxTime formats t as a Flux date-time literal.
func fluxTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// fluxDuration formats d as a Flux duration literal.
func fluxDuration(d time.Duration) string { return strconv.FormatInt(int64(d), 10) + "ns" }

// MaxSeries bounds the series one SeriesQuery returns.
const MaxSeries = 1000

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

// Series lists the measurements and fields a device has points in over
// the range, sorted, at most MaxSeries, each with its latest point (series
// that differ only in other tags are merged). Invalid queries fail as in
// History.
func (s *Influx) Series(ctx context.Context, q SeriesQuery) ([]SeriesInfo, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("storage: series: %w", telemetry.ErrClosed)
	}
	if err := validateSelection(q.Device, q.Start, q.Stop, q.Tags); err != nil {
		return nil, err
	}
	res, err := s.client.QueryAPI(s.cfg.Org).Query(ctx, buildSeriesFlux(s.cfg.Bucket, q))
	if err != nil {
		return nil, fmt.Errorf("storage: series: %w", withContext(ctx, err))
	}
	defer res.Close()
	found := map[[2]string]SeriesInfo{}
	for res.Next() {
		rec := res.Record()
		v, ok := toValue(rec.Value())
		if !ok {
			continue
		}
		k := [2]string{rec.Measurement(), rec.Field()}
		p := HistoryPoint{Time: rec.Time().UnixNano(), Value: v}
		if old, seen := found[k]; !seen || p.Time > old.Last.Time {
			if !seen && len(found) >= MaxSeries {
				continue
			}
			found[k] = SeriesInfo{Measurement: k[0], Field: k[1], Last: p}
		}
	}
	if err := res.Err(); err != nil {
		return nil, fmt.Errorf("storage: series: %w", withContext(ctx, err))
	}
	out := slices.Collect(maps.Values(found))
	slices.SortFunc(out, func(a, b SeriesInfo) int {
		if c := strings.Compare(a.Measurement, b.Measurement); c != 0 {
			return c
		}
		return strings.Compare(a.Field, b.Field)
	})
	return out, nil
}

func buildSeriesFlux(bucket string, q SeriesQuery) string {
	var b strings.Builder
	writeSelection(&b, bucket, q.Device, q.Start, q.Stop, q.Tags, "")
	b.WriteString(`  |> last()
  |> keep(columns: ["_time", "_value", "_measurement", "_field"])`)
	return b.String()
}

// toValue converts a Flux value; ok is false for null and unknown types.
func toValue(x any) (telemetry.Value, bool) {
	switch x := x.(type) {
	case float64:
		return telemetry.Float(x), true
	case int64:
		return telemetry.Int(x), true
	case uint64:
		return telemetry.Float(float64(x)), true
	case bool:
		return telemetry.Bool(x), true
	case string:
		return telemetry.String(x), true
	}
	return telemetry.Value{}, false
}
