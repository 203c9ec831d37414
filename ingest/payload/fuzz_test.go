package payload

import (
	"encoding/hex"
	"errors"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/telemetry"
)

// fuzzSeeds returns every example payload of the tests.
func fuzzSeeds() []string {
	seeds := []string{
		exampleSingle, exampleBatch, exampleRejected, exampleEscapes, exampleSenML,
		exampleEnvelope, exampleSenMLPoison, exampleDuplicateKeys, exampleTwoReadings,
		exampleIntegral, exampleSenMLUnknown,
		`{"seq":18446744073709551615,"metrics":{"a":1}}`,
		`{"seq":0,"metrics":{"a":1}}`,
		`{"seq":1,"readings":[]}`, `{"seq":1,"senml":[]}`, `[]`,
		`{"seq":4,"metrics":{"a":null}}`, `{"metrics":null}`,
		`{"seq":20,"senml":[{"n":"x","v":1,"t":1763820000}]}`,
		`{"readings":[{"metrics":{"a":1,"b":2}, "tags":{"t":"1"}},{"metrics":{"a":1,"b":2,"c":3}},{"metrics":{"a":1}, "tags":{"t":"1","u":"2"}}]}`,
		`[{"bn":"gw/","n":"aaaa","vs":"bbbbbbbbbbbbb"},{"n":"cccc","vd":"ZGRk"}]`,
		`{"seq":1,"ts":"2025-11-22T14:00:00.5Z","measurement":"environment","device":"child-1","metrics":{"temperature":21.4,"status":"running fine","mode":{"value":"auto","type":"string","unit":"u"}},"tags":{"site":"plant-3","room":"r1"}}`,
	}
	for _, tt := range frameErrorCases {
		seeds = append(seeds, tt.in)
	}
	for _, tt := range timestampCases {
		seeds = append(seeds, `{"ts":`+tt.ts+`,"metrics":{"a":1}}`)
	}
	for _, tt := range valueCases {
		seeds = append(seeds, `{"metrics":{"m":`+tt.metric+`}}`)
	}
	for _, tt := range senmlTimeCases {
		seeds = append(seeds, `[`+tt.record+`]`)
	}
	for _, tt := range senmlRejectionCases {
		seeds = append(seeds, `[`+tt.record+`,{"bn":"","n":"ok","v":1,"bt":1763820000,"bu":"","bv":0,"bs":0}]`)
	}
	return append(seeds, fuzzCrashers...)
}

// fuzzCrashers are inputs on which the fuzzer once found a failure. Like
// every seed they run, with the invariants below, on a plain go test.
var fuzzCrashers = []string{}

// checkMessage verifies the invariants every Decode result must hold.
func checkMessage(t *testing.T, m Message, err error, l Limits) {
	t.Helper()
	l = l.withDefaults()
	if err != nil {
		if !errors.Is(err, ErrInvalidPayload) && !errors.Is(err, ErrTooManyReadings) {
			t.Fatalf("error %v wraps neither sentinel", err)
		}
		if m.Readings != nil || m.Invalid != nil || m.Skipped != nil {
			t.Fatalf("frame error with readings: %s", dump(m))
		}
		return
	}
	if len(m.Readings) > l.MaxReadings {
		t.Fatalf("%d readings, limit %d", len(m.Readings), l.MaxReadings)
	}
	placeholder := make([]bool, len(m.Readings))
	for j, r := range m.Invalid {
		if r.Index < 0 || r.Index >= len(m.Readings) || (j > 0 && m.Invalid[j-1].Index >= r.Index) {
			t.Fatalf("bad rejection index %d in %+v", r.Index, m.Invalid)
		}
		switch r.Code {
		case CodeInvalidValue, CodeInvalidTimestamp, CodeInvalidReading:
		default:
			t.Fatalf("unknown code %q", r.Code)
		}
		placeholder[r.Index] = true
	}
	for j, i := range m.Skipped {
		if i < 0 || i >= len(m.Readings) || placeholder[i] || (j > 0 && m.Skipped[j-1] >= i) {
			t.Fatalf("bad skipped index %d in %v (invalid %+v)", i, m.Skipped, m.Invalid)
		}
		placeholder[i] = true
	}
	for i, r := range m.Readings {
		if placeholder[i] {
			if !reflect.DeepEqual(r, telemetry.Reading{}) {
				t.Fatalf("placeholder %d is not zero: %+v", i, r)
			}
			continue
		}
		if len(r.Fields) == 0 {
			t.Fatalf("reading %d has no fields", i)
		}
		if len(r.Fields) > l.MaxFields || len(r.Tags) > l.MaxTags {
			t.Fatalf("reading %d exceeds limits: %d fields, %d tags", i, len(r.Fields), len(r.Tags))
		}
		if r.Measurement == "" {
			t.Fatalf("reading %d has no measurement", i)
		}
		if r.Time < 0 {
			t.Fatalf("reading %d has negative time %d", i, r.Time)
		}
		for _, f := range r.Fields {
			switch f.Value.Kind() {
			case telemetry.KindFloat:
				if x := f.Value.AsFloat(); math.IsNaN(x) || math.IsInf(x, 0) {
					t.Fatalf("reading %d field %q is not finite: %v", i, f.Name, x)
				}
			case telemetry.KindInt, telemetry.KindBool, telemetry.KindString:
			default:
				t.Fatalf("reading %d field %q has invalid kind", i, f.Name)
			}
		}
	}
}

