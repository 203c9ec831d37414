package payload

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/telemetryd/telemetryd/telemetry"
)

// manyNames is a payload with n metrics (or n tags beside one metric) named
// k0, k1, …, and, when repeat >= 0, one more named k<repeat> at the end;
// repeat == n repeats k1 right after it instead (both sides of
// pairwiseNames).
func manyNames(object string, n, repeat int) string {
	var b strings.Builder
	names := make([]string, 0, n+1)
	for i := range n {
		names = append(names, fmt.Sprintf("k%d", i))
	}
	switch {
	case repeat == n:
		names = append(names[:2], append([]string{"k1"}, names[2:]...)...)
	case repeat >= 0:
		names = append(names, fmt.Sprintf("k%d", repeat))
	}
	for i, name := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		if object == "tags" {
			fmt.Fprintf(&b, `"%s":"v"`, name)
		} else {
			fmt.Fprintf(&b, `"%s":%d`, name, i)
		}
	}
	if object == "tags" {
		return fmt.Sprintf(`{"metrics":{"a":1},"tags":{%s}}`, b.String())
	}
	return fmt.Sprintf(`{"metrics":{%s}}`, b.String())
}

// TestFastPath pins which payloads take the fast path — the shapes devices
// send all day must, or the fast path silently stops paying for itself —
// and that it agrees with the general path on each of them.
func TestFastPath(t *testing.T) {
	tests := []struct {
		name string
		in   string
		fast bool
	}{
		{"single", benchNative, true},
		{"unknown key (example)", exampleSingle, false},
		{"batch", benchBatch(3), true},
		{"batch example", exampleBatch, true},
		{"two readings", exampleTwoReadings, true},
		{"integral numbers", exampleIntegral, true},
		{"whitespace everywhere", " {\n\t\"seq\" : 1 , \"metrics\" : { \"a\" : -1.5e3 , \"b\" : true } , \"tags\" : null }\r\n", true},
		{"typed fields", `{"metrics":{"t":{"value":21.5,"unit":"Cel"},"n":{"type":"int","value":7},"s":{"value":"ok","type":"string"},"b":{"type":"bool","value":false},"f":{"value":3,"type":"float"}}}`, true},
		{"rfc 3339 time", `{"ts":"2025-11-22T14:00:00.5Z","device":"child-1","metrics":{"a":1}}`, true},
		{"empty tags and measurement", `{"measurement":"","tags":{},"metrics":{"a":1}}`, true},
		{"non-ASCII strings", `{"metrics":{"état":"仕様"}}`, true},

		{"escapes", exampleEscapes, false},
		{"SenML", exampleSenML, false},
		{"SenML envelope", exampleEnvelope, false},
		{"duplicate keys", exampleDuplicateKeys, false},
		{"rejected readings", exampleRejected, false},
		{"unknown key", `{"metrics":{"a":1},"extra":1}`, false},
		{"null metric", `{"metrics":{"a":null}}`, false},
		{"empty batch", `{"seq":1,"readings":[]}`, false},
		{"batch beside reading keys", `{"ts":1,"readings":[{"metrics":{"a":1}}]}`, false},
		{"lenient number", `{"metrics":{"a":01}}`, false},
		{"typed int not integral", `{"metrics":{"a":{"type":"int","value":1.5}}}`, false},
		{"control character", "{\"metrics\":{\"a\":\"x\ty\"}}", false},
		{"trailing bytes", `{"metrics":{"a":1}} x`, false},
		{"truncated", `{"metrics":{"a":1}`, false},
		{"negative seq", `{"seq":-1,"metrics":{"a":1}}`, false},
		{"repeated metric", `{"metrics":{"a":1,"b":2,"a":3}}`, false},
		{"repeated tag", `{"metrics":{"a":1},"tags":{"t":"1","t":"2"}}`, false},
		{"many metrics", manyNames("metrics", 20, -1), true},
		{"many metrics, last repeats an early one", manyNames("metrics", 20, 2), false},
		{"many metrics, early ones repeat", manyNames("metrics", 20, 20), false},
		{"many tags", manyNames("tags", 20, -1), true},
		{"many tags, last repeats an early one", manyNames("tags", 20, 2), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDecoder(Limits{})
			data := []byte(tt.in)
			fast, ok := d.decodeFast(data)
			d.release(len(data))
			if ok != tt.fast {
				t.Fatalf("fast path taken = %v, want %v", ok, tt.fast)
			}
			if !ok {
				return
			}
			general, err := d.decodeGeneral(data, now)
			if err != nil || !reflect.DeepEqual(fast, general) {
				t.Fatalf("fast %s\ngeneral %s %v", dump(fast), dump(general), err)
			}
		})
	}
}

