package payload

import (
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/telemetry"
)

func TestDecodeLineProtocol(t *testing.T) {
	cases := []struct {
		name    string
		in      string
		unit    time.Duration
		want    []telemetry.Reading
		invalid []string // codes of Message.Invalid, "i:code"
	}{
		{
			name: "every field type, tags, ns time",
			in:   "env,site=plant-3 t=21.5,n=3i,u=7u,ok=true,s=\"idle\" 1763820000123456789\n",
			want: []telemetry.Reading{withTags(reading("env", 1763820000123456789,
				fld("t", fl(21.5)), fld("n", telemetry.Int(3)), fld("u", telemetry.Int(7)),
				fld("ok", telemetry.Bool(true)), fld("s", telemetry.String("idle"))), tag("site", "plant-3"))},
		},
		{
			name: "escapes",
			in:   `we\ ird\,m,ta\ g=v\=1\,x f\=x="a \"q\" \\ b" 1` + "\n",
			unit: time.Second,
			want: []telemetry.Reading{withTags(reading("we ird,m", 1e9,
				fld("f=x", telemetry.String(`a "q" \ b`))), tag("ta g", `v=1,x`))},
		},
		{
			name: "precisions and no time",
			in:   "m v=1 1763820000\nm v=2\n# comment\n\nm v=3 1763820000123\n",
			unit: time.Millisecond,
			want: []telemetry.Reading{
				reading("m", 1763820000*int64(time.Millisecond), fld("v", fl(1))),
				reading("m", 0, fld("v", fl(2))),
				reading("m", 1763820000123*int64(time.Millisecond), fld("v", fl(3))),
			},
		},
		{
			name: "device_id names a child",
			in:   "m,device_id=child-7,a=b v=1\n",
			want: []telemetry.Reading{withTags(withDevice(reading("m", 0, fld("v", fl(1))), "child-7"), tag("a", "b"))},
		},
		{
			name:    "bad lines refused alone",
			in:      "m v=1\nm\nm v=1i,v=2i\nm v=18446744073709551615u\nm v=\"x\" notatime\nm v=2\n",
			want:    []telemetry.Reading{reading("m", 0, fld("v", fl(1))), {}, {}, {}, {}, reading("m", 0, fld("v", fl(2)))},
			invalid: []string{"1:invalid_reading", "2:invalid_reading", "3:invalid_value", "4:invalid_timestamp"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			unit := c.unit
			if unit == 0 {
				unit = time.Nanosecond
			}
			m, err := NewDecoder(Limits{}).DecodeLineProtocol([]byte(c.in), unit)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(m.Readings, c.want) {
				t.Errorf("readings:\n%s\nwant %+v", dump(m), c.want)
			}
			var got []string
			for _, r := range m.Invalid {
				got = append(got, strings.Join([]string{strconv.Itoa(r.Index), r.Code}, ":"))
			}
			if !reflect.DeepEqual(got, c.invalid) {
				t.Errorf("invalid %v, want %v\n%s", got, c.invalid, dump(m))
			}
		})
	}
}

func TestDecodeDetectsLineProtocol(t *testing.T) {
	m, err := NewDecoder(Limits{}).Decode([]byte("env,site=a temp=21.5 1763820000000000000\n"), now)
	if err != nil || len(m.Readings) != 1 || m.Readings[0].Time != 1763820000000000000 {
		t.Fatalf("got %v\n%s", err, dump(m))
	}
	for _, notLP := range []string{"hello", "not json", `{"metrics":`, " [1,"} {
		if looksLikeLineProtocol([]byte(notLP)) {
			t.Errorf("%q detected as line protocol", notLP)
		}
	}
}

func TestLineProtocolLimits(t *testing.T) {
	_, err := NewDecoder(Limits{MaxReadings: 2}).DecodeLineProtocol([]byte("m v=1\nm v=2\nm v=3"), time.Nanosecond)
	if !errors.Is(err, ErrTooManyReadings) {
		t.Fatalf("err %v", err)
	}
	m, err := NewDecoder(Limits{MaxFields: 1, MaxTags: 1}).DecodeLineProtocol([]byte("m a=1,b=2\nm,x=1,y=2 a=1\nm,x=1 a=1"), time.Nanosecond)
	if err != nil || len(m.Invalid) != 2 || m.Readings[2].Measurement != "m" {
		t.Fatalf("%v\n%s", err, dump(m))
	}
}

func TestParsePrecision(t *testing.T) {
	for in, want := range map[string]time.Duration{"": time.Nanosecond, "ns": time.Nanosecond, "u": time.Microsecond, "us": time.Microsecond, "ms": time.Millisecond, "s": time.Second} {
		if got, err := ParsePrecision(in); err != nil || got != want {
			t.Errorf("%q: %v %v", in, got, err)
		}
	}
	if _, err := ParsePrecision("h"); !errors.Is(err, ErrPrecision) {
		t.Errorf("h: %v", err)
	}
}
