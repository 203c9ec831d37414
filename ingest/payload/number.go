package payload

import (
	"encoding/binary"
	"math"
	"strconv"
	"time"

	"github.com/valyala/fastjson"
)

// maxExponent caps the exponent we accumulate from a number literal: any
// exponent this large already over- or underflows every conversion we do,
// and capping keeps the arithmetic from overflowing on "1e999999999999".
const maxExponent = 1 << 20

// decimal is a JSON number literal split into its parts. Timestamps and
// "int" fields are converted from it exactly: a float64 has 53 bits of
// mantissa, not enough for a nanosecond Unix time (about 61 bits).
//
// Its value is ±D × 10^(exp−len(frac)), where D is the integer written with
// the digits of intPart followed by those of frac.
type decimal struct {
	neg     bool
	intPart []byte
	frac    []byte
	exp     int
	// d is D itself when it has at most 19 digits (ndigits() <= 19),
	// accumulated while parsing so that exactFloat needs no second pass.
	d uint64
}

// parseDecimal splits a number literal, enforcing the strict JSON grammar
// (RFC 8259 §6). fastjson is lenient here — it passes "01", "1.", "+1",
// "inf" and "nan" through — and those must not reach a field value.
func parseDecimal(b []byte) (decimal, bool) {
	var x decimal
	i := 0
	if i < len(b) && b[i] == '-' {
		x.neg = true
		i++
	}
	start := i
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && isDigit(b[i]) {
			x.d = x.d*10 + uint64(b[i]-'0')
			i++
		}
	default:
		return x, false
	}
	x.intPart = b[start:i]
	if i < len(b) && b[i] == '.' {
		i++
		fs := i
		for i < len(b) && isDigit(b[i]) {
			x.d = x.d*10 + uint64(b[i]-'0')
			i++
		}
		if i == fs {
			return x, false
		}
		x.frac = b[fs:i]
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		negExp := false
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			negExp = b[i] == '-'
			i++
		}
		es := i
		for i < len(b) && isDigit(b[i]) {
			if x.exp < maxExponent {
				x.exp = x.exp*10 + int(b[i]-'0')
			}
			i++
		}
		if i == es {
			return x, false
		}
		if negExp {
			x.exp = -x.exp
		}
	}
	return x, i == len(b)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func (x decimal) ndigits() int { return len(x.intPart) + len(x.frac) }

func (x decimal) digit(i int) byte {
	if i < len(x.intPart) {
		return x.intPart[i] - '0'
	}
	return x.frac[i-len(x.intPart)] - '0'
}

func (x decimal) isZero() bool {
	for i := range x.ndigits() {
		if x.digit(i) != 0 {
			return false
		}
	}
	return true
}

// intDigits returns how many digits the integer part of |x| has, not
// counting leading zeros (0 when |x| < 1). |x| < 10^k exactly when
// intDigits() <= k, which is how timestamp units are told apart without
// rounding.
func (x decimal) intDigits() int {
	n := x.ndigits()
	lead := 0
	for lead < n && x.digit(lead) == 0 {
		lead++
	}
	if lead == n {
		return 0
	}
	return max(len(x.intPart)+x.exp-lead, 0)
}

// scaled returns x × 10^shift truncated toward zero, whether that dropped
// no nonzero digit (exact), and whether it fits in an int64 (ok).
func (x decimal) scaled(shift int) (v int64, exact, ok bool) {
	limit := uint64(math.MaxInt64)
	if x.neg {
		limit++ // -2^63 fits
	}
	// Digits at positions before point are integral after scaling.
	point := len(x.intPart) + x.exp + shift
	n := x.ndigits()
	var acc uint64
	exact = true
	for i := range n {
		d := uint64(x.digit(i))
		if i >= point {
			if d != 0 {
				exact = false
			}
			continue
		}
		if acc > (limit-d)/10 {
			return 0, false, false
		}
		acc = acc*10 + d
	}
	// Zeros implied by a point beyond the written digits. Zero stays zero
	// however far the point moves, and anything else overflows within 19
	// steps, so this loop is short even for a huge exponent.
	for i := n; i < point && acc != 0; i++ {
		if acc > limit/10 {
			return 0, false, false
		}
		acc *= 10
	}
	if x.neg {
		return int64(-acc), exact, true
	}
	return int64(acc), exact, true
}

// float64pow10 holds the powers of ten a float64 represents exactly.
var float64pow10 = [...]float64{
	1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
	1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
}

