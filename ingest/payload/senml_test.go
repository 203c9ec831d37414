package payload

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/telemetry"
)

const sec = int64(time.Second)

var nowNs = now.UnixNano()

func TestSenMLArray(t *testing.T) {
	m, err := decodeString(t, exampleSenML)
	if err != nil {
		t.Fatal(err)
	}
	const bt0, bt1 = 1763820000 * sec, 1763820100 * sec
	dev := func(d string, ts int64, f telemetry.Field) telemetry.Reading {
		return withDevice(reading("telemetry", ts, f), d)
	}
	want := Message{
		Readings: []telemetry.Reading{
			dev("child-1", bt0, fldu("temp", fl(21.5), "Cel")),
			dev("child-1", bt0+10*sec, fldu("temp", fl(22), "Cel")),
			dev("child-1", bt0, fldu("hum", fl(40), "%RH")),
			dev("child-2", bt0, fldu("temp", fl(20), "Cel")),
			dev("child-2", bt0, fldu("temp", fl(3), "Cel")),
			{}, // base-only
			dev("child-2", bt1, fldu("temp", fl(300), "K")),
			dev("", bt1, fldu("plain", telemetry.String("text"), "K")),
			dev("a/b", bt1, fldu("c", telemetry.Bool(true), "K")),
			dev("a/b", bt1, fldu("blob", telemetry.String("aGVsbG8"), "K")),
			dev("a/b", bt1, fldu("energy", fl(105.5), "J")),
			dev("a/b", bt1, fldu("energy", fl(101), "K")),
		},
		Skipped: []int{5},
	}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("got\n%s\nwant\n%s", dump(m), dump(want))
	}
}

func TestSenMLEnvelope(t *testing.T) {
	m, err := decodeString(t, exampleEnvelope)
	if err != nil {
		t.Fatal(err)
	}
	want := Message{Seq: 19, HasSeq: true, Readings: []telemetry.Reading{
		withDevice(reading("env", 1763820000*sec+250_000_000, fld("temperature", fl(21))), "gw-7"),
	}}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("got\n%s\nwant\n%s", dump(m), dump(want))
	}
	// Without "measurement" the default applies.
	m, err = decodeString(t, `{"seq":20,"senml":[{"n":"x","v":1,"t":1763820000}]}`)
	if err != nil || m.Readings[0].Measurement != "telemetry" {
		t.Fatalf("got %s, %v", dump(m), err)
	}
}

var senmlTimeCases = []struct {
	name   string
	record string
	want   int64
	bad    bool
}{
	{name: "no time is now", record: `{"n":"x","v":1}`, want: nowNs},
	{name: "zero is now", record: `{"n":"x","v":1,"t":0,"bt":0}`, want: nowNs},
	{name: "relative past", record: `{"n":"x","v":1,"t":-5}`, want: nowNs - 5*sec},
	{name: "relative fraction", record: `{"n":"x","v":1,"t":-0.25}`, want: nowNs - 250_000_000},
	{name: "relative base and offset", record: `{"bt":-60,"n":"x","v":1,"t":30}`, want: nowNs - 30*sec},
	{name: "just below 2^28 is relative", record: `{"n":"x","v":1,"t":268435455}`, want: nowNs + 268435455*sec},
	{name: "2^28 is absolute", record: `{"n":"x","v":1,"t":268435456}`, want: 268435456 * sec},
	{name: "absolute", record: `{"n":"x","v":1,"t":1763820000}`, want: 1763820000 * sec},
	{name: "absolute exact nanos", record: `{"n":"x","v":1,"bt":1763820000.123456789}`, want: 1763820000*sec + 123456789},
	{name: "absolute base plus offset", record: `{"bt":1.7638200e9,"n":"x","v":1,"t":0.5}`, want: 1763820000*sec + 500_000_000},
	{name: "overflow", record: `{"n":"x","v":1,"t":1e10}`, bad: true},
	{name: "sum overflow", record: `{"bt":9e9,"n":"x","v":1,"t":9e9}`, bad: true},
	{name: "relative before 1970", record: `{"n":"x","v":1,"t":-2e9}`, bad: true},
	{name: "t not number", record: `{"n":"x","v":1,"t":"now"}`, bad: true},
	{name: "bt not number", record: `{"n":"x","v":1,"bt":null}`, bad: true},
}

