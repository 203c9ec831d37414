package bridge

import (
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/telemetryd/telemetryd/telemetry"
)

// lineEncoder builds InfluxDB line protocol (ns precision) for normalized
// readings. It is hand-written rather than line-protocol/v2's Encoder
// because normalize has already restricted every measurement, tag key and
// field key to [A-Za-z0-9_.:/-] — characters that never need escaping — so
// only tag values and string fields are escaped here, which makes encoding
// much cheaper (BenchmarkConsume), and a newline inside a string field is
// written as itself, which InfluxDB stores faithfully (the v2 encoder writes \n,
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
			b = appendFloat(b, x)
		case telemetry.KindInt:
			b = appendInt(b, f.Value.AsInt())
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
	b = appendInt(b, r.Time)
	enc.buf = append(b, '\n')
	return nil
}

// Bytes that must be preceded by a backslash, per element.
var (
	tagValueEscapes    = escapeSet(", =")
	stringFieldEscapes = escapeSet(`"\`)
)

// escapeSet is a lookup table: one load per byte instead of a loop over
// the escaped characters.
func escapeSet(chars string) (t *[256]bool) {
	t = new([256]bool)
	for i := 0; i < len(chars); i++ {
		t[chars[i]] = true
	}
	return t
}

// appendEscaped appends s with a backslash before every byte in escapes.
// Values rarely need one: the runs between them are appended whole.
func appendEscaped(b []byte, s string, escapes *[256]bool) []byte {
	start := 0
	for i := 0; i < len(s); i++ {
		if escapes[s[i]] {
			b = append(b, s[start:i]...)
			b = append(b, '\\')
			start = i
		}
	}
	return append(b, s[start:]...)
}

// appendInt appends i in decimal, as strconv.AppendInt(b, i, 10) does.
func appendInt(b []byte, i int64) []byte {
	if i < 0 {
		return appendUint(append(b, '-'), uint64(-i)) // -MinInt64 wraps to itself, whose uint64 is right
	}
	return appendUint(b, uint64(i))
}

// appendUint appends u in decimal, two digits at a time, straight into b's
// spare room: strconv formats into a scratch array and copies it, a memmove
// call per timestamp.
func appendUint(b []byte, u uint64) []byte {
	n := decimalLen(u)
	b = slices.Grow(b, n)
	out := b[len(b) : len(b)+n]
	i := n
	for u >= 100 {
		q := u / 100
		d := (u - q*100) * 2
		u = q
		i -= 2
		out[i], out[i+1] = digitPairs[d], digitPairs[d+1]
	}
	if u >= 10 {
		out[0], out[1] = digitPairs[u*2], digitPairs[u*2+1]
	} else {
		out[0] = byte('0' + u)
	}
	return b[:len(b)+n]
}

// digitPairs holds "00" to "99".
const digitPairs = "00010203040506070809101112131415161718192021222324252627282930313233343536373839" +
	"40414243444546474849505152535455565758596061626364656667686970717273747576777879" +
	"8081828384858687888990919293949596979899"

// decimalLen is the number of decimal digits of u: log10 from the bit
// length (1233/4096 ≈ log10 2), corrected by one comparison.
func decimalLen(u uint64) int {
	n := bits.Len64(u) * 1233 >> 12
	if n < len(uint64Pow10) && u >= uint64Pow10[n] {
		n++
	}
	return max(n, 1)
}

var uint64Pow10 = [...]uint64{
	1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
	1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19,
}

// appendFloat appends x as strconv.AppendFloat(b, x, 'g', -1, 64) does,
// byte for byte. Most telemetry values are short decimals (21.4, -67,
// 3.3), for which strconv's shortest-digits search is avoidable: if x is m/10^6 exactly for an integer m, m's digits with a
// decimal point are x's shortest representation (see appendShortDecimal).
// Everything else, and the 'e' notation 'g' picks outside [1e-4, 1e6),
// is left to strconv.
func appendFloat(b []byte, x float64) []byte {
	if out, ok := appendShortDecimal(b, x); ok {
		return out
	}
	return strconv.AppendFloat(b, x, 'g', -1, 64)
}

// appendShortDecimal appends x in %f form when x is a decimal with at most
// six fractional digits and 1e-4 <= |x| < 1e6 (where 'g' prints %f), and
// reports whether it did.
//
// Why the text is exact and shortest: m = round(x·10^6) is taken only if
// m/10^6, computed in IEEE arithmetic from the exact operands m (< 2^53)
// and 10^6 and so correctly rounded, equals x: then the decimal m·10^-6
// parses back to x (ParseFloat rounds correctly too). For |x| < 1e6 an ulp
// of x is below 2^-33, so no other decimal with seven or fewer fractional
// digits rounds to x, and x·10^6 (< 2^40) is computed within 2^-14 of the
// real product: the m found is the only candidate, trailing zeros removed
// it has the fewest digits, and any decimal with more fractional digits has
// more significant digits too. That is what strconv's shortest output is.
func appendShortDecimal(b []byte, x float64) ([]byte, bool) {
	if x == 0 {
		if math.Signbit(x) {
			return append(b, "-0"...), true
		}
		return append(b, '0'), true
	}
	p := x * 1e6
	// The bounds also reject NaN and infinities (every comparison is false).
	if !(p > -1e12 && p < 1e12) {
		return b, false
	}
	m := int64(math.RoundToEven(p))
	if float64(m)/1e6 != x {
		return b, false
	}
	neg := m < 0
	u := uint64(m) // unsigned: division by a constant is cheaper
	if neg {
		u = uint64(-m)
	}
	if u < 100 { // below 1e-4: 'g' switches to e notation
		return b, false
	}
	ip, frac := u/1e6, u%1e6
	// frac has at most five trailing zeros: strip them in three steps.
	fracDigits := 0
	if frac != 0 {
		fracDigits = 6
		if frac%1e4 == 0 {
			frac /= 1e4
			fracDigits -= 4
		}
		if frac%100 == 0 {
			frac /= 100
			fracDigits -= 2
		}
		if frac%10 == 0 {
			frac /= 10
			fracDigits--
		}
	}
	intDigits := decimalLen(ip)
	n := intDigits // the text's length: sign, integer digits, point, fraction
	if neg {
		n++
	}
	if fracDigits > 0 {
		n += 1 + fracDigits
	}
	// Written backwards, two digits at a time, straight into b's spare
	// room: an append from a scratch array costs a memmove call per value.
	b = slices.Grow(b, n)
	out := b[len(b) : len(b)+n]
	i := n
	if fracDigits > 0 {
		for ; fracDigits >= 2; fracDigits -= 2 {
			q := frac / 100
			d := (frac - q*100) * 2
			frac = q
			i -= 2
			out[i], out[i+1] = digitPairs[d], digitPairs[d+1]
		}
		if fracDigits == 1 {
			i--
			out[i] = byte('0' + frac)
		}
		i--
		out[i] = '.'
	}
	// The integer digits as appendUint writes them. Written out twice
	// rather than shared: a shared helper (its sub-slice and bounds checks)
	// made AppendLine slower, even inlined.
	for ip >= 100 {
		q := ip / 100
		d := (ip - q*100) * 2
		ip = q
		i -= 2
		out[i], out[i+1] = digitPairs[d], digitPairs[d+1]
	}
	if ip >= 10 {
		out[i-2], out[i-1] = digitPairs[ip*2], digitPairs[ip*2+1]
	} else {
		out[i-1] = byte('0' + ip)
	}
	if neg {
		out[0] = '-'
	}
	return b[:len(b)+n], true
}
