package payload

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/influxdata/line-protocol/v2/lineprotocol"

	"github.com/telemetryd/telemetryd/telemetry"
)

// DeviceTag is the line-protocol tag through which a gateway names the
// child device a line belongs to (like a native reading's "device"). It
// is not stored as a tag.
const DeviceTag = "device_id"

// ErrPrecision: a line-protocol precision this decoder does not know.
var ErrPrecision = errors.New("unknown precision")

// ParsePrecision maps an InfluxDB precision parameter (v2: ns, us, ms, s;
// v1 also n, u, µ, µs) to the unit of a line's timestamp. "" is nanoseconds,
// InfluxDB's default.
func ParsePrecision(s string) (time.Duration, error) {
	switch s {
	case "", "n", "ns":
		return time.Nanosecond, nil
	case "u", "us", "µ", "µs":
		return time.Microsecond, nil
	case "ms":
		return time.Millisecond, nil
	case "s":
		return time.Second, nil
	}
	return 0, fmt.Errorf("%w %q: want ns, us, ms or s", ErrPrecision, s)
}

func lpPrecision(unit time.Duration) lineprotocol.Precision {
	switch unit {
	case time.Microsecond:
		return lineprotocol.Microsecond
	case time.Millisecond:
		return lineprotocol.Millisecond
	case time.Second:
		return lineprotocol.Second
	}
	return lineprotocol.Nanosecond
}

// looksLikeLineProtocol reports whether a payload that is neither JSON nor
// CBOR is line protocol: its first line that is not a comment has a space
// (between measurement and fields) and an '=' after it. Anything else keeps
// going to the JSON decoder, whose error names the problem.
func looksLikeLineProtocol(data []byte) bool {
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		line = bytes.TrimLeft(line, " \t\r")
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		if line[0] == '{' || line[0] == '[' || line[0] == '"' {
			return false
		}
		sp := bytes.IndexByte(line, ' ')
		return sp > 0 && bytes.IndexByte(line[sp:], '=') > 0
	}
	return false
}

// DecodeLineProtocol decodes InfluxDB line protocol: one reading per line,
// timestamps in unit (see ParsePrecision). A line that does not parse is
// rejected alone (Message.Invalid, indexed by its position among the
// payload's lines that are neither blank nor comments); the others are
// decoded. More lines than Limits.MaxReadings is a frame error.
//
// Field types map one to one (float, integer, string, boolean); an
// unsigned integer becomes an integer and is rejected above 2^63-1. The
// tag DeviceTag names a gateway's child device. A line without a
// timestamp leaves Reading.Time 0 (the receive time).
func (d *Decoder) DecodeLineProtocol(data []byte, unit time.Duration) (Message, error) {
	defer d.release(len(data))
	return d.decodeLineProtocol(data, lpPrecision(unit))
}

func (d *Decoder) decodeLineProtocol(data []byte, prec lineprotocol.Precision) (Message, error) {
	var msg Message
	n := countLines(data)
	if n > d.limits.MaxReadings {
		return msg, fmt.Errorf("%w: %d lines, at most %d allowed", ErrTooManyReadings, n, d.limits.MaxReadings)
	}
	// Lines are decoded into the reused scratch arrays and copied at the end
	// into arrays of the exact size: guessing the sizes up front either
	// wastes memory or grows the arrays by append, copying them each time.
	d.fields, d.tags = d.fastFields[:0], d.fastTags[:0]
	msg.Readings = make([]telemetry.Reading, 0, n)
	dec := lineprotocol.NewDecoderWithBytes(data)
	for i := 0; dec.Next(); i++ {
		if i >= d.limits.MaxReadings { // countLines is a bound, not the parser's count
			d.keepScratch()
			return Message{}, fmt.Errorf("%w: more than %d lines", ErrTooManyReadings, d.limits.MaxReadings)
		}
		f0, t0 := len(d.fields), len(d.tags)
		r, p := d.lineReading(dec, prec)
		msg.Readings = append(msg.Readings, telemetry.Reading{})
		if !p.ok() {
			// Cleared, so that release, which clears the scratch up to its
			// length, leaves no string of this line behind.
			clear(d.fields[f0:])
			clear(d.tags[t0:])
			d.fields, d.tags = d.fields[:f0], d.tags[:t0]
			msg.reject(i, p)
			continue
		}
		// Fields and Tags point into the scratch until lineMessage copies
		// them out; a later append that moves the scratch leaves the old
		// array, which still holds them, to be read from.
		r.Fields = d.fields[f0:len(d.fields):len(d.fields)]
		if len(d.tags) > t0 {
			r.Tags = d.tags[t0:len(d.tags):len(d.tags)]
		}
		msg.Readings[i] = r
	}
	d.keepScratch()
	if err := dec.Err(); err != nil {
		return Message{}, fmt.Errorf("%w: line protocol: %v", ErrInvalidPayload, err)
	}
	if len(msg.Readings) == 0 {
		msg.Readings = nil
		return msg, nil
	}
	d.lineMessage(msg.Readings)
	return msg, nil
}

