package payload

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"
	"github.com/valyala/fastjson"

	"github.com/telemetryd/telemetryd/telemetry"
)

// CBOR payloads (RFC 8949) carry the same schemas as JSON: the native
// reading, batch and SenML envelope with the same text keys, or a SenML
// pack whose records use RFC 8428 §6's integer labels. fxamacker/cbor
// checks a payload against fixed limits (Wellformed: nesting, array and
// map sizes, no indefinite lengths, nothing after the item); the decoder
// then walks the checked bytes into the value tree the JSON decoder builds
// (fastjson values, in an arena) and hands it to the same rules
// (decodeValue), so both encodings share one set of rules and no JSON text
// is written or parsed in between. A CBOR integer is a number like any
// other (a float metric unless typed), byte strings are base64url text
// (SenML "vd"), tag 0 is its RFC 3339 text, tag 1 (epoch) becomes RFC 3339
// text, tags 2 and 3 are bignums, other tags stand for their content.
// Map keys keep their payload order; a key repeated (also as its label: 2
// and "v") refuses the payload, as does text that is not UTF-8. NaN and
// infinities have no JSON form; they become null, which rejects their
// reading.

// Decoding limits for CBOR. Limits.MaxReadings also bounds arrays; maps
// may hold a reading's fields and tags and the envelope's keys.
const (
	cborMaxNesting = 16
	cborMinItems   = 16 // the library's lower bound for both counts
)

// senmlLabels are RFC 8428 §6's integer labels.
var senmlLabels = map[int64]string{
	-1: "bver", -2: "bn", -3: "bt", -4: "bu", -5: "bv", -6: "bs",
	0: "n", 1: "u", 2: "v", 3: "vs", 4: "vb", 5: "s", 6: "t", 7: "ut", 8: "vd",
}

// selfDescribed is the "self-described CBOR" tag 55799 (0xd9d9f7).
var selfDescribed = []byte{0xd9, 0xd9, 0xf7}

// IsCBOR reports whether data is a CBOR payload: it starts with an array
// or a map header (bytes 0x80–0xbf, which no UTF-8 text and no JSON
// starts with), possibly behind the self-described CBOR tag.
func IsCBOR(data []byte) bool {
	if len(data) >= 3 && data[0] == selfDescribed[0] && data[1] == selfDescribed[1] && data[2] == selfDescribed[2] {
		data = data[3:]
	}
	return len(data) > 0 && data[0] >= 0x80 && data[0] <= 0xbf
}

func newCBORMode(l Limits) cbor.DecMode {
	m, err := cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		MaxNestedLevels:  cborMaxNesting,
		MaxArrayElements: max(l.MaxReadings, l.MaxFields, cborMinItems),
		MaxMapPairs:      max(l.MaxFields+l.MaxTags+16, cborMinItems),
		IndefLength:      cbor.IndefLengthForbidden,
		IntDec:           cbor.IntDecConvertNone,
		TimeTagToAny:     cbor.TimeTagToRFC3339Nano,
		UTF8:             cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(fmt.Sprintf("payload: CBOR options: %v", err)) // the options are constants within range
	}
	return m
}

// decodeCBOR decodes a CBOR payload (IsCBOR).
func (d *Decoder) decodeCBOR(data []byte, now time.Time) (Message, error) {
	if err := d.cborMode().Wellformed(data); err != nil {
		var arr *cbor.MaxArrayElementsError
		if errors.As(err, &arr) {
			return Message{}, fmt.Errorf("%w: CBOR: %v", ErrTooManyReadings, err)
		}
		return Message{}, fmt.Errorf("%w: malformed CBOR: %v", ErrInvalidPayload, err)
	}
	d.arena.Reset()
	if d.cborKeys == nil {
		d.cborKeys = make(map[string]string)
	}
	w := cborWalker{data: data, a: &d.arena, scratch: d.cborScratch, keys: d.cborKeys}
	root, err := w.value()
	if cap(w.scratch) > 0 && cap(w.scratch) <= maxRetainSize {
		d.cborScratch = w.scratch[:0]
	}
	if err != nil {
		return Message{}, fmt.Errorf("%w: CBOR: %v", ErrInvalidPayload, err)
	}
	return d.decodeValue(root, now)
}

func (d *Decoder) cborMode() cbor.DecMode {
	if d.cbor == nil {
		d.cbor = newCBORMode(d.limits)
	}
	return d.cbor
}

