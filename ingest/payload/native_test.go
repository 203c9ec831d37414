package payload

import (
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/telemetry"
)

var timestampCases = []struct {
	name string
	ts   string // JSON literal
	want int64
	bad  bool
}{
	{name: "absent", ts: ``, want: 0},
	{name: "zero", ts: `0`, want: 0},
	{name: "zero float", ts: `0.0`, want: 0},
	{name: "negative zero", ts: `-0`, want: 0},
	{name: "seconds", ts: `1763820000`, want: 1763820000_000000000},
	{name: "small seconds", ts: `1`, want: 1_000000000},
	{name: "largest seconds magnitude overflows", ts: `99999999999`, bad: true},
	{name: "milliseconds", ts: `1763820000123`, want: 1763820000_123000000},
	{name: "smallest milliseconds", ts: `100000000000`, want: 100000000000_000000},
	{name: "microseconds", ts: `1763820000123456`, want: 1763820000_123456000},
	{name: "nanoseconds", ts: `1763820000123456789`, want: 1763820000_123456789},
	{name: "max int64 ns", ts: `9223372036854775807`, want: math.MaxInt64},
	{name: "beyond int64 ns", ts: `9223372036854775808`, bad: true},
	{name: "huge", ts: `1e400`, bad: true},
	{name: "fractional seconds", ts: `1763820000.5`, want: 1763820000_500000000},
	{name: "fractional seconds exact to ns", ts: `1763820000.123456789`, want: 1763820000_123456789},
	{name: "sub-ns digits dropped", ts: `1763820000.1234567899`, want: 1763820000_123456789},
	{name: "fractional milliseconds", ts: `1763820000123.5`, want: 1763820000_123500000},
	{name: "exponent seconds", ts: `1.7638200005e9`, want: 1763820000_500000000},
	{name: "exponent milliseconds", ts: `1763820000123e0`, want: 1763820000_123000000},
	{name: "negative", ts: `-5`, bad: true},
	{name: "negative fraction", ts: `-0.5`, bad: true},
	{name: "rfc3339 utc", ts: `"2025-11-22T14:00:00Z"`, want: rfc3339Nanos("2025-11-22T14:00:00Z")},
	{name: "rfc3339 zone", ts: `"2025-11-22T14:00:00+02:00"`, want: rfc3339Nanos("2025-11-22T12:00:00Z")},
	{name: "rfc3339 nanos", ts: `"2025-11-22T14:00:00.123456789Z"`, want: rfc3339Nanos("2025-11-22T14:00:00Z") + 123456789},
	{name: "rfc3339 millis zone", ts: `"2025-11-22T14:00:00.5-05:30"`, want: rfc3339Nanos("2025-11-22T19:30:00.5Z")},
	{name: "invalid string", ts: `"yesterday"`, bad: true},
	{name: "empty string", ts: `""`, bad: true},
	{name: "date only", ts: `"2025-11-22"`, bad: true},
	{name: "before 1970", ts: `"1969-12-31T23:59:59Z"`, bad: true},
	{name: "after 2262", ts: `"2300-01-01T00:00:00Z"`, bad: true},
	{name: "null", ts: `null`, bad: true},
	{name: "bool", ts: `true`, bad: true},
	{name: "object", ts: `{}`, bad: true},
	{name: "nan", ts: `NaN`, bad: true},
	{name: "leading zero", ts: `017`, bad: true},
}

// rfc3339Nanos returns the Unix nanoseconds of an RFC 3339 time.
func rfc3339Nanos(s string) int64 {
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return tm.UnixNano()
}

