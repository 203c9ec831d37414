package payload

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/telemetry"
)

// now is the receive time used by every test.
var now = time.Date(2025, 11, 22, 14, 0, 0, 0, time.UTC)

// Helpers building expected values.

func fld(name string, v telemetry.Value) telemetry.Field {
	return telemetry.Field{Name: name, Value: v}
}

func fldu(name string, v telemetry.Value, unit string) telemetry.Field {
	return telemetry.Field{Name: name, Value: v, Unit: unit}
}

func tag(k, v string) telemetry.Tag { return telemetry.Tag{Key: k, Value: v} }

func reading(meas string, ts int64, fields ...telemetry.Field) telemetry.Reading {
	return telemetry.Reading{Measurement: meas, Time: ts, Fields: fields}
}

func withDevice(r telemetry.Reading, dev string) telemetry.Reading {
	r.Device = telemetry.DeviceID(dev)
	return r
}

func withTags(r telemetry.Reading, tags ...telemetry.Tag) telemetry.Reading {
	r.Tags = tags
	return r
}

func fl(f float64) telemetry.Value { return telemetry.Float(f) }

// decodeString decodes s with a fresh default Decoder.
func decodeString(t *testing.T, s string) (Message, error) {
	t.Helper()
	return NewDecoder(Limits{}).Decode([]byte(s), now)
}

func dump(m Message) string {
	var b strings.Builder
	fmt.Fprintf(&b, "seq=%d hasSeq=%v skipped=%v\n", m.Seq, m.HasSeq, m.Skipped)
	for i, r := range m.Readings {
		fmt.Fprintf(&b, "  [%d] %+v\n", i, r)
	}
	for _, r := range m.Invalid {
		fmt.Fprintf(&b, "  invalid %+v\n", r)
	}
	return b.String()
}

// codes returns index→code of m.Invalid, checking it is sorted and that
// every rejected slot is a placeholder.
func codes(t *testing.T, m Message) map[int]string {
	t.Helper()
	out := map[int]string{}
	for j, r := range m.Invalid {
		if j > 0 && m.Invalid[j-1].Index >= r.Index {
			t.Errorf("Invalid not sorted: %+v", m.Invalid)
		}
		if r.Message == "" {
			t.Errorf("rejection %d has no message", r.Index)
		}
		if !reflect.DeepEqual(m.Readings[r.Index], telemetry.Reading{}) {
			t.Errorf("rejected reading %d is not a placeholder: %+v", r.Index, m.Readings[r.Index])
		}
		out[r.Index] = r.Code
	}
	return out
}

func TestSingleReading(t *testing.T) {
	m, err := decodeString(t, exampleSingle)
	if err != nil {
		t.Fatal(err)
	}
	want := Message{Seq: 17, HasSeq: true, Readings: []telemetry.Reading{
		withDevice(withTags(reading("environment", 1763820000123000000,
			fld("temperature", fl(21.4)),
			fld("humidity", fl(40.1)),
			fld("door_open", telemetry.Bool(false)),
			fld("status", telemetry.String("ok")),
		), tag("site", "plant-3")), "child-7"),
	}}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("got\n%s\nwant\n%s", dump(m), dump(want))
	}
}

func TestBatch(t *testing.T) {
	m, err := decodeString(t, exampleBatch)
	if err != nil {
		t.Fatal(err)
	}
	want := Message{Seq: 18, HasSeq: true, Readings: []telemetry.Reading{
		reading("telemetry", 1763820000000000000, fld("a", fl(1))),
		withDevice(withTags(reading("power", 0, fldu("w", telemetry.Int(1234), "W")),
			tag("phase", "L1"), tag("site", "s")), "meter-2"),
		reading("telemetry", 0, fld("b", telemetry.Bool(true))),
	}}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("got\n%s\nwant\n%s", dump(m), dump(want))
	}
}

func TestEmptyBatchIsValid(t *testing.T) {
	for _, in := range []string{`{"seq":1,"readings":[]}`, `{"seq":1,"senml":[]}`, `[]`} {
		m, err := decodeString(t, in)
		if err != nil || len(m.Readings) != 0 || len(m.Invalid) != 0 {
			t.Errorf("%s: got %s, %v", in, dump(m), err)
		}
	}
}