// cborWalker reads one well-formed CBOR item (checked by Wellformed under
// the limits: lengths are within data, nesting is bounded, no indefinite
// lengths) into arena values.
type cborWalker struct {
	data    []byte
	off     int
	a       *fastjson.Arena
	scratch []byte
	keys    map[string]string // map keys seen before (bounded: maxInterned)
}

// head reads an item's major type and argument.
func (w *cborWalker) head() (major byte, arg uint64, info byte) {
	b := w.data[w.off]
	w.off++
	major, info = b>>5, b&0x1f
	switch {
	case info < 24:
		return major, uint64(info), info
	case info == 24:
		arg = uint64(w.data[w.off])
		w.off++
	case info == 25:
		arg = uint64(binary.BigEndian.Uint16(w.data[w.off:]))
		w.off += 2
	case info == 26:
		arg = uint64(binary.BigEndian.Uint32(w.data[w.off:]))
		w.off += 4
	default: // 27: Wellformed refused 28–31 and indefinite lengths
		arg = binary.BigEndian.Uint64(w.data[w.off:])
		w.off += 8
	}
	return major, arg, info
}

// bytes returns the next n bytes (a string's content).
func (w *cborWalker) bytes(n uint64) []byte {
	b := w.data[w.off : w.off+int(n)]
	w.off += int(n)
	return b
}

// number is a number value from its decimal text (the rare big ones; the
// others are written into the arena).
func (w *cborWalker) number(text []byte) *fastjson.Value {
	return w.a.NewNumberString(string(text))
}

// value reads one item.
func (w *cborWalker) value() (*fastjson.Value, error) {
	major, arg, info := w.head()
	switch major {
	case 0:
		if arg <= math.MaxInt64 {
			return w.a.NewNumberInt(int(arg)), nil
		}
		w.scratch = strconv.AppendUint(w.scratch[:0], arg, 10)
		return w.number(w.scratch), nil
	case 1: // -1 - arg
		if arg < math.MaxInt64 {
			return w.a.NewNumberInt(-1 - int(arg)), nil
		} else {
			n := new(big.Int).SetUint64(arg)
			w.scratch = n.Neg(n.Add(n, big.NewInt(1))).Append(w.scratch[:0], 10)
		}
		return w.number(w.scratch), nil
	case 2:
		b := w.bytes(arg)
		w.scratch = base64.RawURLEncoding.AppendEncode(w.scratch[:0], b)
		return w.a.NewStringBytes(w.scratch), nil // base64url needs no escaping
	case 3:
		b := w.bytes(arg)
		if !utf8.Valid(b) {
			return nil, errors.New("text string is not valid UTF-8")
		}
		return w.text(b)
	case 4:
		arr := w.a.NewArray()
		for i := range int(arg) {
			v, err := w.value()
			if err != nil {
				return nil, err
			}
			arr.SetArrayItem(i, v)
		}
		return arr, nil
	case 5:
		obj := w.a.NewObject()
		o, _ := obj.Object()
		for range int(arg) {
			key, err := w.key()
			if err != nil {
				return nil, err
			}
			v, err := w.value()
			if err != nil {
				return nil, err
			}
			n := o.Len()
			o.Set(key, v) // replaces a key already there:
			if o.Len() == n {
				return nil, fmt.Errorf("map key %q repeated", key)
			}
		}
		return obj, nil
	case 6:
		return w.tag(arg)
	}
	// Major type 7: simple values and floats.
	switch info {
	case 20:
		return w.a.NewFalse(), nil
	case 21:
		return w.a.NewTrue(), nil
	case 22, 23: // null, undefined
		return w.a.NewNull(), nil
	case 25, 26, 27:
		return w.float(cborFloat(arg, info)), nil
	}
	return nil, fmt.Errorf("simple value %d is not a value", arg)
}

// text is a string value. The arena stores strings escaped, and it escapes
// with Go's quoting (\a, \x07, \U0001f600), which its own JSON unescaping
// does not read back; so a string with a character to escape (a quote, a
// backslash, a control character) is JSON-quoted here and parsed, by a
// parser of its own (rare: names and values seldom hold one).
func (w *cborWalker) text(b []byte) (*fastjson.Value, error) {
	if !needsEscape(b) {
		return w.a.NewStringBytes(b), nil
	}
	w.scratch = telemetry.AppendJSONString(w.scratch[:0], string(b))
	var p fastjson.Parser
	return p.ParseBytes(w.scratch)
}

func needsEscape(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c == '"' || c == '\\' {
			return true
		}
	}
	return false
}

// float is a number, or null for NaN and the infinities (no JSON form).
func (w *cborWalker) float(f float64) *fastjson.Value {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return w.a.NewNull()
	}
	return w.a.NewNumberFloat64(f) // shortest 'g' text, as JSON would spell it
}

