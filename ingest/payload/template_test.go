package payload

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// shape is a random single-reading payload layout: its members in order,
// the spacing around every value, and the metric names and tag keys.
type shape struct {
	members []string // "seq", "ts", "measurement", "device", "tags", "metrics"
	metrics []string
	tagKeys []string // nil with nullTags: "tags":null
	null    bool
	spaces  []string // one per gap, reused in order
}

func randomShape(rng *rand.Rand) shape {
	var s shape
	s.members = []string{"metrics"}
	for _, m := range []string{"seq", "ts", "measurement", "device", "tags"} {
		if rng.IntN(3) > 0 {
			s.members = append(s.members, m)
		}
	}
	rng.Shuffle(len(s.members), func(i, j int) { s.members[i], s.members[j] = s.members[j], s.members[i] })
	names := []string{"temperature", "humidity", "rssi", "door_open", "status", "v", "a.b", "x-1"}
	rng.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	s.metrics = names[:1+rng.IntN(5)]
	keys := []string{"site", "room", "line", "zone"}
	s.tagKeys = keys[:rng.IntN(4)]
	s.null = rng.IntN(8) == 0
	for range 8 {
		s.spaces = append(s.spaces, []string{"", "", "", " ", "\n  ", "\t"}[rng.IntN(6)])
	}
	return s
}

// payload writes the shape with values from value, which gets the role of
// each ("seq", "ts", "measurement", "device", "tag", "metric").
func (s shape) payload(value func(role string) string) string {
	var b strings.Builder
	gap := 0
	sp := func() string { gap++; return s.spaces[gap%len(s.spaces)] }
	b.WriteString(sp() + "{")
	for i, m := range s.members {
		if i > 0 {
			b.WriteString(sp() + ",")
		}
		fmt.Fprintf(&b, `%s"%s"%s:%s`, sp(), m, sp(), sp())
		switch m {
		case "tags":
			if s.null {
				b.WriteString("null")
				continue
			}
			b.WriteString("{")
			for j, k := range s.tagKeys {
				if j > 0 {
					b.WriteString(",")
				}
				fmt.Fprintf(&b, `"%s":%s%s`, k, sp(), value("tag"))
			}
			b.WriteString(sp() + "}")
		case "metrics":
			b.WriteString("{")
			for j, k := range s.metrics {
				if j > 0 {
					b.WriteString("," + sp())
				}
				fmt.Fprintf(&b, `"%s":%s%s`, k, sp(), value("metric"))
			}
			b.WriteString("}")
		default:
			b.WriteString(value(m))
		}
		b.WriteString(sp())
	}
	b.WriteString("}" + sp())
	return b.String()
}

// goodValue is a value the fast path takes in that role.
func goodValue(rng *rand.Rand, role string) string {
	switch role {
	case "seq":
		return fmt.Sprint(rng.Uint64N(1 << uint(1+rng.IntN(63))))
	case "ts":
		switch rng.IntN(4) {
		case 0:
			return fmt.Sprint(1763820000 + rng.IntN(1000))
		case 1:
			return fmt.Sprint(1763820000123 + rng.IntN(1000))
		case 2:
			return fmt.Sprint(1763820000123456789 + rng.IntN(1000))
		default:
			return fmt.Sprintf(`"2025-11-22T14:%02d:%02d.%dZ"`, rng.IntN(60), rng.IntN(60), rng.IntN(1000))
		}
	case "metric":
		switch rng.IntN(6) {
		case 0:
			return []string{"true", "false"}[rng.IntN(2)]
		case 1:
			return `"` + []string{"ok", "", "running fine", "Zürich", strings.Repeat("long", 30)}[rng.IntN(5)] + `"`
		case 2:
			return fmt.Sprint(rng.IntN(2000) - 1000)
		default:
			return fmt.Sprintf("%d.%d", rng.IntN(2000)-1000, rng.IntN(100))
		}
	case "measurement":
		return `"` + []string{"environment", "", "power", "m"}[rng.IntN(4)] + `"`
	case "device":
		return `"` + []string{"", "child-1", "child-2"}[rng.IntN(3)] + `"`
	default: // tag
		return `"` + []string{"plant-3", "", "r1", "東京"}[rng.IntN(4)] + `"`
	}
}

// oddValue is anything a value could be, valid or not.
func oddValue(rng *rand.Rand, role string) string {
	odd := []string{
		"null", "{}", "[]", `{"value":1,"type":"int"}`, `"a\"b"`, `"tab\there"`, `"\u00e9"`, "-0", "01", "1.", "-",
		"1e3", "1E-2", "1e999", "-1e400", "0.1e1", "18446744073709551616", "-5", "2.5", "tru", "falsey", `"`, `"x`,
		"9223372036854775807", "1763820000.5", `"2025-13-01T00:00:00Z"`, `"yesterday"`, `""`, "1763820000123456789012",
	}
	if rng.IntN(3) == 0 {
		return goodValue(rng, []string{"seq", "ts", "metric", "measurement", "device", "tag"}[rng.IntN(6)])
	}
	return odd[rng.IntN(len(odd))]
}

