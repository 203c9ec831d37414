package payload

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/telemetryd/telemetryd/telemetry"
)

// FuzzCBORMatchesJSON is the differential test of the CBOR decoder: a
// payload decodes to the same Message as the JSON it stands for. The JSON
// is written by an independent path — fxamacker/cbor's Unmarshal into a
// generic value under the same limits, then that value as JSON text (the
// transcoding the decoder did before it walked CBOR itself) — and decoded
// by the JSON decoder. Maps have no order once unmarshalled into Go maps,
// so fields and tags are compared sorted, rejections by index and code.
func FuzzCBORMatchesJSON(f *testing.F) {
	for _, s := range cborSeeds {
		b, err := hex.DecodeString(s)
		if err != nil {
			f.Fatal(s, err)
		}
		f.Add(b)
	}
	for _, v := range cborDiffSeeds {
		f.Add(mustCBOR(f, v))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !IsCBOR(data) {
			return
		}
		for _, l := range fuzzLimits {
			d := NewDecoder(l)
			got, gotErr := d.Decode(data, now)
			js, jsErr := cborAsJSON(d.cborMode(), data)
			if jsErr != nil {
				if gotErr == nil {
					t.Fatalf("the reference refuses % x (%v), the decoder took it:\n%s", data, jsErr, dump(got))
				}
				if errors.Is(jsErr, ErrTooManyReadings) != errors.Is(gotErr, ErrTooManyReadings) {
					t.Fatalf("% x: reference %v, decoder %v", data, jsErr, gotErr)
				}
				continue
			}
			want, wantErr := NewDecoder(l).Decode(js, now)
			if (gotErr == nil) != (wantErr == nil) || errors.Is(gotErr, ErrTooManyReadings) != errors.Is(wantErr, ErrTooManyReadings) {
				t.Fatalf("% x as JSON %s: decoder %v, JSON %v", data, js, gotErr, wantErr)
			}
			if !sameMessage(got, want) {
				t.Fatalf("% x as JSON %s:\nCBOR %s\nJSON %s", data, js, dump(got), dump(want))
			}
		}
	})
}

// cborDiffSeeds are payloads of every kind, for the differential test.
var cborDiffSeeds = []any{
	map[string]any{"seq": 4, "measurement": "env", "ts": 1763820000123, "device": "child-1",
		"tags":    map[string]any{"site": "a", "zone": "b"},
		"metrics": map[string]any{"t": 21.5, "n": -21, "ok": true, "s": "idle", "c": map[string]any{"value": 7, "type": "int", "unit": "count"}, "h": float32(0.25)}},
	map[string]any{"seq": 5, "readings": []any{
		map[string]any{"ts": "2025-11-22T14:00:00.5Z", "metrics": map[string]any{"a": 1.0, "b": []byte{1, 2, 3}}},
		map[string]any{"metrics": map[string]any{"a": cborNaN(), "u": nil}},
		map[string]any{"ts": cbor.Tag{Number: 1, Content: 1763820000}, "metrics": map[string]any{"big": new(big.Int).Lsh(big.NewInt(1), 70)}},
	}},
	[]any{
		map[int]any{-2: "dev-1/", -3: 1763820000.25, -4: "Cel", 0: "temp", 2: 21.5},
		map[int]any{0: "on", 4: true, 6: 1.0},
		map[int]any{0: "state", 3: "idle", 6: -1},
		map[int]any{-5: 10.0},
		map[int]any{0: "sum", 5: 2, 8: "eA"},
	},
	map[string]any{"seq": 6, "measurement": "power", "senml": []any{map[int]any{0: "v", 2: uint64(math.MaxUint64)}}},
}

// sameMessage compares two Messages up to the order of fields and tags
// and the wording of rejections.
func sameMessage(a, b Message) bool {
	norm := func(m Message) Message {
		m.Readings = slices.Clone(m.Readings)
		for i := range m.Readings {
			r := &m.Readings[i]
			r.Fields = slices.Clone(r.Fields)
			r.Tags = slices.Clone(r.Tags)
			slices.SortFunc(r.Fields, func(x, y telemetry.Field) int { return cmpString(x.Name, y.Name) })
			slices.SortFunc(r.Tags, func(x, y telemetry.Tag) int { return cmpString(x.Key, y.Key) })
			if len(r.Fields) == 0 {
				r.Fields = nil
			}
			if len(r.Tags) == 0 {
				r.Tags = nil
			}
		}
		inv := make([]telemetry.Rejection, len(m.Invalid))
		for i, r := range m.Invalid {
			inv[i] = telemetry.Rejection{Index: r.Index, Code: r.Code}
		}
		m.Invalid = inv
		if len(m.Skipped) == 0 {
			m.Skipped = nil
		}
		return m
	}
	return reflect.DeepEqual(norm(a), norm(b))
}

func cmpString(x, y string) int {
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

// cborAsJSON is the reference: the JSON text of a CBOR payload, through
// fxamacker/cbor's generic decoding with the decoder's limits.
func cborAsJSON(mode cbor.DecMode, data []byte) ([]byte, error) {
	refMode, err := cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		MaxNestedLevels:  cborMaxNesting,
		MaxArrayElements: mode.DecOptions().MaxArrayElements,
		MaxMapPairs:      mode.DecOptions().MaxMapPairs,
		IndefLength:      cbor.IndefLengthForbidden,
		IntDec:           cbor.IntDecConvertNone,
		TimeTagToAny:     cbor.TimeTagToRFC3339Nano,
		UTF8:             cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		return nil, err
	}
	var v any
	if err := refMode.Unmarshal(data, &v); err != nil {
		var arr *cbor.MaxArrayElementsError
		if errors.As(err, &arr) {
			return nil, fmt.Errorf("%w: %v", ErrTooManyReadings, err)
		}
		return nil, err
	}
	return appendCBORJSON(nil, v)
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
			key, err := cborKeyJSON(k)
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

// cborKeyJSON names a map key: text as is, an integer by its SenML label.
func cborKeyJSON(k any) (string, error) {
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