var frameErrorCases = []struct {
	name    string
	in      string
	limits  Limits
	wantErr error
	seq     uint64
	hasSeq  bool
	msg     string // substring of the error
}{
	{name: "empty", in: ``, wantErr: ErrInvalidPayload, msg: "malformed JSON"},
	{name: "not json", in: `hello`, wantErr: ErrInvalidPayload, msg: "malformed JSON"},
	{name: "truncated with seq", in: `{"seq":5,"metrics":{"a":`, wantErr: ErrInvalidPayload, seq: 5, hasSeq: true},
	{name: "seq after nested values", in: `{"x":{"y":[1,"}]\"",{}]},"seq" : 7 ,"readings":[}`, wantErr: ErrInvalidPayload, seq: 7, hasSeq: true},
	{name: "seq cut off", in: `{"seq":12`, wantErr: ErrInvalidPayload},
	{name: "seq after damage", in: `{"readings":"a,"seq":3}`, wantErr: ErrInvalidPayload},
	{name: "malformed seq in broken json", in: `{"seq":-3,`, wantErr: ErrInvalidPayload},
	{name: "trailing garbage", in: `{"seq":9,"metrics":{"a":1}} x`, wantErr: ErrInvalidPayload, seq: 9, hasSeq: true},
	{name: "number", in: `5`, wantErr: ErrInvalidPayload, msg: "JSON number"},
	{name: "string", in: `"x"`, wantErr: ErrInvalidPayload, msg: "JSON string"},
	{name: "null", in: `null`, wantErr: ErrInvalidPayload},
	{name: "bool", in: `true`, wantErr: ErrInvalidPayload},
	{name: "no readings key", in: `{"seq":3,"data":[]}`, wantErr: ErrInvalidPayload, seq: 3, hasSeq: true, msg: "none of"},
	{name: "ambiguous", in: `{"seq":4,"metrics":{"a":1},"readings":[]}`, wantErr: ErrInvalidPayload, seq: 4, hasSeq: true, msg: "more than one"},
	{name: "seq negative", in: `{"seq":-1,"metrics":{"a":1}}`, wantErr: ErrInvalidPayload, msg: "seq"},
	{name: "seq string", in: `{"seq":"4","metrics":{"a":1}}`, wantErr: ErrInvalidPayload, msg: "seq"},
	{name: "seq fraction", in: `{"seq":1.5,"metrics":{"a":1}}`, wantErr: ErrInvalidPayload, msg: "seq"},
	{name: "seq exponent", in: `{"seq":1e3,"metrics":{"a":1}}`, wantErr: ErrInvalidPayload, msg: "seq"},
	{name: "seq leading zero", in: `{"seq":01,"metrics":{"a":1}}`, wantErr: ErrInvalidPayload, msg: "seq"},
	{name: "seq null", in: `{"seq":null,"metrics":{"a":1}}`, wantErr: ErrInvalidPayload, msg: "seq"},
	{name: "seq overflow", in: `{"seq":18446744073709551616,"metrics":{"a":1}}`, wantErr: ErrInvalidPayload, msg: "seq"},
	{name: "readings not array", in: `{"seq":2,"readings":{"a":1}}`, wantErr: ErrInvalidPayload, seq: 2, hasSeq: true, msg: "readings must be an array"},
	{name: "senml not array", in: `{"seq":2,"senml":{}}`, wantErr: ErrInvalidPayload, seq: 2, hasSeq: true},
	{name: "senml measurement not string", in: `{"seq":2,"senml":[],"measurement":1}`, wantErr: ErrInvalidPayload, seq: 2, hasSeq: true},
	{name: "too many readings", in: `{"seq":6,"readings":[{"metrics":{"a":1}},{"metrics":{"a":1}},{"metrics":{"a":1}}]}`,
		limits: Limits{MaxReadings: 2}, wantErr: ErrTooManyReadings, seq: 6, hasSeq: true},
	{name: "too many senml records", in: `{"seq":8,"senml":[{"n":"a","v":1},{"n":"a","v":1},{"n":"a","v":1}]}`,
		limits: Limits{MaxReadings: 2}, wantErr: ErrTooManyReadings, seq: 8, hasSeq: true},
	{name: "too many senml array", in: `[{"n":"a","v":1},{"n":"a","v":1},{"n":"a","v":1}]`,
		limits: Limits{MaxReadings: 2}, wantErr: ErrTooManyReadings},
	{name: "senml must-understand", in: `{"seq":10,"senml":[{"n":"a","v":1},{"n":"b","v":2,"new_":1}]}`,
		wantErr: ErrInvalidPayload, seq: 10, hasSeq: true, msg: "must-understand"},
	{name: "too deep", in: strings.Repeat("[", 400) + strings.Repeat("]", 400), wantErr: ErrInvalidPayload},
}

