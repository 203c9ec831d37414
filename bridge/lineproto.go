package bridge

import (
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/telemetryd/telemetryd/telemetry"
)

// lineEncoder builds InfluxDB line protocol (ns precision) for normalized
// readings. It is hand-written rather than line-protocol/v2's Encoder
// because normalize has already restricted every measurement, tag key and
// field key to [A-Za-z0-9_.:/-] — characters that never need escaping — so
// only tag values and string fields are escaped here; this halves the cost
// of encoding (BenchmarkConsume) and writes a newline inside a string field
// as itself, which InfluxDB stores faithfully (the v2 encoder writes \n,
// which InfluxDB 1.8 stores as a backslash and an n).
type lineEncoder struct {
	buf []byte
}

func (e *lineEncoder) Bytes() []byte { return e.buf }
func (e *lineEncoder) Reset()        { e.buf = e.buf[:0] }

// appendLine encodes one normalized reading as one line. No device-supplied
// string can start a second line or point: names are allow-listed, tag
// values have no control characters and their delimiters are escaped, and
// string fields are quoted with '"' and '\' escaped. On error the buffer is
// left as it was.
func appendLine(enc *lineEncoder, r *telemetry.Reading) error {
	start := len(enc.buf)
	b := append(enc.buf, r.Measurement...)
	for _, t := range r.Tags {
		b = append(b, ',')
		b = append(b, t.Key...)
		b = append(b, '=')
		b = appendEscaped(b, t.Value, tagValueEscapes)
	}
	for i, f := range r.Fields {
		if i == 0 {
			b = append(b, ' ')
		} else {
			b = append(b, ',')
		}
		b = append(b, f.Name...)
		b = append(b, '=')
		switch f.Value.Kind() {
		case telemetry.KindFloat:
			x := f.Value.AsFloat()
			if math.IsNaN(x) || math.IsInf(x, 0) {
				enc.buf = b[:start]
				return fmt.Errorf("field %q: NaN and infinities cannot be stored", f.Name)
			}
			b = strconv.AppendFloat(b, x, 'g', -1, 64)
		case telemetry.KindInt:
			b = strconv.AppendInt(b, f.Value.AsInt(), 10)
			b = append(b, 'i')
		case telemetry.KindBool:
			b = strconv.AppendBool(b, f.Value.AsBool())
		case telemetry.KindString:
			s := f.Value.AsString()
			if !utf8.ValidString(s) {
				enc.buf = b[:start]
				return fmt.Errorf("field %q: string is not UTF-8", f.Name)
			}
			b = append(b, '"')
			b = appendEscaped(b, s, stringFieldEscapes)
			b = append(b, '"')
		default:
			enc.buf = b[:start]
			return fmt.Errorf("field %q has no value", f.Name)
		}
	}
	if len(r.Fields) == 0 {
		enc.buf = b[:start]
		return fmt.Errorf("reading has no fields")
	}
	b = append(b, ' ')
	b = strconv.AppendInt(b, r.Time, 10)
	enc.buf = append(b, '\n')
	return nil
}

// Bytes that must be preceded by a backslash, per element.
const (
	tagValueEscapes    = ", ="
	stringFieldEscapes = `"\`
)

func appendEscaped(b []byte, s, escapes string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		for j := 0; j < len(escapes); j++ {
			if c == escapes[j] {
				b = append(b, '\\')
				break
			}
		}
		b = append(b, c)
	}
	return b
}
