package storage

import (
	"cmp"
	"context"
	"encoding/json"
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

// History read-back, in InfluxQL (influxql.go): names pass the allow-list
// the bridge applies before writing ([A-Za-z0-9_.:/-]) and are then quoted
// as identifiers or string literals anyway; times and windows are
// formatted from Go values.

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
// field's type (mean needs numbers), then the windows. Numbers are read
// back as floats (InfluxQL's JSON answer does not tell them apart).
func (s *Influx) History(ctx context.Context, q telemetry.HistoryQuery) (telemetry.History, error) {
	if s.closed.Load() {
		return telemetry.History{}, fmt.Errorf("storage: history: %w", telemetry.ErrClosed)
	}
	plan, err := planHistory(q)
	if err != nil {
		return telemetry.History{}, err
	}
	h := telemetry.History{Device: q.Device, Measurement: q.Measurement, Field: q.Field, Every: plan.every}
	if plan.every > 0 {
		sample, err := s.queryPoints(ctx, buildHistoryQL(s.rp, q, historySample), q, historySample)
		if err != nil {
			return telemetry.History{}, err
		}
		if len(sample) == 0 {
			h.Every = 0
			return h, nil
		}
		fn := historyLast
		if sample[0].Value.Kind() == telemetry.KindFloat {
			fn = historyMean
		}
		plan.fn = fn
		h.Aggregate = string(fn)
	}
	h.Points, err = s.queryPoints(ctx, buildHistoryQL(s.rp, q, plan), q, plan)
	if err != nil {
		return telemetry.History{}, err
	}
	h.Truncated = plan.every == 0 && len(h.Points) >= MaxHistoryPoints
	return h, nil
}

// queryPoints runs one history statement and merges its series (one per
// measurement) into time order; aggregated points are stamped with the end
// of their window (at most q.Stop), raw answers keep the latest
// MaxHistoryPoints.
func (s *Influx) queryPoints(ctx context.Context, stmt string, q telemetry.HistoryQuery, p historyPlan) ([]telemetry.HistoryPoint, error) {
	res, err := s.influxQL(ctx, stmt)
	if err != nil {
		return nil, fmt.Errorf("storage: history: %w", err)
	}
	var pts []telemetry.HistoryPoint
	for _, r := range res {
		for _, sr := range r.Series {
			for _, row := range sr.Values {
				if len(row) < 2 {
					continue
				}
				t, ok := qlTime(row[0])
				v, ok2 := qlValue(row[1])
				if !ok || !ok2 {
					continue // null (an empty window) or an unknown type
				}
				if p.every > 0 {
					t = min(t+int64(p.every), q.Stop.UnixNano())
				}
				pts = append(pts, telemetry.HistoryPoint{Time: t, Value: v})
			}
		}
	}
	slices.SortStableFunc(pts, func(a, b telemetry.HistoryPoint) int { return cmp.Compare(a.Time, b.Time) })
	if p.every == 0 && !p.sample && len(pts) > MaxHistoryPoints {
		pts = pts[len(pts)-MaxHistoryPoints:]
	}
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
func planHistory(q telemetry.HistoryQuery) (historyPlan, error) {
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
// is the only gate between a caller's strings and the InfluxQL text.
func validateHistoryQuery(q telemetry.HistoryQuery) error {
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
	// InfluxDB times are int64 nanoseconds.
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

// buildHistoryQL renders a validated query as one InfluxQL statement.
// The field is cast ::field so that a tag of the same name never answers.
func buildHistoryQL(rp string, q telemetry.HistoryQuery, p historyPlan) string {
	var b strings.Builder
	field := quoteIdent(q.Field) + "::field"
	b.WriteString("SELECT ")
	if p.every > 0 {
		b.WriteString(string(p.fn))
		b.WriteString("(")
		b.WriteString(field)
		b.WriteString(")")
	} else {
		b.WriteString(field)
	}
	b.WriteString(" FROM ")
	b.WriteString(qlFrom(rp, q.Measurement))
	b.WriteString(qlWhere(q.Device, q.Start, q.Stop, q.Tags))
	switch {
	case p.sample:
		b.WriteString(" LIMIT 1")
	case p.every > 0:
		// One series per measurement, whatever its other tags; windows
		// without points are left out.
		b.WriteString(" GROUP BY time(")
		b.WriteString(qlDuration(p.every))
		b.WriteString(") fill(none)")
	default:
		b.WriteString(" ORDER BY time DESC LIMIT ")
		b.WriteString(strconv.Itoa(MaxHistoryPoints))
	}
	return b.String()
}

// MaxSeries bounds the series one SeriesQuery returns.
const MaxSeries = 1000

// seriesPerRequest bounds the statements sent in one /query request (the
// query travels in the URL).
const seriesPerRequest = 50

// Series lists the measurements and fields a device has points in over
// the range, sorted, at most MaxSeries, each with its latest point (series
// that differ only in other tags are merged). It asks which measurements
// hold the device (SHOW MEASUREMENTS), their fields (SHOW FIELD KEYS),
// then each field's last point in the range. Invalid queries fail as in
// History.
func (s *Influx) Series(ctx context.Context, q telemetry.SeriesQuery) ([]telemetry.SeriesInfo, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("storage: series: %w", telemetry.ErrClosed)
	}
	if err := validateSelection(q.Device, q.Start, q.Stop, q.Tags); err != nil {
		return nil, err
	}
	res, err := s.influxQL(ctx, buildMeasurementsQL(q))
	if err != nil {
		return nil, fmt.Errorf("storage: series: %w", err)
	}
	var measurements []string
	for _, r := range res {
		for _, sr := range r.Series {
			for _, row := range sr.Values {
				if len(row) > 0 {
					if m, ok := row[0].(string); ok && ValidName(m) {
						measurements = append(measurements, m)
					}
				}
			}
		}
	}
	if len(measurements) == 0 {
		return nil, nil
	}
	res, err = s.influxQL(ctx, buildFieldKeysQL(s.rp, measurements))
	if err != nil {
		return nil, fmt.Errorf("storage: series: %w", err)
	}
	var pairs [][2]string
	var integer []bool // per pair: stored as integer (the answer's numbers do not say)
	for _, r := range res {
		for _, sr := range r.Series {
			for _, row := range sr.Values {
				if len(row) > 0 && len(pairs) < MaxSeries {
					if f, ok := row[0].(string); ok && ValidName(f) && ValidName(sr.Name) {
						pairs = append(pairs, [2]string{sr.Name, f})
						typ, _ := row[len(row)-1].(string)
						integer = append(integer, typ == "integer")
					}
				}
			}
		}
	}
	var out []telemetry.SeriesInfo
	for start := 0; start < len(pairs); start += seriesPerRequest {
		chunk := pairs[start:min(start+seriesPerRequest, len(pairs))]
		res, err := s.influxQL(ctx, buildLastQL(s.rp, q, chunk))
		if err != nil {
			return nil, fmt.Errorf("storage: series: %w", err)
		}
		for i, r := range res {
			if i >= len(chunk) {
				break
			}
			for _, sr := range r.Series {
				for _, row := range sr.Values {
					if len(row) < 2 {
						continue
					}
					t, ok := qlTime(row[0])
					v, ok2 := qlValue(row[1])
					if n, isNum := row[1].(json.Number); isNum && integer[start+i] {
						if x, err := n.Int64(); err == nil {
							v = telemetry.Int(x)
						}
					}
					if ok && ok2 {
						out = append(out, telemetry.SeriesInfo{Measurement: chunk[i][0], Field: chunk[i][1], Last: telemetry.HistoryPoint{Time: t, Value: v}})
					}
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b telemetry.SeriesInfo) int {
		if c := strings.Compare(a.Measurement, b.Measurement); c != 0 {
			return c
		}
		return strings.Compare(a.Field, b.Field)
	})
	return out, nil
}

// buildMeasurementsQL lists the measurements holding the device (and the
// scope's tags), whatever the time.
func buildMeasurementsQL(q telemetry.SeriesQuery) string {
	var b strings.Builder
	b.WriteString("SHOW MEASUREMENTS WHERE ")
	b.WriteString(quoteIdent("device_id"))
	b.WriteString(" = ")
	b.WriteString(quoteString(q.Device))
	for _, k := range sortedKeys(q.Tags) {
		b.WriteString(" AND ")
		b.WriteString(quoteIdent(k))
		b.WriteString(" = ")
		b.WriteString(quoteString(q.Tags[k]))
	}
	return b.String()
}

// buildFieldKeysQL lists the fields of the measurements.
func buildFieldKeysQL(rp string, measurements []string) string {
	var b strings.Builder
	b.WriteString("SHOW FIELD KEYS FROM ")
	for i, m := range measurements {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(qlFrom(rp, m))
	}
	return b.String()
}

// buildLastQL asks for the last point of each measurement and field, one
// statement each (a single selector answers with its point's time).
func buildLastQL(rp string, q telemetry.SeriesQuery, pairs [][2]string) string {
	var b strings.Builder
	where := qlWhere(q.Device, q.Start, q.Stop, q.Tags)
	for i, p := range pairs {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString("SELECT last(")
		b.WriteString(quoteIdent(p[1]))
		b.WriteString("::field) FROM ")
		b.WriteString(qlFrom(rp, p[0]))
		b.WriteString(where)
	}
	return b.String()
}

func sortedKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }
