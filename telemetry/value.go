package telemetry

import (
	"math"
	"strconv"
)

// Kind is the type of a field value. InfluxDB fixes a field's type on first
// write, so the kind is explicit and never inferred from a number's spelling.
type Kind uint8

// The kinds a field value can have.
const (
	KindInvalid Kind = iota
	KindFloat
	KindInt
	KindBool
	KindString
)

func (k Kind) String() string {
	switch k {
	case KindFloat:
		return "float"
	case KindInt:
		return "integer"
	case KindBool:
		return "boolean"
	case KindString:
		return "string"
	}
	return "invalid"
}

// Value is one typed field value: a float, an integer, a boolean or a string.
// The zero Value is invalid. Values are small and are copied freely.
type Value struct {
	kind Kind
	bits uint64 // float64 bits, int64 bits or 0/1 for a bool
	str  string
}

// Float returns a float value.
func Float(f float64) Value { return Value{kind: KindFloat, bits: math.Float64bits(f)} }

// Int returns an integer value.
func Int(i int64) Value { return Value{kind: KindInt, bits: uint64(i)} }

// Bool returns a boolean value.
func Bool(b bool) Value {
	v := Value{kind: KindBool}
	if b {
		v.bits = 1
	}
	return v
}

// String returns a string value.
func String(s string) Value { return Value{kind: KindString, str: s} }

// Kind reports the value's type.
func (v Value) Kind() Kind { return v.kind }

// AsFloat returns the value as a float64 (integers are converted; other kinds give 0).
func (v Value) AsFloat() float64 {
	switch v.kind {
	case KindFloat:
		return math.Float64frombits(v.bits)
	case KindInt:
		return float64(int64(v.bits))
	}
	return 0
}

// AsInt returns an integer value (0 for other kinds).
func (v Value) AsInt() int64 {
	if v.kind == KindInt {
		return int64(v.bits)
	}
	return 0
}

// AsBool returns a boolean value (false for other kinds).
func (v Value) AsBool() bool { return v.kind == KindBool && v.bits == 1 }

// AsString returns a string value ("" for other kinds).
func (v Value) AsString() string { return v.str }

// AppendJSON appends the value as a JSON literal. Strings are escaped so the
// result is always valid UTF-8 JSON; non-finite floats are written as null.
func (v Value) AppendJSON(dst []byte) []byte {
	switch v.kind {
	case KindFloat:
		f := v.AsFloat()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return append(dst, "null"...)
		}
		return strconv.AppendFloat(dst, f, 'g', -1, 64)
	case KindInt:
		return strconv.AppendInt(dst, int64(v.bits), 10)
	case KindBool:
		return strconv.AppendBool(dst, v.bits == 1)
	case KindString:
		return AppendJSONString(dst, v.str)
	}
	return append(dst, "null"...)
}

// String formats the value for humans and logs.
func (v Value) String() string {
	switch v.kind {
	case KindString:
		return strconv.Quote(v.str)
	case KindInvalid:
		return "<invalid>"
	}
	return string(v.AppendJSON(nil))
}