// fuzzLimits are the limits every fuzz input is decoded under: the
// defaults, and limits small enough for the fuzzer to cross.
var fuzzLimits = []Limits{{}, {MaxReadings: 4, MaxFields: 3, MaxTags: 2}}

func addFuzzSeeds(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add([]byte(s))
	}
}

func FuzzDecode(f *testing.F) {
	addFuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, l := range fuzzLimits {
			d := NewDecoder(l)
			in := append([]byte(nil), data...)
			m1, err1 := d.Decode(in, now)
			checkMessage(t, m1, err1, l)
			clear(in) // the caller's buffer is reused after Decode returns
			m2, err2 := d.Decode(data, now)
			checkMessage(t, m2, err2, l)
			if (err1 == nil) != (err2 == nil) || !reflect.DeepEqual(m1, m2) {
				t.Fatalf("decoding twice differs:\n%s%v\n%s%v", dump(m1), err1, dump(m2), err2)
			}
		}
	})
}

// FuzzFastPathAgrees checks the fast path against the general one: for
// every payload the fast path accepts, both must give the same Message.
func FuzzFastPathAgrees(f *testing.F) {
	addFuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, l := range fuzzLimits {
			d := NewDecoder(l)
			fast, ok := d.decodeFast(data)
			d.release(len(data))
			if !ok {
				continue
			}
			slow, err := d.decodeGeneral(data, now)
			d.release(len(data))
			if err != nil || !reflect.DeepEqual(fast, slow) {
				t.Fatalf("fast path accepted what the general path decodes differently:\nfast %s\ngeneral %s %v", dump(fast), dump(slow), err)
			}
		}
	})
}

// lineSeeds are line-protocol inputs for FuzzLineProtocol.
var lineSeeds = []string{
	"env,site=plant-3 t=21.5,n=3i,u=7u,ok=true,s=\"idle\" 1763820000123456789\n",
	`we\ ird\,m,ta\ g=v\=1\,x f\=x="a \"q\" \\ b" 1`,
	"m v=1 1763820000\nm v=2\n# comment\n\nm v=3 1763820000123\n",
	"m,device_id=child-7,a=b v=1\n",
	"m v=1\nm\nm v=1i,v=2i\nm v=18446744073709551615u\nm v=\"x\" notatime\nm v=2\n",
	"m a=1,b=2\nm,x=1,y=2 a=1\nm,x=1 a=1", "m v=-1i -1", "m v=1e308,w=-0 9223372036854775807",
}

// FuzzLineProtocol decodes line protocol at every precision; every result
// must hold the Message invariants, and lines must never merge.
func FuzzLineProtocol(f *testing.F) {
	for _, s := range lineSeeds {
		f.Add([]byte(s), uint8(0))
	}
	units := []time.Duration{time.Nanosecond, time.Microsecond, time.Millisecond, time.Second}
	f.Fuzz(func(t *testing.T, data []byte, u uint8) {
		for _, l := range fuzzLimits {
			m, err := NewDecoder(l).DecodeLineProtocol(data, units[int(u)%len(units)])
			checkMessage(t, m, err, l)
			if err == nil && len(m.Readings) > countLines(data) {
				t.Fatalf("%d readings from %d lines", len(m.Readings), countLines(data))
			}
		}
	})
}

// cborSeeds are CBOR payloads for FuzzCBOR (hex).
var cborSeeds = []string{
	"a26373657101676d657472696373a16b74656d7065726174757265f94d60",
	"81a4006474656d70016343656c02f94d6021666465762d312f",
	"bf616101ff", "a2616101616102", "a0a0", "8181818181818181818181818181818181818100",
	"a1f4f5", "d9d9f7a1676d657472696373a16161c11a5f5e1000",
	"a1686d657472696373a1616dc074323032352d31312d32325431343a30303a30305a",
	"a1687265616469" + "6e677382a1676d657472696373a16161f97e00a1676d657472696373a16162fb7ff0000000000000",
}

// FuzzCBOR decodes CBOR through Decode (detection included) twice; the
// results must agree and hold the Message invariants.
func FuzzCBOR(f *testing.F) {
	for _, s := range cborSeeds {
		b, err := hex.DecodeString(s)
		if err != nil {
			f.Fatal(s, err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !IsCBOR(data) {
			return
		}
		for _, l := range fuzzLimits {
			d := NewDecoder(l)
			m1, err1 := d.Decode(data, now)
			checkMessage(t, m1, err1, l)
			m2, err2 := d.Decode(data, now)
			if (err1 == nil) != (err2 == nil) || !reflect.DeepEqual(m1, m2) {
				t.Fatalf("decoding twice differs:\n%s%v\n%s%v", dump(m1), err1, dump(m2), err2)
			}
		}
	})
}