// TestFastPathLimits: at a limit the fast path still decodes; one past it,
// it leaves the payload to the general path, which reports it.
func TestFastPathLimits(t *testing.T) {
	l := Limits{MaxReadings: 2, MaxFields: 2, MaxTags: 1}
	tests := []struct {
		in   string
		fast bool
	}{
		{`{"readings":[{"metrics":{"a":1}},{"metrics":{"a":1}}]}`, true},
		{`{"readings":[{"metrics":{"a":1}},{"metrics":{"a":1}},{"metrics":{"a":1}}]}`, false},
		{`{"metrics":{"a":1,"b":2}}`, true},
		{`{"metrics":{"a":1,"b":2,"c":3}}`, false},
		{`{"metrics":{"a":1},"tags":{"t":"1"}}`, true},
		{`{"metrics":{"a":1},"tags":{"t":"1","u":"2"}}`, false},
	}
	for _, tt := range tests {
		d := NewDecoder(l)
		if _, ok := d.decodeFast([]byte(tt.in)); ok != tt.fast {
			t.Errorf("%s: fast path taken = %v, want %v", tt.in, ok, tt.fast)
		}
	}
}

// TestMessageMemory: every size gets arrays of exactly the lengths asked
// for, whether they share one allocation or not.
func TestMessageMemory(t *testing.T) {
	d := NewDecoder(Limits{})
	for nr := 1; nr <= 2; nr++ {
		for nf := 1; nf <= 9; nf++ {
			for nt := 0; nt <= 5; nt++ {
				rs, fs, ts := d.messageMemory(nr, nf, nt)
				if len(rs) != nr || len(fs) != nf || len(ts) != nt {
					t.Errorf("messageMemory(%d, %d, %d): lengths %d, %d, %d", nr, nf, nt, len(rs), len(fs), len(ts))
				}
			}
		}
	}
}

// TestMessagesOwnTheirMemory: Messages decoded one after the other share
// slabs, never a block: each keeps its values, however many follow it, and
// appends to one Message's fields or tags (within their spare capacity)
// reach no other.
func TestMessagesOwnTheirMemory(t *testing.T) {
	d := NewDecoder(Limits{})
	var payloads []string
	for i := range 300 {
		metrics := make([]string, 1+i%8) // one to eight fields: every block size
		for j := range metrics {
			metrics[j] = fmt.Sprintf(`"m%d":%d.5`, j, i)
		}
		payloads = append(payloads, fmt.Sprintf(`{"seq":%d,"ts":%d,"metrics":{%s},"tags":{"n":"t%d"}}`,
			i, 1763820000000000000+i, strings.Join(metrics, ","), i))
	}
	msgs := make([]Message, len(payloads))
	for i, p := range payloads {
		m, err := d.Decode([]byte(p), now)
		if err != nil {
			t.Fatal(err)
		}
		msgs[i] = m
	}
	check := func(when string) {
		t.Helper()
		for i, p := range payloads {
			want, err := NewDecoder(Limits{}).decodeGeneral([]byte(p), now)
			if err != nil {
				t.Fatal(err)
			}
			got := msgs[i]
			got.Readings = []telemetry.Reading{got.Readings[0]}
			r := &got.Readings[0]
			r.Fields, r.Tags = r.Fields[:len(want.Readings[0].Fields)], r.Tags[:len(want.Readings[0].Tags)]
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%s: message %d is %s, want %s", when, i, dump(got), dump(want))
			}
		}
	}
	check("after decoding them all")
	for i := range msgs {
		r := &msgs[i].Readings[0]
		r.Fields = append(r.Fields, telemetry.Field{Name: "x", Value: telemetry.Int(-1)})
		r.Tags = append(r.Tags, telemetry.Tag{Key: "x", Value: "x"})
	}
	check("after appending to each")
}