func TestFrameErrors(t *testing.T) {
	tests := frameErrorCases
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := NewDecoder(tt.limits).Decode([]byte(tt.in), now)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.msg != "" && !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("err = %q, want it to mention %q", err, tt.msg)
			}
			if m.Seq != tt.seq || m.HasSeq != tt.hasSeq {
				t.Errorf("seq = %d/%v, want %d/%v", m.Seq, m.HasSeq, tt.seq, tt.hasSeq)
			}
			if m.Readings != nil || m.Invalid != nil || m.Skipped != nil {
				t.Errorf("frame error returned readings: %s", dump(m))
			}
		})
	}
}

func TestSeqRange(t *testing.T) {
	m, err := decodeString(t, `{"seq":18446744073709551615,"metrics":{"a":1}}`)
	if err != nil || m.Seq != math.MaxUint64 || !m.HasSeq {
		t.Fatalf("got %d/%v, %v", m.Seq, m.HasSeq, err)
	}
	m, err = decodeString(t, `{"seq":0,"metrics":{"a":1}}`)
	if err != nil || m.Seq != 0 || !m.HasSeq {
		t.Fatalf("got %d/%v, %v", m.Seq, m.HasSeq, err)
	}
	m, err = decodeString(t, `{"metrics":{"a":1}}`)
	if err != nil || m.HasSeq {
		t.Fatalf("got %d/%v, %v", m.Seq, m.HasSeq, err)
	}
}

func TestDuplicateStructuralKeyFirstWins(t *testing.T) {
	m, err := decodeString(t, exampleDuplicateKeys)
	if err != nil {
		t.Fatal(err)
	}
	want := Message{Seq: 1, HasSeq: true, Readings: []telemetry.Reading{reading("a", 0, fld("x", fl(1)))}}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("got\n%s\nwant\n%s", dump(m), dump(want))
	}
}

func TestLimitsDefaults(t *testing.T) {
	d := NewDecoder(Limits{MaxFields: -1})
	if d.limits != (Limits{MaxReadings: 5000, MaxFields: 256, MaxTags: 32}) {
		t.Fatalf("limits = %+v", d.limits)
	}
	d = NewDecoder(Limits{MaxReadings: 1, MaxFields: 2, MaxTags: 3})
	if d.limits != (Limits{MaxReadings: 1, MaxFields: 2, MaxTags: 3}) {
		t.Fatalf("limits = %+v", d.limits)
	}
}

func TestStringsWithEscapesAndUnicode(t *testing.T) {
	m, err := decodeString(t, exampleEscapes)
	if err != nil {
		t.Fatal(err)
	}
	want := Message{Readings: []telemetry.Reading{
		withDevice(withTags(reading("mét\"o", 0,
			fld("température", telemetry.String("line1\nline2 ☃ 😀 ☃")),
			fld(`a\b`, fl(1)),
			fld("/s", telemetry.String("\x00")),
		), tag(`k"ey`, "v/al"), tag("日本", "語")), "dev\t1"),
	}}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("got\n%s\nwant\n%s", dump(m), dump(want))
	}
}