// exactFloat converts x when its digits and its power of ten are both exact
// float64s: one multiplication or division then rounds once, correctly —
// the fast path strconv.ParseFloat itself starts with, without parsing the
// text a second time. Sensor values (21.4, -67, 3.3) always take it.
func (x decimal) exactFloat() (float64, bool) {
	if x.ndigits() > 15 { // below 10^15 < 2^53
		return 0, false
	}
	m := x.d
	e := x.exp - len(x.frac)
	var f float64
	switch {
	case e < -22 || e > 22:
		return 0, false
	case e >= 0:
		f = float64(m) * float64pow10[e]
	default:
		f = float64(m) / float64pow10[-e]
	}
	if x.neg {
		f = -f
	}
	return f, true
}

// parseUintLiteral parses a plain non-negative integer literal ("0", "17"),
// rejecting signs, leading zeros, fractions and exponents.
func parseUintLiteral(b []byte) (uint64, bool) {
	if len(b) == 0 || (b[0] == '0' && len(b) > 1) {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if !isDigit(c) {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (math.MaxUint64-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// rawNumber returns the literal text of a number value. The slice is
// scratch space, valid until the next call.
func (d *Decoder) rawNumber(v *fastjson.Value) []byte {
	d.num = v.MarshalTo(d.num[:0])
	return d.num
}

// float decodes a number value as a finite float64. On failure it returns
// a reason for the error message.
func (d *Decoder) float(v *fastjson.Value) (float64, string) {
	if v.Type() != fastjson.TypeNumber {
		return 0, "want a number, got " + describe(v)
	}
	return floatLiteral(d.rawNumber(v))
}

// floatLiteral converts a number literal to a finite float64.
func floatLiteral(raw []byte) (float64, string) {
	x, ok := parseDecimal(raw)
	if !ok {
		return 0, "malformed number " + shorten(raw)
	}
	if f, ok := x.exactFloat(); ok {
		return f, ""
	}
	// string(raw) does not escape (strconv copies the text into its errors),
	// so for short literals it is built on the stack.
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, "number " + shorten(raw) + " is out of the float64 range"
	}
	return f, ""
}

// int decodes a number value that must be integral and fit in an int64.
func (d *Decoder) int(v *fastjson.Value) (int64, string) {
	if v.Type() != fastjson.TypeNumber {
		return 0, "want an integer, got " + describe(v)
	}
	return intLiteral(d.rawNumber(v))
}

// intLiteral converts a number literal that must be integral and fit in an int64.
func intLiteral(raw []byte) (int64, string) {
	x, ok := parseDecimal(raw)
	if !ok {
		return 0, "malformed number " + shorten(raw)
	}
	n, exact, ok := x.scaled(0)
	switch {
	case !ok:
		return 0, "number " + shorten(raw) + " is out of the int64 range"
	case !exact:
		return 0, "number " + shorten(raw) + " is not an integer"
	}
	return n, ""
}

// seconds decodes a SenML time (seconds, possibly fractional or negative)
// into nanoseconds, exactly; digits below a nanosecond are dropped.
func (d *Decoder) seconds(v *fastjson.Value) (int64, string) {
	if v.Type() != fastjson.TypeNumber {
		return 0, "want a number of seconds, got " + describe(v)
	}
	raw := d.rawNumber(v)
	x, ok := parseDecimal(raw)
	if !ok {
		return 0, "malformed number " + shorten(raw)
	}
	ns, _, ok := x.scaled(9)
	if !ok {
		return 0, "time " + shorten(raw) + " is out of range"
	}
	return ns, ""
}

// epochShift returns the power of ten that turns an epoch with the given
// number of integer digits into nanoseconds: the unit is inferred from the
// magnitude (< 1e11 seconds, < 1e14 ms, < 1e17 µs, else ns).
func epochShift(intDigits int) int {
	switch {
	case intDigits <= 11:
		return 9
	case intDigits <= 14:
		return 6
	case intDigits <= 17:
		return 3
	}
	return 0
}

// unixNanos converts t to Unix nanoseconds, failing for times before 1970
// or beyond the int64 range (year 2262), where UnixNano is undefined.
func unixNanos(t time.Time) (int64, bool) {
	if t.Unix() < 0 {
		return 0, false
	}
	ns := t.UnixNano()
	return ns, time.Unix(0, ns).Equal(t)
}

// addNanos adds two nanosecond quantities, reporting overflow.
func addNanos(a, b int64) (int64, bool) {
	s := a + b
	if (b > 0 && s < a) || (b < 0 && s > a) {
		return 0, false
	}
	return s, true
}

// shorten quotes a literal for an error message, eliding the middle of a
// long one so a hostile payload can't bloat the rejection.
func shorten(b []byte) string {
	const keep = 16
	if len(b) <= 2*keep {
		return strconv.Quote(string(b))
	}
	return strconv.Quote(string(b[:keep]) + "…" + string(b[len(b)-keep:]))
}

// plainNumber is a number literal without an exponent, parsed in one pass
// for the fast path: the value is ±m × 10^−fracDigits, exactly, when
// intDigits+fracDigits ≤ 19 (m holds every digit).
type plainNumber struct {
	m                     uint64
	intDigits, fracDigits int
	neg                   bool
}

// parsePlainNumber parses b when it is a strict JSON number without an
// exponent (plain false for anything else, valid or not: the general
// helpers decide those).
func parsePlainNumber(b []byte) (x plainNumber, plain bool) {
	x, end, plain := scanPlainNumber(b, 0)
	return x, plain && end == len(b)
}

// scanPlainNumber parses the plain number that starts at b[i] (see
// parsePlainNumber) and returns where it ends. It repeats the start of
// parseDecimal's grammar on purpose: one pass with no slices, on the fast
// decoder's hottest path (BenchmarkDecodeBatch100 shows the difference).
// TestFloatLiteralMatchesParseFloat,
// TestFastEpochMatchesEpochLiteral and FuzzFastPathAgrees keep the two in
// agreement.
func scanPlainNumber(b []byte, i int) (x plainNumber, end int, plain bool) {
	if i < len(b) && b[i] == '-' {
		x.neg = true
		i++
	}
	start := i
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		// Eight digits at a time (an epoch has 10 to 19). More than 19
		// digits wrap m, but such a number is not plain anyway.
		for i+8 <= len(b) {
			v := binary.LittleEndian.Uint64(b[i:])
			if !eightDigits(v) {
				break
			}
			x.m = x.m*1e8 + eightDigitsValue(v)
			i += 8
		}
		for i < len(b) && isDigit(b[i]) {
			x.m = x.m*10 + uint64(b[i]-'0')
			i++
		}
	default:
		return x, i, false
	}
	x.intDigits = i - start
	if i < len(b) && b[i] == '.' {
		i++
		fs := i
		for i < len(b) && isDigit(b[i]) {
			x.m = x.m*10 + uint64(b[i]-'0')
			i++
		}
		x.fracDigits = i - fs
		if x.fracDigits == 0 {
			return x, i, false
		}
	}
	return x, i, x.intDigits+x.fracDigits <= 19
}

// eightDigits reports whether the eight bytes of v (little-endian) are all
// ASCII digits: each byte's high nibble is 3, and adding 6 does not carry
// into it (simdjson's is_made_of_eight_digits_fast).
func eightDigits(v uint64) bool {
	const highs = 0xF0F0F0F0F0F0F0F0
	return v&highs|(v+0x0606060606060606)&highs>>4 == 0x3333333333333333
}

// eightDigitsValue is the number eight ASCII digits spell, the first digit
// in v's lowest byte: pairs, then quads, then the eight combined by
// multiplication (simdjson's parse_eight_digits_unrolled).
func eightDigitsValue(v uint64) uint64 {
	const mask = 0x000000FF000000FF
	const mul1 = 100 + 1000000<<32
	const mul2 = 1 + 10000<<32
	v -= 0x3030303030303030
	v = v*10 + v>>8
	return (v&mask*mul1 + (v>>16)&mask*mul2) >> 32
}

// fastFloat is floatLiteral for the fast path: sensor values take the exact
// conversion straight from the one-pass parse; the rest go to floatLiteral.
func fastFloat(raw []byte) (float64, bool) {
	x, plain := parsePlainNumber(raw)
	return plainFloat(raw, x, plain)
}

// plainFloat is fastFloat with raw already parsed.
func plainFloat(raw []byte, x plainNumber, plain bool) (float64, bool) {
	if plain && x.intDigits+x.fracDigits <= 15 && x.fracDigits <= 22 {
		f := float64(x.m) / float64pow10[x.fracDigits]
		if x.neg {
			f = -f
		}
		return f, true
	}
	f, why := floatLiteral(raw)
	return f, why == ""
}

// fastEpoch is epochLiteral for the fast path: a plain integer epoch (the
// usual ms or ns count) is scaled without the decimal machinery.
func fastEpoch(raw []byte) (int64, bool) {
	x, plain := parsePlainNumber(raw)
	return plainEpoch(raw, x, plain)
}

// plainEpoch is fastEpoch with raw already parsed.
func plainEpoch(raw []byte, x plainNumber, plain bool) (int64, bool) {
	if plain && !x.neg && x.fracDigits == 0 {
		if x.m == 0 {
			return 0, true
		}
		unit := uint64(float64pow10[epochShift(x.intDigits)])
		if x.m <= math.MaxInt64/unit {
			return int64(x.m * unit), true
		}
	}
	ns, p := epochLiteral(raw)
	return ns, p.ok()
}