func TestSenMLTime(t *testing.T) {
	tests := senmlTimeCases
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := decodeString(t, `[`+tt.record+`]`)
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

var senmlRejectionCases = []struct {
	name   string
	record string
	code   string
	msg    string
}{
	{name: "no value", record: `{"n":"x"}`, code: CodeInvalidReading, msg: "no value"},
	{name: "time but no value", record: `{"n":"x","t":1}`, code: CodeInvalidReading},
	{name: "unit but no value or name", record: `{"u":"Cel"}`, code: CodeInvalidReading},
	{name: "empty record", record: `{}`, code: CodeInvalidReading},
	{name: "two values", record: `{"n":"x","v":1,"vs":"a"}`, code: CodeInvalidReading, msg: "more than one"},
	{name: "value and sum", record: `{"n":"x","v":1,"s":2}`, code: CodeInvalidReading},
	{name: "v string", record: `{"n":"x","v":"1"}`, code: CodeInvalidValue},
	{name: "v null", record: `{"n":"x","v":null}`, code: CodeInvalidValue},
	{name: "v overflow", record: `{"n":"x","v":1e999}`, code: CodeInvalidValue},
	{name: "v plus bv overflow", record: `{"bv":1.7e308,"n":"x","v":1.7e308}`, code: CodeInvalidValue},
	{name: "vs number", record: `{"n":"x","vs":1}`, code: CodeInvalidValue},
	{name: "vb string", record: `{"n":"x","vb":"true"}`, code: CodeInvalidValue},
	{name: "vd number", record: `{"n":"x","vd":1}`, code: CodeInvalidValue},
	{name: "s bool", record: `{"n":"x","s":true}`, code: CodeInvalidValue},
	{name: "no name", record: `{"v":1}`, code: CodeInvalidReading, msg: "no name"},
	{name: "empty name", record: `{"bn":"","n":"","v":1}`, code: CodeInvalidReading},
	{name: "name ends in slash", record: `{"bn":"dev/","v":1}`, code: CodeInvalidReading, msg: "after its last '/'"},
	{name: "n not string", record: `{"n":1,"v":1}`, code: CodeInvalidReading},
	{name: "u not string", record: `{"n":"x","v":1,"u":1}`, code: CodeInvalidValue},
	{name: "not an object", record: `"x"`, code: CodeInvalidReading},
	{name: "bad bn", record: `{"bn":1,"n":"x","v":1}`, code: CodeInvalidReading, msg: "bn"},
	{name: "bad bu", record: `{"bu":1,"n":"x","v":1}`, code: CodeInvalidValue, msg: "bu"},
	{name: "bad bv", record: `{"bv":"1","n":"x","v":1}`, code: CodeInvalidValue, msg: "bv"},
	{name: "bad bs", record: `{"bs":"1","n":"x","s":1}`, code: CodeInvalidValue, msg: "bs"},
	{name: "bad base only", record: `{"bt":"x"}`, code: CodeInvalidTimestamp, msg: "bt"},
}

func TestSenMLRejections(t *testing.T) {
	tests := senmlRejectionCases
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A good record follows to check that the frame still decodes.
			m, err := decodeString(t, `[`+tt.record+`,{"bn":"","n":"ok","v":1,"bt":1763820000,"bu":"","bv":0,"bs":0}]`)
			if err != nil {
				t.Fatal(err)
			}
			if len(m.Invalid) != 1 || m.Invalid[0].Index != 0 || m.Invalid[0].Code != tt.code || !strings.Contains(m.Invalid[0].Message, tt.msg) {
				t.Fatalf("got %s, want %s mentioning %q", dump(m), tt.code, tt.msg)
			}
			codes(t, m)
			want := reading("telemetry", 1763820000*sec, fld("ok", fl(1)))
			if !reflect.DeepEqual(m.Readings[1], want) {
				t.Fatalf("reading 1 = %+v, want %+v", m.Readings[1], want)
			}
		})
	}
}

// TestSenMLBadBasePoisons checks that a malformed base field rejects the
// records relying on it until it is redefined, instead of resolving them
// against the previous base (which could name the wrong device).
func TestSenMLBadBasePoisons(t *testing.T) {
	m, err := decodeString(t, exampleSenMLPoison)
	if err != nil {
		t.Fatal(err)
	}
	wantCodes := map[int]string{1: CodeInvalidReading, 2: CodeInvalidReading, 3: CodeInvalidValue, 4: CodeInvalidValue, 6: CodeInvalidValue, 8: CodeInvalidValue}
	if got := codes(t, m); !reflect.DeepEqual(got, wantCodes) {
		t.Fatalf("codes = %v, want %v\n%s", got, wantCodes, dump(m))
	}
	want := map[int]telemetry.Reading{
		0:  withDevice(reading("telemetry", now.UnixNano(), fld("x", fl(1))), "dev-a"),
		5:  withDevice(reading("telemetry", now.UnixNano(), fldu("z", fl(5), "W")), "dev-b"),
		7:  withDevice(reading("telemetry", now.UnixNano(), fld("z", telemetry.String("not affected by bv"))), "dev-b"),
		10: withDevice(reading("telemetry", now.UnixNano(), fldu("z", fl(16), "W")), "dev-b"),
	}
	for i, w := range want {
		if !reflect.DeepEqual(m.Readings[i], w) {
			t.Errorf("reading %d = %+v, want %+v", i, m.Readings[i], w)
		}
	}
	if !reflect.DeepEqual(m.Skipped, []int{9}) {
		t.Errorf("skipped = %v, want [9]", m.Skipped)
	}
}

func TestSenMLMustUnderstandOnlyUnknown(t *testing.T) {
	// Unknown labels without a trailing '_' are ignored.
	m, err := decodeString(t, exampleSenMLUnknown)
	if err != nil || len(m.Invalid) != 0 || len(m.Readings) != 1 {
		t.Fatalf("got %s, %v", dump(m), err)
	}
}
