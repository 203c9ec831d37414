package payload

import (
	"encoding/hex"
	"errors"
	"reflect"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/telemetryd/telemetryd/telemetry"
)

func mustCBOR(t testing.TB, v any) []byte {
	t.Helper()
	b, err := cbor.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeCBOR(t *testing.T) {
	cases := []struct {
		name    string
		in      any
		seq     uint64
		want    []telemetry.Reading
		invalid int
	}{
		{
			name: "native single with every type",
			in: map[string]any{"seq": 4, "measurement": "env", "ts": 1763820000123, "device": "child-1",
				"tags":    map[string]any{"site": "a"},
				"metrics": map[string]any{"t": 21.5, "n": 21, "ok": true, "s": "idle", "c": map[string]any{"value": 7, "type": "int", "unit": "count"}}},
			seq: 4,
			want: []telemetry.Reading{withTags(withDevice(reading("env", 1763820000123000000,
				fldu("c", telemetry.Int(7), "count"), fld("n", fl(21)), fld("ok", telemetry.Bool(true)), fld("s", telemetry.String("idle")), fld("t", fl(21.5))), "child-1"), tag("site", "a"))},
		},
		{
			name: "native batch, NaN rejects its reading",
			in:   map[string]any{"readings": []any{map[string]any{"metrics": map[string]any{"a": 1.0}}, map[string]any{"metrics": map[string]any{"a": cborNaN()}}}},
			want: []telemetry.Reading{reading("telemetry", 0, fld("a", fl(1))), {}}, invalid: 1,
		},
		{
			name: "SenML-CBOR integer labels",
			in: []any{
				map[int]any{-2: "dev-1/", -3: 1763820000.0, -4: "Cel", 0: "temp", 2: 21.5},
				map[int]any{0: "on", 4: true, 6: 1.0},
				map[int]any{0: "state", 3: "idle"},
			},
			want: []telemetry.Reading{
				withDevice(reading("telemetry", 1763820000e9, fldu("temp", fl(21.5), "Cel")), "dev-1"),
				withDevice(reading("telemetry", 1763820001e9, fldu("on", telemetry.Bool(true), "Cel")), "dev-1"),
				withDevice(reading("telemetry", 1763820000e9, fldu("state", telemetry.String("idle"), "Cel")), "dev-1"),
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			data := mustCBOR(t, c.in)
			if !IsCBOR(data) {
				t.Fatalf("% x not detected as CBOR", data)
			}
			m, err := NewDecoder(Limits{}).Decode(data, now)
			if err != nil {
				t.Fatal(err)
			}
			sortFields(m.Readings)
			if !reflect.DeepEqual(m.Readings, c.want) || len(m.Invalid) != c.invalid || m.Seq != c.seq {
				t.Errorf("got\n%s\nwant %+v", dump(m), c.want)
			}
		})
	}
}

// sortFields orders fields by name: the cases build their CBOR from Go
// maps, whose encoding has no particular key order.
func sortFields(rs []telemetry.Reading) {
	for _, r := range rs {
		for i := 1; i < len(r.Fields); i++ {
			for j := i; j > 0 && r.Fields[j].Name < r.Fields[j-1].Name; j-- {
				r.Fields[j], r.Fields[j-1] = r.Fields[j-1], r.Fields[j]
			}
		}
	}
}

func cborNaN() float64 { var z float64; return z / z }

func TestDecodeCBORRefuses(t *testing.T) {
	cases := []struct {
		name string
		hex  string
		want error
	}{
		{"indefinite map", "bf616101ff", ErrInvalidPayload},
		{"duplicate key", "a2616101616102", ErrInvalidPayload},
		{"truncated", "a2616101", ErrInvalidPayload},
		{"trailing bytes", "a0a0", ErrInvalidPayload},
		{"nested too deep", "8181818181818181818181818181818181818100", ErrInvalidPayload},
		{"too many readings", "98ff" + repeatHex("a0", 255), ErrTooManyReadings},
		{"non-text key", "a1f4f5", ErrInvalidPayload},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			data, err := hex.DecodeString(c.hex)
			if err != nil {
				t.Fatal(err)
			}
			_, err = NewDecoder(Limits{MaxReadings: 100}).Decode(data, now)
			if !errors.Is(err, c.want) {
				t.Fatalf("err %v, want %v", err, c.want)
			}
		})
	}
}

func repeatHex(s string, n int) string {
	b := make([]byte, 0, len(s)*n)
	for range n {
		b = append(b, s...)
	}
	return string(b)
}

// The README's examples (docs/ingest.md), byte for byte.
func TestCBORReadmeExamples(t *testing.T) {
	cases := []struct {
		hex  string
		want telemetry.Reading
	}{
		{"a26373657101676d657472696373a16b74656d7065726174757265f94d60", reading("telemetry", 0, fld("temperature", fl(21.5)))},
		{"81a4006474656d70016343656c02f94d6021666465762d312f", withDevice(reading("telemetry", now.UnixNano(), fldu("temp", fl(21.5), "Cel")), "dev-1")},
	}
	for _, c := range cases {
		data, _ := hex.DecodeString(c.hex)
		m, err := NewDecoder(Limits{}).Decode(data, now)
		if err != nil || len(m.Readings) != 1 || !reflect.DeepEqual(m.Readings[0], c.want) {
			t.Errorf("%s: %v\n%s", c.hex, err, dump(m))
		}
	}
}