func TestNativeTimestamps(t *testing.T) {
	tests := timestampCases
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := `{"metrics":{"a":1}}`
			if tt.ts != "" {
				in = `{"ts":` + tt.ts + `,"metrics":{"a":1}}`
			}
			m, err := decodeString(t, in)
			if err != nil {
				t.Fatal(err)
			}
			if tt.bad {
				if c := codes(t, m); c[0] != CodeInvalidTimestamp {
					t.Fatalf("got %s, want %s", dump(m), CodeInvalidTimestamp)
				}
				return
			}
			if len(m.Invalid) != 0 {
				t.Fatalf("rejected: %+v", m.Invalid)
			}
			if got := m.Readings[0].Time; got != tt.want {
				t.Fatalf("time = %d (%v), want %d (%v)", got, time.Unix(0, got).UTC(), tt.want, time.Unix(0, tt.want).UTC())
			}
		})
	}
}

var valueCases = []struct {
	name   string
	metric string // JSON value of metric "m"
	want   telemetry.Field
	code   string // rejection code, "" when accepted
	msg    string // substring of the rejection message
}{
	{name: "integral number stays float", metric: `21`, want: fld("m", fl(21))},
	{name: "fraction", metric: `21.5`, want: fld("m", fl(21.5))},
	{name: "negative exponent", metric: `-2.5E-3`, want: fld("m", fl(-0.0025))},
	{name: "big integer is float", metric: `12345678901234567890`, want: fld("m", fl(12345678901234567890))},
	{name: "underflow is zero", metric: `1e-400`, want: fld("m", fl(0))},
	{name: "true", metric: `true`, want: fld("m", telemetry.Bool(true))},
	{name: "false", metric: `false`, want: fld("m", telemetry.Bool(false))},
	{name: "string", metric: `"ok"`, want: fld("m", telemetry.String("ok"))},
	{name: "empty string", metric: `""`, want: fld("m", telemetry.String(""))},
	{name: "null", metric: `null`, code: CodeInvalidValue, msg: `"m"`},
	{name: "array", metric: `[1,2]`, code: CodeInvalidValue, msg: `"m"`},
	{name: "overflow", metric: `1e400`, code: CodeInvalidValue, msg: "range"},
	{name: "negative overflow", metric: `-1e400`, code: CodeInvalidValue},
	{name: "nan literal", metric: `NaN`, code: CodeInvalidValue},
	{name: "inf literal", metric: `inf`, code: CodeInvalidValue},
	{name: "negative inf literal", metric: `-inf`, code: CodeInvalidValue},
	{name: "leading zero", metric: `01`, code: CodeInvalidValue, msg: "malformed"},
	{name: "plus sign", metric: `+1`, code: CodeInvalidValue},
	{name: "trailing dot", metric: `1.`, code: CodeInvalidValue},
	{name: "double dot", metric: `1.2.3`, code: CodeInvalidValue},
	{name: "no integer part", metric: `-.5`, code: CodeInvalidValue},
	{name: "empty exponent", metric: `1e`, code: CodeInvalidValue},
	{name: "double minus", metric: `--1`, code: CodeInvalidValue},

	{name: "typed int", metric: `{"value":1234,"type":"int"}`, want: fld("m", telemetry.Int(1234))},
	{name: "typed negative int", metric: `{"value":-5,"type":"int"}`, want: fld("m", telemetry.Int(-5))},
	{name: "typed int max", metric: `{"value":9223372036854775807,"type":"int"}`, want: fld("m", telemetry.Int(math.MaxInt64))},
	{name: "typed int min", metric: `{"value":-9223372036854775808,"type":"int"}`, want: fld("m", telemetry.Int(math.MinInt64))},
	{name: "typed int integral spelling", metric: `{"value":1.234e3,"type":"int"}`, want: fld("m", telemetry.Int(1234))},
	{name: "typed int fraction", metric: `{"value":12.5,"type":"int"}`, code: CodeInvalidValue, msg: "not an integer"},
	{name: "typed int huge", metric: `{"value":1e400,"type":"int"}`, code: CodeInvalidValue, msg: "int64"},
	{name: "typed int overflow", metric: `{"value":9223372036854775808,"type":"int"}`, code: CodeInvalidValue, msg: "int64"},
	{name: "typed int from string", metric: `{"value":"12","type":"int"}`, code: CodeInvalidValue},
	{name: "typed float", metric: `{"value":21,"type":"float","unit":"degF"}`, want: fldu("m", fl(21), "degF")},
	{name: "typed bool", metric: `{"value":true,"type":"bool"}`, want: fld("m", telemetry.Bool(true))},
	{name: "typed bool from number", metric: `{"value":1,"type":"bool"}`, code: CodeInvalidValue},
	{name: "typed string", metric: `{"value":"on","type":"string"}`, want: fld("m", telemetry.String("on"))},
	{name: "typed string from number", metric: `{"value":1,"type":"string"}`, code: CodeInvalidValue},
	{name: "unit only", metric: `{"value":21.5,"unit":"Cel"}`, want: fldu("m", fl(21.5), "Cel")},
	{name: "unit only integral", metric: `{"value":21,"unit":"Cel"}`, want: fldu("m", fl(21), "Cel")},
	{name: "untyped string", metric: `{"value":"x","future":1}`, want: fld("m", telemetry.String("x"))},
	{name: "unknown type", metric: `{"value":1,"type":"decimal"}`, code: CodeInvalidValue, msg: "unknown type"},
	{name: "type not string", metric: `{"value":1,"type":1}`, code: CodeInvalidValue},
	{name: "unit not string", metric: `{"value":1,"unit":1}`, code: CodeInvalidValue},
	{name: "no value", metric: `{"type":"int"}`, code: CodeInvalidValue, msg: "no \"value\""},
	{name: "null value", metric: `{"value":null}`, code: CodeInvalidValue},
	{name: "object value", metric: `{"value":{"value":1}}`, code: CodeInvalidValue},
	{name: "array value", metric: `{"value":[1],"type":"float"}`, code: CodeInvalidValue},
}