// key reads a map key: text as is, an integer by its SenML label (or its
// decimal text, which no rule looks for).
func (w *cborWalker) key() (string, error) {
	major, arg, _ := w.head()
	switch major {
	case 3:
		b := w.bytes(arg)
		if !utf8.Valid(b) {
			return "", errors.New("map key is not valid UTF-8")
		}
		if k, ok := w.keys[string(b)]; ok {
			return k, nil
		}
		k := string(b)
		if len(w.keys) < maxInterned && len(k) <= maxInternLen {
			w.keys[k] = k
		}
		return k, nil
	case 0, 1:
		if major == 0 && arg > math.MaxInt64 {
			return strconv.FormatUint(arg, 10), nil
		}
		if arg <= math.MaxInt64 {
			n := int64(arg)
			if major == 1 {
				n = -1 - n
			}
			if s, ok := senmlLabels[n]; ok {
				return s, nil
			}
			return strconv.FormatInt(n, 10), nil
		}
	case 6:
		if arg <= 1 { // a date/time key is its RFC 3339 text, like a date/time value
			v, err := w.tag(arg)
			if err != nil {
				return "", err
			}
			b, _ := v.StringBytes()
			return string(b), nil
		}
	}
	return "", fmt.Errorf("map key of CBOR major type %d, want text or a SenML label", major)
}

// tag reads a tagged item's content.
func (w *cborWalker) tag(num uint64) (*fastjson.Value, error) {
	next, info := w.data[w.off]>>5, w.data[w.off]&0x1f
	switch num {
	case 0: // RFC 3339 text
		if next != 3 {
			return nil, errors.New("tag 0 (date/time) must hold text")
		}
		v, err := w.value()
		if err != nil || v.Type() != fastjson.TypeString {
			return nil, errors.Join(err, errors.New("tag 0 (date/time) must hold text"))
		}
		b, _ := v.StringBytes()
		if _, err := time.Parse(time.RFC3339Nano, string(b)); err != nil {
			return nil, fmt.Errorf("tag 0: %w", err)
		}
		return v, nil
	case 1: // epoch seconds
		if next > 1 && (next != 7 || info < 25 || info > 27) {
			return nil, errors.New("tag 1 (epoch time) must hold a number")
		}
		major, arg, info := w.head()
		var f float64
		switch {
		case major == 0:
			f = float64(arg)
		case major == 1:
			f = -1 - float64(arg)
		default:
			f = cborFloat(arg, info)
		}
		var t time.Time // NaN and the infinities: the zero time, as fxamacker/cbor has it
		if !math.IsNaN(f) && !math.IsInf(f, 0) {
			if f < -1<<40 || f > 1<<40 { // far beyond the years RFC 3339 can write
				return nil, errors.New("tag 1 (epoch time) out of range")
			}
			sec, frac := math.Modf(f)
			t = time.Unix(int64(sec), int64(frac*1e9)).UTC()
		}
		if t.Year() < 0 || t.Year() > 9999 {
			return nil, errors.New("tag 1 (epoch time): year outside RFC 3339's 0 to 9999")
		}
		w.scratch = t.AppendFormat(w.scratch[:0], time.RFC3339Nano)
		return w.a.NewStringBytes(w.scratch), nil // no character to escape
	case 2, 3: // bignums
		major, arg, _ := w.head()
		if major != 2 {
			return nil, fmt.Errorf("tag %d (bignum) must hold a byte string", num)
		}
		n := new(big.Int).SetBytes(w.bytes(arg))
		if num == 3 {
			n.Neg(n.Add(n, big.NewInt(1)))
		}
		w.scratch = n.Append(w.scratch[:0], 10)
		return w.number(w.scratch), nil
	}
	return w.value() // any other tag stands for its content
}

// cborFloat is the value of a float head (info 25, 26 or 27: half,
// single or double precision).
func cborFloat(arg uint64, info byte) float64 {
	switch info {
	case 25:
		return float64(float16(uint16(arg)))
	case 26:
		return float64(math.Float32frombits(uint32(arg)))
	}
	return math.Float64frombits(arg)
}

// float16 converts an IEEE 754 half-precision number.
func float16(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch exp {
	case 0:
		if mant == 0 {
			return math.Float32frombits(sign)
		}
		f := float32(mant) / (1 << 24) // subnormal: mant × 2^-24
		if sign != 0 {
			f = -f
		}
		return f
	case 0x1f:
		return math.Float32frombits(sign | 0xff<<23 | mant<<13)
	}
	return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
}
