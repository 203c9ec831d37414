package bridge

import (
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/influxdata/line-protocol/v2/lineprotocol"

	"github.com/telemetryd/telemetryd/telemetry"
)

func testBridge(cfg Config) *Bridge {
	return New(cfg, nil, nil, slog.New(slog.DiscardHandler))
}

type allowChildren map[[2]telemetry.DeviceID]bool

func (a allowChildren) MayReportFor(gw, dev telemetry.DeviceID) bool {
	return a[[2]telemetry.DeviceID{gw, dev}]
}

type fixedLabels map[telemetry.DeviceID][]telemetry.Tag

func (l fixedLabels) Labels(d telemetry.DeviceID) []telemetry.Tag { return l[d] }

func TestNormalize(t *testing.T) {
	now := time.Unix(1763820000, 0)
	f := func(name string, v telemetry.Value) telemetry.Field { return telemetry.Field{Name: name, Value: v} }
	tests := []struct {
		name     string
		in       telemetry.Reading
		wantCode string
		check    func(t *testing.T, r telemetry.Reading)
	}{
		{
			name: "receive time when the device gave none; device_id tag added and tags sorted",
			in:   telemetry.Reading{Measurement: "env", Tags: []telemetry.Tag{tg("site", "p3"), tg("area", "a")}, Fields: []telemetry.Field{f("t", telemetry.Float(1))}},
			check: func(t *testing.T, r telemetry.Reading) {
				if r.Time != now.UnixNano() {
					t.Errorf("time = %d, want receive time", r.Time)
				}
				want := []telemetry.Tag{tg("area", "a"), tg("device_id", "dev1"), tg("site", "p3")}
				if len(r.Tags) != 3 || r.Tags[0] != want[0] || r.Tags[1] != want[1] || r.Tags[2] != want[2] {
					t.Errorf("tags = %v, want %v", r.Tags, want)
				}
			},
		},
		{name: "device time kept", in: telemetry.Reading{Measurement: "m", Time: now.Add(-time.Hour).UnixNano(), Fields: []telemetry.Field{f("x", telemetry.Int(3))}},
			check: func(t *testing.T, r telemetry.Reading) {
				if r.Time != now.Add(-time.Hour).UnixNano() {
					t.Errorf("time changed to %d", r.Time)
				}
			}},
		{name: "slightly future time accepted", in: telemetry.Reading{Measurement: "m", Time: now.Add(4 * time.Minute).UnixNano(), Fields: []telemetry.Field{f("x", telemetry.Bool(true))}}},
		{name: "future beyond skew", in: telemetry.Reading{Measurement: "m", Time: now.Add(6 * time.Minute).UnixNano(), Fields: []telemetry.Field{f("x", telemetry.Float(1))}}, wantCode: CodeFutureTimestamp},
		{name: "NaN", in: telemetry.Reading{Measurement: "m", Fields: []telemetry.Field{f("x", telemetry.Float(math.NaN()))}}, wantCode: CodeInvalidValue},
		{name: "Inf", in: telemetry.Reading{Measurement: "m", Fields: []telemetry.Field{f("x", telemetry.Float(math.Inf(-1)))}}, wantCode: CodeInvalidValue},
		{name: "invalid utf-8 string", in: telemetry.Reading{Measurement: "m", Fields: []telemetry.Field{f("x", telemetry.String("a\xffb"))}}, wantCode: CodeInvalidValue},
		{name: "no fields", in: telemetry.Reading{Measurement: "m"}, wantCode: CodeNoFields},
		{name: "zero value", in: telemetry.Reading{Measurement: "m", Fields: []telemetry.Field{{Name: "x"}}}, wantCode: CodeInvalidValue},
		{name: "duplicate field", in: telemetry.Reading{Measurement: "m", Fields: []telemetry.Field{f("x", telemetry.Float(1)), f("x", telemetry.Float(2))}}, wantCode: CodeInvalidName},
		{name: "measurement with space and newline (injection)", in: telemetry.Reading{Measurement: "m x=1\nother", Fields: []telemetry.Field{f("x", telemetry.Float(1))}}, wantCode: CodeInvalidName},
		{name: "measurement comment", in: telemetry.Reading{Measurement: "#m", Fields: []telemetry.Field{f("x", telemetry.Float(1))}}, wantCode: CodeInvalidName},
		{name: "empty measurement", in: telemetry.Reading{Fields: []telemetry.Field{f("x", telemetry.Float(1))}}, wantCode: CodeInvalidName},
		{name: "reserved underscore", in: telemetry.Reading{Measurement: "m", Fields: []telemetry.Field{f("_field", telemetry.Float(1))}}, wantCode: CodeInvalidName},
		{name: "time as field", in: telemetry.Reading{Measurement: "m", Fields: []telemetry.Field{f("time", telemetry.Float(1))}}, wantCode: CodeInvalidName},
		{name: "field name with equals", in: telemetry.Reading{Measurement: "m", Fields: []telemetry.Field{f("a=b", telemetry.Float(1))}}, wantCode: CodeInvalidName},
		{name: "name too long", in: telemetry.Reading{Measurement: strings.Repeat("m", 129), Fields: []telemetry.Field{f("x", telemetry.Float(1))}}, wantCode: CodeInvalidName},
		{name: "payload tag cannot spoof device_id", in: telemetry.Reading{Measurement: "m", Tags: []telemetry.Tag{tg("device_id", "victim")}, Fields: []telemetry.Field{f("x", telemetry.Float(1))}}, wantCode: CodeInvalidTag},
		{name: "tag value with newline", in: telemetry.Reading{Measurement: "m", Tags: []telemetry.Tag{tg("site", "a\nb")}, Fields: []telemetry.Field{f("x", telemetry.Float(1))}}, wantCode: CodeInvalidTag},
		{name: "tag value trailing backslash", in: telemetry.Reading{Measurement: "m", Tags: []telemetry.Tag{tg("site", `a\`)}, Fields: []telemetry.Field{f("x", telemetry.Float(1))}}, wantCode: CodeInvalidTag},
		{name: "empty tag value", in: telemetry.Reading{Measurement: "m", Tags: []telemetry.Tag{tg("site", "")}, Fields: []telemetry.Field{f("x", telemetry.Float(1))}}, wantCode: CodeInvalidTag},
		{name: "tag value too long", in: telemetry.Reading{Measurement: "m", Tags: []telemetry.Tag{tg("site", strings.Repeat("v", 257))}, Fields: []telemetry.Field{f("x", telemetry.Float(1))}}, wantCode: CodeInvalidTag},
		{name: "too many tags", in: telemetry.Reading{Measurement: "m", Tags: manyTags(32), Fields: []telemetry.Field{f("x", telemetry.Float(1))}}, wantCode: CodeInvalidTag},
		{name: "duplicate tag", in: telemetry.Reading{Measurement: "m", Tags: []telemetry.Tag{tg("a", "1"), tg("a", "2")}, Fields: []telemetry.Field{f("x", telemetry.Float(1))}}, wantCode: CodeInvalidTag},
		{name: "tag value with comma, space and equals is fine (escaped on encode)", in: telemetry.Reading{Measurement: "m", Tags: []telemetry.Tag{tg("site", "a, b=c")}, Fields: []telemetry.Field{f("x", telemetry.Float(1))}}},
		{name: "tag and field of the same name", in: telemetry.Reading{Measurement: "m", Tags: []telemetry.Tag{tg("x", "a")}, Fields: []telemetry.Field{f("y", telemetry.Float(1)), f("x", telemetry.Float(1))}}, wantCode: CodeTagFieldConflict},
		{name: "field named like device_id", in: telemetry.Reading{Measurement: "m", Fields: []telemetry.Field{f("device_id", telemetry.String("x"))}}, wantCode: CodeTagFieldConflict},
		{name: "field named like a label", in: telemetry.Reading{Device: "labelled", Measurement: "m", Fields: []telemetry.Field{f("site", telemetry.Float(1))}}, wantCode: CodeTagFieldConflict},
		{name: "unassigned child device", in: telemetry.Reading{Device: "other", Measurement: "m", Fields: []telemetry.Field{f("x", telemetry.Float(1))}}, wantCode: CodeForbiddenDevice},
		{name: "assigned child device", in: telemetry.Reading{Device: "child", Measurement: "m", Fields: []telemetry.Field{f("x", telemetry.Float(1))}},
			check: func(t *testing.T, r telemetry.Reading) {
				if r.Device != "child" {
					t.Errorf("device = %q", r.Device)
				}
			}},
		{name: "labels added and win over payload tags", in: telemetry.Reading{Device: "labelled", Measurement: "m", Tags: []telemetry.Tag{tg("site", "fake")}, Fields: []telemetry.Field{f("x", telemetry.Float(1))}},
			check: func(t *testing.T, r telemetry.Reading) {
				if len(r.Tags) != 2 || r.Tags[1] != (telemetry.Tag{Key: "site", Value: "real"}) {
					t.Errorf("tags = %v", r.Tags)
				}
			}},
	}
	b := testBridge(Config{
		Children: allowChildren{{"dev1", "child"}: true, {"dev1", "labelled"}: true},
		Labels:   fixedLabels{"labelled": {tg("site", "real")}},
		// The cases reuse field names with different types: no type guard.
		Types: TypeGuardConfig{Disabled: true},
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.in
			rej := b.normalize(&r, "dev1", now, new(tagArena))
			switch {
			case tt.wantCode == "" && rej != nil:
				t.Fatalf("rejected: %s: %s", rej.code, rej.msg)
			case tt.wantCode != "" && rej == nil:
				t.Fatalf("accepted, want %s", tt.wantCode)
			case tt.wantCode != "" && rej.code != tt.wantCode:
				t.Fatalf("code = %s (%s), want %s", rej.code, rej.msg, tt.wantCode)
			}
			if rej == nil {
				var enc lineEncoder
				if err := appendLine(&enc, &r); err != nil {
					t.Fatalf("accepted reading does not encode: %v", err)
				}
			}
			if tt.check != nil && rej == nil {
				tt.check(t, r)
			}
		})
	}
}

func tg(k, v string) telemetry.Tag { return telemetry.Tag{Key: k, Value: v} }

func manyTags(n int) []telemetry.Tag {
	tags := make([]telemetry.Tag, n)
	for i := range tags {
		tags[i] = telemetry.Tag{Key: "k" + string(rune('a'+i%26)) + string(rune('a'+i/26)), Value: "v"}
	}
	return tags
}

func TestAppendLine(t *testing.T) {
	r := telemetry.Reading{
		Device:      "d1",
		Measurement: "environment",
		Tags:        []telemetry.Tag{tg("device_id", "d1"), tg("site", "plant 3,a=b")},
		Fields: []telemetry.Field{
			{Name: "temperature", Value: telemetry.Float(21)},
			{Name: "count", Value: telemetry.Int(5)},
			{Name: "door_open", Value: telemetry.Bool(false)},
			{Name: "status", Value: telemetry.String("ok \"quoted\" \\ back\nnext x=1 2")},
		},
		Time: 1763820000123000000,
	}
	var enc lineEncoder
	if err := appendLine(&enc, &r); err != nil {
		t.Fatal(err)
	}
	got := string(enc.Bytes())
	// The newline stays raw inside the quoted string: InfluxDB stores it as
	// a newline, and it cannot end the line there.
	want := `environment,device_id=d1,site=plant\ 3\,a\=b temperature=21,count=5i,door_open=false,status="ok \"quoted\" \\ back` + "\n" + `next x=1 2" 1763820000123000000` + "\n"
	if got != want {
		t.Fatalf("line\n got %q\nwant %q", got, want)
	}
	// The line parses back as exactly one point with the same string value:
	// the newline inside the quoted string cannot start a second point.
	dec := lineprotocol.NewDecoderWithBytes(enc.Bytes())
	points := 0
	for dec.Next() {
		points++
		for {
			k, v, err := dec.NextField()
			if err != nil {
				t.Fatal(err)
			}
			if k == nil {
				break
			}
			if string(k) == "status" && v.StringV() != r.Fields[3].Value.AsString() {
				t.Errorf("status round-trips as %q", v.StringV())
			}
		}
	}
	if points != 1 {
		t.Fatalf("decoded %d points, want 1", points)
	}
}

func TestAppendLineRejectsWithoutCorruptingBuffer(t *testing.T) {
	var enc lineEncoder
	good := telemetry.Reading{Measurement: "m", Tags: []telemetry.Tag{tg("device_id", "d")}, Fields: []telemetry.Field{{Name: "x", Value: telemetry.Float(1)}}, Time: 1}
	bad := good
	bad.Fields = []telemetry.Field{{Name: "x", Value: telemetry.Float(1)}, {Name: "y", Value: telemetry.Float(math.NaN())}}
	if err := appendLine(&enc, &good); err != nil {
		t.Fatal(err)
	}
	if err := appendLine(&enc, &bad); err == nil {
		t.Fatal("NaN encoded")
	}
	if err := appendLine(&enc, &good); err != nil {
		t.Fatal(err)
	}
	if got, want := string(enc.Bytes()), "m,device_id=d x=1 1\nm,device_id=d x=1 1\n"; got != want {
		t.Fatalf("buffer %q, want %q", got, want)
	}
}

func TestValidTagValue(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"plant-3", true},
		{"Zürich", true},
		{"東京 3F", true},
		{"a b,c=d", true}, // escaped by the encoder, not refused
		{"", false},
		{strings.Repeat("x", 17), false}, // over the limit of 16
		{strings.Repeat("x", 16), true},
		{`ends\`, false},
		{"tab\there", false},
		{"del\x7f", false},
		{"\x00", false},
		{"ü\nnext", false},    // a control character after the first non-ASCII byte
		{"ok\xff", false},     // not UTF-8
		{"\xc3\x28x", false},  // a broken sequence
		{"Zürich\x01", false}, // a control character at the end
	}
	for _, tt := range tests {
		if got := validTagValue(tt.in, 16); got != tt.want {
			t.Errorf("validTagValue(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