func TestNativeValues(t *testing.T) {
	tests := valueCases
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := decodeString(t, `{"metrics":{"m":`+tt.metric+`}}`)
			if err != nil {
				t.Fatal(err)
			}
			if tt.code != "" {
				if len(m.Invalid) != 1 || m.Invalid[0].Code != tt.code || !strings.Contains(m.Invalid[0].Message, tt.msg) {
					t.Fatalf("got %s, want %s mentioning %q", dump(m), tt.code, tt.msg)
				}
				codes(t, m)
				return
			}
			if len(m.Invalid) != 0 {
				t.Fatalf("rejected: %+v", m.Invalid)
			}
			got := m.Readings[0].Fields[0]
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("field = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestIntegralNumberIsFloatKind(t *testing.T) {
	m, err := decodeString(t, exampleIntegral)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range m.Readings {
		if k := r.Fields[0].Value.Kind(); k != telemetry.KindFloat {
			t.Errorf("reading %d: kind %v, want float", i, k)
		}
	}
}

// TestRejectedReadingsKeepAlignment checks that bad readings become
// placeholders with a rejection while the others decode in their slots.
func TestRejectedReadingsKeepAlignment(t *testing.T) {
	m, err := decodeString(t, exampleRejected)
	if err != nil {
		t.Fatal(err)
	}
	wantCodes := map[int]string{
		0: CodeInvalidValue, 2: CodeInvalidValue, 3: CodeInvalidValue, 4: CodeInvalidReading,
		5: CodeInvalidReading, 6: CodeInvalidReading, 8: CodeInvalidReading, 9: CodeInvalidReading,
		10: CodeInvalidReading, 11: CodeInvalidReading, 12: CodeInvalidReading, 13: CodeInvalidReading,
		14: CodeInvalidTimestamp,
	}
	if got := codes(t, m); !reflect.DeepEqual(got, wantCodes) {
		t.Fatalf("codes = %v, want %v\n%s", got, wantCodes, dump(m))
	}
	if len(m.Readings) != 16 {
		t.Fatalf("%d readings, want 16", len(m.Readings))
	}
	wantOK := map[int]telemetry.Reading{
		1:  reading("telemetry", 0, fld("b", fl(1))),
		7:  withDevice(withTags(reading("telemetry", 0, fld("e", fl(2))), tag("site", "s")), "dev-9"),
		15: reading("telemetry", 0, fld("last", telemetry.String("z"))),
	}
	for i, want := range wantOK {
		if !reflect.DeepEqual(m.Readings[i], want) {
			t.Errorf("reading %d = %+v, want %+v", i, m.Readings[i], want)
		}
	}
	for _, r := range m.Invalid {
		if r.Index == 0 && !strings.Contains(r.Message, `"a"`) {
			t.Errorf("message %q does not name the field", r.Message)
		}
		if r.Index == 3 && !strings.Contains(r.Message, `"t"`) {
			t.Errorf("message %q does not name the tag", r.Message)
		}
	}
}

func TestSingleReadingRejected(t *testing.T) {
	m, err := decodeString(t, `{"seq":4,"metrics":{"a":null}}`)
	if err != nil {
		t.Fatal(err)
	}
	if !m.HasSeq || m.Seq != 4 || len(m.Readings) != 1 || len(m.Invalid) != 1 || m.Invalid[0].Index != 0 {
		t.Fatalf("got %s", dump(m))
	}
	m, err = decodeString(t, `{"metrics":null}`)
	if err != nil || len(m.Invalid) != 1 || m.Invalid[0].Code != CodeInvalidReading {
		t.Fatalf("got %s, %v", dump(m), err)
	}
}

func TestNativeLimits(t *testing.T) {
	d := NewDecoder(Limits{MaxFields: 2, MaxTags: 1})
	m, err := d.Decode([]byte(`{"readings":[
		{"metrics":{"a":1,"b":2}, "tags":{"t":"1"}},
		{"metrics":{"a":1,"b":2,"c":3}},
		{"metrics":{"a":1}, "tags":{"t":"1","u":"2"}}
	]}`), now)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]string{1: CodeInvalidReading, 2: CodeInvalidReading}
	if got := codes(t, m); !reflect.DeepEqual(got, want) {
		t.Fatalf("codes = %v, want %v", got, want)
	}
	if len(m.Readings[0].Fields) != 2 {
		t.Fatalf("reading 0: %+v", m.Readings[0])
	}
}

