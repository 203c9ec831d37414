package payload

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"math/big"
	"slices"
	"strconv"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/telemetryd/telemetryd/telemetry"
)

// CBOR payloads (RFC 8949) carry the same schemas as JSON: the native
// reading, batch and SenML envelope with the same text keys, or a SenML
// pack whose records use RFC 8428 §6's integer labels. A CBOR payload is
// decoded with fxamacker/cbor under fixed limits, then transcoded to the
// JSON it stands for and decoded by the JSON decoder, so that both
// encodings have one set of rules: a CBOR integer is a number like any
// other (a float metric unless typed), byte strings are base64url text
// (SenML "vd"), tags 0 and 1 are RFC 3339 times, other tags stand for
// their content. Map keys are taken in sorted order. NaN and infinities have no JSON form; they become null,
// which rejects their reading.

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
	var v any
	if err := d.cborMode().Unmarshal(data, &v); err != nil {
		var arr *cbor.MaxArrayElementsError
		if errors.As(err, &arr) {
			return Message{}, fmt.Errorf("%w: CBOR: %v", ErrTooManyReadings, err)
		}
		return Message{}, fmt.Errorf("%w: malformed CBOR: %v", ErrInvalidPayload, err)
	}
	js, err := appendCBORJSON(d.cborJSON[:0], v)
	if cap(js) <= maxRetainSize {
		d.cborJSON = js
	}
	if err != nil {
		return Message{}, fmt.Errorf("%w: CBOR: %v", ErrInvalidPayload, err)
	}
	return d.decodeGeneral(js, now)
}

func (d *Decoder) cborMode() cbor.DecMode {
	if d.cbor == nil {
		d.cbor = newCBORMode(d.limits)
	}
	return d.cbor
}

// appendCBORJSON appends the JSON text of a decoded CBOR item.
func appendCBORJSON(dst []byte, v any) ([]byte, error) {
	var err error
	switch x := v.(type) {
	case nil:
		dst = append(dst, "null"...)
	case bool:
		dst = strconv.AppendBool(dst, x)
	case uint64:
		dst = strconv.AppendUint(dst, x, 10)
	case int64:
		dst = strconv.AppendInt(dst, x, 10)
	case *big.Int:
		dst = x.Append(dst, 10)
	case big.Int:
		dst = x.Append(dst, 10)
	case float64:
		dst = appendJSONFloat(dst, x)
	case float32:
		dst = appendJSONFloat(dst, float64(x))
	case string:
		dst = telemetry.AppendJSONString(dst, x)
	case []byte:
		dst = telemetry.AppendJSONString(dst, base64.RawURLEncoding.EncodeToString(x))
	case time.Time:
		dst = telemetry.AppendJSONString(dst, x.Format(time.RFC3339Nano))
	case cbor.Tag:
		return appendCBORJSON(dst, x.Content)
	case cbor.RawTag:
		return dst, fmt.Errorf("tag %d is not supported", x.Number)
	case []any:
		dst = append(dst, '[')
		for i, el := range x {
			if i > 0 {
				dst = append(dst, ',')
			}
			if dst, err = appendCBORJSON(dst, el); err != nil {
				return dst, err
			}
		}
		dst = append(dst, ']')
	case map[any]any:
		// Keys in sorted order: Go maps have none, and the same payload
		// must decode to the same Message every time.
		keys := make([]string, 0, len(x))
		vals := make(map[string]any, len(x))
		for k, el := range x {
			key, err := cborKey(k)
			if err != nil {
				return dst, err
			}
			if _, dup := vals[key]; dup { // 2 and "v", say
				return dst, fmt.Errorf("map key %q repeated", key)
			}
			keys = append(keys, key)
			vals[key] = el
		}
		slices.Sort(keys)
		dst = append(dst, '{')
		for i, key := range keys {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = telemetry.AppendJSONString(dst, key)
			dst = append(dst, ':')
			if dst, err = appendCBORJSON(dst, vals[key]); err != nil {
				return dst, err
			}
		}
		dst = append(dst, '}')
	default:
		return dst, fmt.Errorf("a CBOR %T is not a value", v)
	}
	return dst, nil
}

// cborKey names a map key: text as is, an integer by its SenML label.
func cborKey(k any) (string, error) {
	switch x := k.(type) {
	case string:
		return x, nil
	case int64:
		if s, ok := senmlLabels[x]; ok {
			return s, nil
		}
		return strconv.FormatInt(x, 10), nil
	case uint64:
		if x <= math.MaxInt64 {
			if s, ok := senmlLabels[int64(x)]; ok {
				return s, nil
			}
		}
		return strconv.FormatUint(x, 10), nil
	}
	return "", fmt.Errorf("map key of type %T, want text or a SenML label", k)
}

func appendJSONFloat(dst []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, "null"...)
	}
	return strconv.AppendFloat(dst, f, 'g', -1, 64)
}