// TestReuseSafety checks that a Message owns its memory: it survives both
// the caller overwriting its input buffer and the next Decode.
func TestReuseSafety(t *testing.T) {
	a := `{"seq":1,"ts":"2025-11-22T14:00:00.5Z","measurement":"environment","device":"child-1",
		"metrics":{"temperature":21.4,"status":"running fine","mode":{"value":"auto","type":"string","unit":"u"}},
		"tags":{"site":"plant-3","room":"r1"}}`
	b := `{"seq":2,"ts":"2025-11-22T15:00:00Z","measurement":"XXXXXXXXXXXX","device":"YYYYYYY",
		"metrics":{"zzzzzzzzzzz":1,"status":"QQQQQQQQQQQQ","mode":{"value":"WWWW","type":"string","unit":"v"}},
		"tags":{"eeee":"ffffffff","gggg":"hh"}}`
	c := `[{"bn":"gw/","n":"aaaa","vs":"bbbbbbbbbbbbb"},{"n":"cccc","vd":"ZGRk"}]`

	want, err := decodeString(t, a)
	if err != nil {
		t.Fatal(err)
	}
	wantC, err := decodeString(t, c)
	if err != nil {
		t.Fatal(err)
	}

	d := NewDecoder(Limits{})
	bufA := []byte(a)
	gotA, err := d.Decode(bufA, now)
	if err != nil {
		t.Fatal(err)
	}
	for i := range bufA { // gws reuses its read buffer
		bufA[i] = 'X'
	}
	bufC := []byte(c)
	gotC, err := d.Decode(bufC, now)
	if err != nil {
		t.Fatal(err)
	}
	for i := range bufC {
		bufC[i] = '#'
	}
	for range 3 {
		if _, err := d.Decode([]byte(b), now); err != nil {
			t.Fatal(err)
		}
	}
	if !reflect.DeepEqual(gotA, want) {
		t.Errorf("A changed after decoding B:\n%s\nwant\n%s", dump(gotA), dump(want))
	}
	if !reflect.DeepEqual(gotC, wantC) {
		t.Errorf("C changed after decoding B:\n%s\nwant\n%s", dump(gotC), dump(wantC))
	}
}

// TestReadingSlicesAreCapped checks that appending to one reading's fields
// or tags cannot overwrite its neighbour's, although they share backing arrays.
func TestReadingSlicesAreCapped(t *testing.T) {
	m, err := decodeString(t, exampleTwoReadings)
	if err != nil {
		t.Fatal(err)
	}
	_ = append(m.Readings[0].Fields, fld("x", fl(9)))
	_ = append(m.Readings[0].Tags, tag("x", "9"))
	if m.Readings[1].Fields[0].Name != "b" || m.Readings[1].Tags[0].Key != "u" {
		t.Fatalf("neighbour overwritten: %s", dump(m))
	}
}

func TestInternIsBounded(t *testing.T) {
	d := NewDecoder(Limits{})
	for i := range 3 * maxInterned {
		in := fmt.Sprintf(`{"metrics":{"f%d":1}}`, i)
		m, err := d.Decode([]byte(in), now)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := m.Readings[0].Fields[0].Name, fmt.Sprintf("f%d", i); got != want {
			t.Fatalf("name = %q, want %q", got, want)
		}
	}
	if len(d.interned) > maxInterned {
		t.Fatalf("intern cache grew to %d", len(d.interned))
	}
	long := strings.Repeat("n", maxInternLen+1)
	d.intern([]byte(long))
	if _, ok := d.interned[long]; ok {
		t.Fatal("long name interned")
	}
}

func TestLargePayloadReleasesScratch(t *testing.T) {
	d := NewDecoder(Limits{MaxReadings: 100000})
	var b strings.Builder
	b.WriteString(`{"readings":[`)
	for i := 0; b.Len() < maxRetainSize+1; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"metrics":{"aaaaaaaaaaaaaaaa":1,"bbbbbbbbbbbbbbbbbbbbbbb":2}}`)
	}
	b.WriteString(`]}`)
	m, err := d.Decode([]byte(b.String()), now)
	if err != nil || len(m.Invalid) != 0 {
		t.Fatalf("err %v, invalid %v", err, m.Invalid)
	}
	if d.fields != nil || d.names != nil {
		t.Fatal("scratch retained after a large payload")
	}
	if _, err := d.Decode([]byte(`{"metrics":{"a":1}}`), now); err != nil {
		t.Fatal(err)
	}
}
