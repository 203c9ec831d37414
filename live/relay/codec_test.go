package relay

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/telemetryd/telemetryd/telemetry"
)

func TestCodecRoundTrip(t *testing.T) {
	long := strings.Repeat("x", maxInterned+1)
	tests := []struct {
		name string
		rs   []telemetry.Reading
	}{
		{"empty batch", []telemetry.Reading{}},
		{"one reading", []telemetry.Reading{reading("dev-1", "plant-1", 1763820000123000000, 21.5)}},
		{"every kind and unit", []telemetry.Reading{{
			Device: "d", Measurement: "m", Time: -5,
			Fields: []telemetry.Field{
				{Name: "f", Value: telemetry.Float(math.Inf(-1)), Unit: "degC"},
				{Name: "i", Value: telemetry.Int(math.MinInt64)},
				{Name: "b", Value: telemetry.Bool(true)},
				{Name: "s", Value: telemetry.String("héllo \x00 \"quoted\"")},
				{Name: "e", Value: telemetry.String("")},
			},
		}}},
		{"no tags no fields", []telemetry.Reading{{Device: "d", Measurement: "m"}}},
		{"repeated and long strings", []telemetry.Reading{
			{Device: "d", Measurement: long, Tags: []telemetry.Tag{{Key: "k", Value: long}}, Fields: []telemetry.Field{{Name: "d", Value: telemetry.String(long)}}, Time: 1},
			{Device: "d", Measurement: long, Tags: []telemetry.Tag{{Key: "k", Value: "d"}}, Fields: []telemetry.Field{{Name: "k", Value: telemetry.String("d")}}, Time: 2},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var enc encoder
			var dec decoder
			msg := enc.encode(nil, tt.rs)
			// Twice through the same coders: state from one message must not leak into the next.
			for range 2 {
				got, err := dec.decode(msg)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, tt.rs) {
					t.Fatalf("round trip:\n got %+v\nwant %+v", got, tt.rs)
				}
				msg = enc.encode(nil, tt.rs)
			}
		})
	}
}

func TestCodecIsCompact(t *testing.T) {
	rs := make([]telemetry.Reading, 100)
	for i := range rs {
		rs[i] = reading("0190a8f2-7c1e-7d3a-9b1e-2f6c0e9d4a11", "plant-3", 1763820000123000000+int64(i), 21.5)
	}
	var enc encoder
	msg := enc.encode(nil, rs)
	// The device id, the tag keys and values, the measurement and the field
	// name are written once; each further reading is 8 one-byte references
	// and counts, a float (8 bytes) and a time (9).
	if per := len(msg) / len(rs); per > 28 {
		t.Fatalf("%d bytes per reading", per)
	}
}

func TestDecodeRejectsCorrupt(t *testing.T) {
	var enc encoder
	good := enc.encode(nil, []telemetry.Reading{reading("dev-1", "plant-1", 1, 2)})
	tests := []struct {
		name string
		msg  []byte
	}{
		{"empty", nil},
		{"unknown version", append([]byte{9}, good[1:]...)},
		{"truncated", good[:len(good)-1]},
		{"trailing bytes", append(append([]byte(nil), good...), 0)},
		{"huge count", []byte{codecVersion, 0xff, 0xff, 0xff, 0xff, 0x0f}},
		{"reference out of range", []byte{codecVersion, 1, 3, 0, 0, 0, 0}},
		{"unknown kind", []byte{codecVersion, 1, 2, 'd', 2, 'm', 0, 1, 2, 'f', 9, 0, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var dec decoder
			if rs, err := dec.decode(tt.msg); !errors.Is(err, errCorrupt) {
				t.Fatalf("decode = %v, %v; want errCorrupt", rs, err)
			}
		})
	}
}

// FuzzDecode: no input panics or allocates beyond its size, and whatever
// decodes encodes back to the same readings.
func FuzzDecode(f *testing.F) {
	var enc encoder
	f.Add(enc.encode(nil, []telemetry.Reading{reading("dev-1", "plant-1", 1, 2), reading("dev-1", "plant-2", 3, 4)}))
	f.Add([]byte{codecVersion, 0})
	f.Fuzz(func(t *testing.T, msg []byte) {
		var dec decoder
		rs, err := dec.decode(msg)
		if err != nil {
			return
		}
		again, err := dec.decode(enc.encode(nil, rs))
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		if len(again) != len(rs) {
			t.Fatalf("%d readings, then %d", len(rs), len(again))
		}
	})
}

func TestSeriesSubject(t *testing.T) {
	base := telemetry.Reading{Device: "d", Measurement: "m", Tags: []telemetry.Tag{{Key: "a", Value: "b.c *>"}}}
	s := seriesSubject("telemetryd", &base)
	if !strings.HasPrefix(s, "telemetryd.last.") || len(s) != len("telemetryd.last.")+32 {
		t.Fatalf("subject %q", s)
	}
	if tok := strings.TrimPrefix(s, "telemetryd.last."); !validToken(tok) {
		t.Fatalf("token %q", tok)
	}
	// Fields and time are not the series; every part of the identity is.
	same := base
	same.Fields = []telemetry.Field{{Name: "x", Value: telemetry.Int(1)}}
	same.Time = 99
	if seriesSubject("telemetryd", &same) != s {
		t.Fatal("fields or time changed the subject")
	}
	for _, other := range []telemetry.Reading{
		{Device: "dm", Measurement: "", Tags: base.Tags},
		{Device: "d", Measurement: "m", Tags: []telemetry.Tag{{Key: "ab", Value: ".c *>"}}},
		{Device: "d", Measurement: "m"},
	} {
		if seriesSubject("telemetryd", &other) == s {
			t.Fatalf("%+v shares the subject of %+v", other, base)
		}
	}
}

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		cfg Config
		ok  bool
	}{
		{Config{URL: "nats://x", Instance: "telemetryd-0"}, true},
		{Config{URL: "nats://x", Instance: "host:1_a", Prefix: "acme.telemetryd"}, true},
		{Config{URL: "", Instance: "a"}, false},
		{Config{URL: "nats://n1:4222, tls://user:pw@n2:4222,n3:4222", Instance: "a"}, true},
		{Config{URL: "http://n1:4222", Instance: "a"}, false},
		{Config{URL: "nats://", Instance: "a"}, false},
		{Config{URL: "nats://x", Instance: ""}, false},
		{Config{URL: "nats://x", Instance: "node-1.example.com"}, true},
		{Config{URL: "nats://x", Instance: "a b"}, false},
		{Config{URL: "nats://x", Instance: "a", Prefix: "t.*"}, false},
		{Config{URL: "nats://x", Instance: "a", Prefix: "t..x"}, false},
	}
	for _, tt := range tests {
		if _, err := New(tt.cfg, &countingHub{}, testLog(t)); (err == nil) != tt.ok {
			t.Errorf("New(%+v) error %v, want ok=%v", tt.cfg, err, tt.ok)
		}
	}
}