// keepScratch hands the grown scratch back to the fast path's fields, which
// release clears, so the Decoder pins none of this payload's strings.
func (d *Decoder) keepScratch() {
	d.fastFields, d.fastTags = d.fields, d.tags
}

// lineMessage moves the readings' fields and tags out of the scratch into
// one array each that the Message owns. Each reading's Tags gets one spare
// slot, as on the fast path: the bridge adds device_id in place.
func (d *Decoder) lineMessage(rs []telemetry.Reading) {
	tagSlots := len(d.tags)
	for i := range rs {
		if len(rs[i].Tags) > 0 {
			tagSlots++
		}
	}
	fields := make([]telemetry.Field, len(d.fields))
	var tags []telemetry.Tag
	if tagSlots > 0 {
		tags = make([]telemetry.Tag, tagSlots)
	}
	fa, ta := 0, 0
	for i := range rs {
		r := &rs[i]
		if nf := len(r.Fields); nf > 0 {
			copy(fields[fa:], r.Fields)
			r.Fields = fields[fa : fa+nf : fa+nf]
			fa += nf
		}
		if nt := len(r.Tags); nt > 0 {
			copy(tags[ta:], r.Tags)
			r.Tags = tags[ta : ta+nt : ta+nt+1]
			ta += nt + 1
		}
	}
}

// countLines bounds the number of entries: line ends plus one (the
// parser also ends a line at a bare '\r').
func countLines(data []byte) int {
	return bytes.Count(data, []byte{'\n'}) + bytes.Count(data, []byte{'\r'}) + 1
}

// lineReading decodes the decoder's current line.
func (d *Decoder) lineReading(dec *lineprotocol.Decoder, prec lineprotocol.Precision) (telemetry.Reading, problem) {
	d.nameAt = 0
	var r telemetry.Reading
	m, err := dec.Measurement()
	if err != nil {
		return r, lineProblem(err)
	}
	r.Measurement = d.intern(m)
	d.names = d.names[:0]
	for {
		k, v, err := dec.NextTag()
		if err != nil {
			return r, lineProblem(err)
		}
		if k == nil {
			break
		}
		if string(k) == DeviceTag {
			if r.Device != "" {
				return r, problemf(CodeInvalidReading, "tag %q repeated", DeviceTag)
			}
			r.Device = telemetry.DeviceID(d.intern(v))
			continue
		}
		if len(d.names) >= d.limits.MaxTags {
			return r, problemf(CodeInvalidReading, "more than %d tags", d.limits.MaxTags)
		}
		t := telemetry.Tag{Key: d.intern(k), Value: d.internValue(v)}
		d.names = append(d.names, t.Key)
		d.tags = append(d.tags, t)
	}
	if dup, ok := firstDuplicate(d.names); ok {
		return r, problemf(CodeInvalidReading, "tag %q repeated", dup)
	}
	d.names = d.names[:0]
	for {
		k, v, err := dec.NextField()
		if err != nil {
			return r, lineProblem(err)
		}
		if k == nil {
			break
		}
		if len(d.names) >= d.limits.MaxFields {
			return r, problemf(CodeInvalidReading, "more than %d fields", d.limits.MaxFields)
		}
		f := telemetry.Field{Name: d.intern(k)}
		switch v.Kind() {
		case lineprotocol.Float:
			f.Value = telemetry.Float(v.FloatV())
		case lineprotocol.Int:
			f.Value = telemetry.Int(v.IntV())
		case lineprotocol.Uint:
			if v.UintV() > math.MaxInt64 {
				return r, problemf(CodeInvalidValue, "field %q: %du is above the largest integer", k, v.UintV())
			}
			f.Value = telemetry.Int(int64(v.UintV()))
		case lineprotocol.String:
			f.Value = telemetry.String(d.internValue(v.BytesV()))
		case lineprotocol.Bool:
			f.Value = telemetry.Bool(v.BoolV())
		default:
			return r, problemf(CodeInvalidValue, "field %q: unknown type", k)
		}
		d.names = append(d.names, f.Name)
		d.fields = append(d.fields, f)
	}
	if dup, ok := firstDuplicate(d.names); ok {
		return r, problemf(CodeInvalidReading, "field %q repeated", dup)
	}
	ts, err := dec.Time(prec, time.Time{})
	if err != nil {
		return r, timeProblem(err)
	}
	if !ts.IsZero() {
		ns, ok := unixNanos(ts)
		if !ok || ns <= 0 {
			return r, problemf(CodeInvalidTimestamp, "timestamp out of range")
		}
		r.Time = ns
	}
	if err := dec.Err(); err != nil {
		return r, lineProblem(err)
	}
	return r, problem{}
}

func lineProblem(err error) problem {
	return problemf(CodeInvalidReading, "%s", lineMessage(err))
}

func timeProblem(err error) problem {
	return problemf(CodeInvalidTimestamp, "%s", lineMessage(err))
}

// lineMessage is the parser's complaint, without its "line-protocol" noise.
func lineMessage(err error) string {
	var de *lineprotocol.DecodeError
	if errors.As(err, &de) {
		return fmt.Sprintf("line %d: %v", de.Line, de.Err)
	}
	return strings.TrimPrefix(err.Error(), "line-protocol ")
}