func TestManyMetricsDuplicateDetection(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"readings":[{"metrics":{`)
	for i := range 200 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"m` + string(rune('a'+i%26)) + string(rune('a'+i/26)) + `":1`)
	}
	b.WriteString(`}},{"metrics":{`)
	for i := range 200 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"m` + string(rune('a'+i%26)) + string(rune('a'+i/26)) + `":1`)
	}
	b.WriteString(`,"mca":2}}]}`)
	m, err := decodeString(t, b.String())
	if err != nil {
		t.Fatal(err)
	}
	if got := codes(t, m); !reflect.DeepEqual(got, map[int]string{1: CodeInvalidReading}) {
		t.Fatalf("codes = %v", got)
	}
	if n := len(m.Readings[0].Fields); n != 200 {
		t.Fatalf("reading 0 has %d fields", n)
	}
	// Fields keep payload order although duplicate detection sorts names.
	if m.Readings[0].Fields[0].Name != "maa" || m.Readings[0].Fields[1].Name != "mba" {
		t.Fatalf("order changed: %v %v", m.Readings[0].Fields[0].Name, m.Readings[0].Fields[1].Name)
	}
}

func TestLongLiteralsAreShortenedInMessages(t *testing.T) {
	long := strings.Repeat("9", 500)
	m, err := decodeString(t, `{"readings":[{"ts":"`+long+`","metrics":{"a":1}},{"metrics":{"a":{"value":`+long+`.5,"type":"int"}}}]}`)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Invalid) != 2 {
		t.Fatalf("got %s", dump(m))
	}
	for _, r := range m.Invalid {
		if len(r.Message) > 120 || !strings.Contains(r.Message, "…") {
			t.Errorf("message not shortened: %q", r.Message)
		}
	}
}