// TestTemplateAgrees decodes payloads that share a learned payload's
// layout but not its values, and checks that every one the template takes
// decodes as on the general path — and that Decode as a whole does.
func TestTemplateAgrees(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	hits, misses := 0, 0
	for range 400 {
		s := randomShape(rng)
		for _, l := range fuzzLimits {
			d := NewDecoder(l)
			learned := s.payload(func(role string) string { return goodValue(rng, role) })
			if _, err := d.Decode([]byte(learned), now); err != nil {
				t.Fatalf("%s: %v", learned, err)
			}
			for i := range 30 {
				value := func(role string) string { return goodValue(rng, role) }
				if i%3 == 0 {
					value = func(role string) string {
						if rng.IntN(4) == 0 {
							return oddValue(rng, role)
						}
						return goodValue(rng, role)
					}
				}
				data := []byte(s.payload(value))
				want, werr := NewDecoder(l).decodeGeneral(data, now)
				if got, ok := d.decodeTemplate(data); ok {
					hits++
					if werr != nil || !reflect.DeepEqual(got, want) {
						t.Fatalf("template of\n%s\ndecoded\n%s\nas %s\ngeneral path: %s %v", learned, data, dump(got), dump(want), werr)
					}
				} else {
					misses++
				}
				d.release(len(data))
				got, err := d.Decode(data, now)
				if (err == nil) != (werr == nil) || !reflect.DeepEqual(got, want) {
					t.Fatalf("Decode(%s) = %s %v, general path %s %v", data, dump(got), err, dump(want), werr)
				}
			}
		}
	}
	t.Logf("template matched %d payloads, missed %d", hits, misses)
	// Both sides must be exercised: good values match, odd ones mostly not.
	if hits < 10000 || misses < 1000 {
		t.Fatalf("template matched %d payloads, missed %d", hits, misses)
	}
}

// TestTemplateFollowsTheDevice: a payload of another shape is decoded
// right and becomes the template; batches and typed fields have none.
func TestTemplateFollowsTheDevice(t *testing.T) {
	d := NewDecoder(Limits{})
	decode := func(s string) {
		t.Helper()
		want, werr := NewDecoder(Limits{}).decodeGeneral([]byte(s), now)
		got, err := d.Decode([]byte(s), now)
		if err != nil || werr != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("Decode(%s) = %s %v, general %s %v", s, dump(got), err, dump(want), werr)
		}
	}
	matches := func(s string) bool {
		_, ok := d.decodeTemplate([]byte(s))
		d.release(len(s))
		return ok
	}
	a1, a2 := `{"seq":1,"metrics":{"t":21.5},"tags":{"site":"x"}}`, `{"seq":2,"metrics":{"t":22},"tags":{"site":"y"}}`
	b1, b2 := `{"seq":3,"metrics":{"u":1,"t":2}}`, `{"seq":4,"metrics":{"u":3,"t":4}}`
	decode(a1)
	if !matches(a2) || matches(b1) {
		t.Fatal("want a2 to match a1's template, b1 not")
	}
	decode(b1)
	if !matches(b2) || matches(a2) {
		t.Fatal("want b1's template to replace a1's")
	}
	for _, s := range []string{
		`{"seq":5,"readings":[{"metrics":{"u":1,"t":2}}]}`,
		`{"seq":5,"metrics":{"u":{"value":1,"type":"int"},"t":2}}`,
	} {
		d.forget()
		decode(s)
		if len(d.tmpl.slots) != 0 {
			t.Fatalf("%s left a template", s)
		}
	}
}

// FuzzTemplateAgrees: after the fast path learns a, whatever b the
// template takes must decode as on the general path.
func FuzzTemplateAgrees(f *testing.F) {
	rng := rand.New(rand.NewPCG(13, 14))
	for range 40 {
		s := randomShape(rng)
		a := s.payload(func(role string) string { return goodValue(rng, role) })
		b := s.payload(func(role string) string { return oddValue(rng, role) })
		f.Add([]byte(a), []byte(b))
	}
	for _, seed := range fuzzSeeds() {
		f.Add([]byte(seed), []byte(seed))
	}
	f.Fuzz(func(t *testing.T, a, b []byte) {
		for _, l := range fuzzLimits {
			d := NewDecoder(l)
			d.Decode(a, now)
			got, ok := d.decodeTemplate(b)
			d.release(len(b))
			if !ok {
				continue
			}
			want, err := NewDecoder(l).decodeGeneral(b, now)
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("template of %q decoded %q as %s\ngeneral path: %s %v", a, b, dump(got), dump(want), err)
			}
		}
	})
}

// TestTemplatePause: a Decoder that sees alternating layouts stops trying
// and learning templates for a while, then tries again.
func TestTemplatePause(t *testing.T) {
	d := NewDecoder(Limits{})
	a, b := []byte(`{"seq":1,"metrics":{"t":21.5}}`), []byte(`{"seq":2,"metrics":{"u":1}}`)
	for i := range templateRound + 1 {
		data := a
		if i%2 == 1 {
			data = b
		}
		if _, err := d.Decode(data, now); err != nil {
			t.Fatal(err)
		}
	}
	paused := d.tmpl.pause
	if paused == 0 || len(d.tmpl.slots) != 0 {
		t.Fatalf("after alternating layouts: pause %d, %d slots; want a pause and no template", paused, len(d.tmpl.slots))
	}
	for range paused - 1 {
		if _, err := d.Decode(a, now); err != nil {
			t.Fatal(err)
		}
	}
	if d.tmpl.pause != 1 || len(d.tmpl.slots) != 0 {
		t.Fatalf("near the end of the pause: pause %d, %d slots", d.tmpl.pause, len(d.tmpl.slots))
	}
	d.Decode(a, now) // the pause ends: learns again
	for range 3 * templateRound {
		if _, ok := d.decodeTemplate(a); !ok {
			t.Fatal("the template of a single layout missed")
		}
		d.release(len(a))
	}
	if d.tmpl.pause != 0 {
		t.Fatal("a single layout paused the template")
	}
}
