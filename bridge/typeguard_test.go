package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/telemetry"
)

func TestTypeGuardCoercion(t *testing.T) {
	tests := []struct {
		name     string
		stored   telemetry.Kind // the field's remembered type
		in       telemetry.Value
		want     telemetry.Value // when accepted
		wantCode string
	}{
		{"float field takes float", telemetry.KindFloat, telemetry.Float(1.5), telemetry.Float(1.5), ""},
		{"float field takes integer as float", telemetry.KindFloat, telemetry.Int(21), telemetry.Float(21), ""},
		{"integer field takes integer", telemetry.KindInt, telemetry.Int(-3), telemetry.Int(-3), ""},
		{"integer field takes integral float", telemetry.KindInt, telemetry.Float(3), telemetry.Int(3), ""},
		{"integer field takes negative integral float", telemetry.KindInt, telemetry.Float(-1e15), telemetry.Int(-1e15), ""},
		{"integer field refuses a fraction", telemetry.KindInt, telemetry.Float(3.5), telemetry.Value{}, CodeTypeConflict},
		{"integer field refuses 2^63", telemetry.KindInt, telemetry.Float(math.Pow(2, 63)), telemetry.Value{}, CodeTypeConflict},
		{"integer field takes -2^63", telemetry.KindInt, telemetry.Float(-math.Pow(2, 63)), telemetry.Int(math.MinInt64), ""},
		{"float field refuses bool", telemetry.KindFloat, telemetry.Bool(true), telemetry.Value{}, CodeTypeConflict},
		{"float field refuses string", telemetry.KindFloat, telemetry.String("1.5"), telemetry.Value{}, CodeTypeConflict},
		{"bool field refuses integer", telemetry.KindBool, telemetry.Int(1), telemetry.Value{}, CodeTypeConflict},
		{"string field refuses float", telemetry.KindString, telemetry.Float(1), telemetry.Value{}, CodeTypeConflict},
		{"string field takes string", telemetry.KindString, telemetry.String("ok"), telemetry.String("ok"), ""},
		{"bool field takes bool", telemetry.KindBool, telemetry.Bool(false), telemetry.Bool(false), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newTypeGuard(TypeGuardConfig{})
			g.seed(map[string]map[string]string{"m": {"x": tt.stored.String()}})
			r := telemetry.Reading{Measurement: "m", Fields: []telemetry.Field{{Name: "x", Value: tt.in}}}
			rej := g.check(&r)
			switch {
			case tt.wantCode == "" && rej != nil:
				t.Fatalf("rejected: %v", rej)
			case tt.wantCode != "" && (rej == nil || rej.code != tt.wantCode):
				t.Fatalf("got %v (value %v), want %s", rej, r.Fields[0].Value, tt.wantCode)
			case rej == nil && r.Fields[0].Value != tt.want:
				t.Fatalf("value %v (%s), want %v (%s)", r.Fields[0].Value, r.Fields[0].Value.Kind(), tt.want, tt.want.Kind())
			}
			if rej != nil && !strings.Contains(rej.msg, `"x"`) {
				t.Errorf("message %q does not name the field", rej.msg)
			}
		})
	}
}

func TestTypeGuardFirstSeenDeclaredAndSeeded(t *testing.T) {
	check := func(g *typeGuard, meas string, fields ...telemetry.Field) (telemetry.Reading, string) {
		t.Helper()
		r := telemetry.Reading{Measurement: meas, Fields: fields}
		if rej := g.check(&r); rej != nil {
			return r, rej.code
		}
		return r, ""
	}
	f := func(name string, v telemetry.Value) telemetry.Field { return telemetry.Field{Name: name, Value: v} }

	g := newTypeGuard(TypeGuardConfig{Declared: map[string]map[string]telemetry.Kind{
		"power": {"count": telemetry.KindInt},
		"*":     {"temp": telemetry.KindFloat},
	}})
	// First seen wins, per measurement.
	if _, code := check(g, "env", f("state", telemetry.String("on"))); code != "" {
		t.Fatal(code)
	}
	if _, code := check(g, "env", f("state", telemetry.Bool(true))); code != CodeTypeConflict {
		t.Fatalf("bool after string: %q", code)
	}
	if _, code := check(g, "other", f("state", telemetry.Bool(true))); code != "" {
		t.Fatalf("another measurement has its own types: %q", code)
	}
	// A rejected reading teaches nothing: "fresh" stays unknown.
	if _, code := check(g, "env", f("fresh", telemetry.Int(1)), f("state", telemetry.Int(1))); code != CodeTypeConflict {
		t.Fatalf("conflicting reading: %q", code)
	}
	if _, code := check(g, "env", f("fresh", telemetry.String("s"))); code != "" {
		t.Fatalf("field of a rejected reading was remembered: %q", code)
	}
	// Declarations apply before the first value: an integer for a declared float.
	if r, code := check(g, "any", f("temp", telemetry.Int(20))); code != "" || r.Fields[0].Value != telemetry.Float(20) {
		t.Fatalf("declared float: %q %v", code, r.Fields[0].Value)
	}
	if r, code := check(g, "power", f("count", telemetry.Float(4))); code != "" || r.Fields[0].Value != telemetry.Int(4) {
		t.Fatalf("declared integer: %q %v", code, r.Fields[0].Value)
	}
	if _, code := check(g, "power", f("count", telemetry.Float(4.5))); code != CodeTypeConflict {
		t.Fatalf("declared integer takes 4.5: %q", code)
	}
	// The store wins over a declaration, and the disagreement is reported.
	conflicts := g.seed(map[string]map[string]string{"power": {"count": "float", "u": "unsigned"}})
	if len(conflicts) != 1 || !strings.Contains(conflicts[0], "power.count") {
		t.Fatalf("conflicts %v", conflicts)
	}
	if r, code := check(g, "power", f("count", telemetry.Int(4))); code != "" || r.Fields[0].Value != telemetry.Float(4) {
		t.Fatalf("seeded float: %q %v", code, r.Fields[0].Value)
	}
	if _, code := check(g, "power", f("u", telemetry.Bool(true))); code != "" {
		t.Fatalf("unknown InfluxDB types are not guarded: %q", code)
	}
}

func TestTypeGuardBound(t *testing.T) {
	g := newTypeGuard(TypeGuardConfig{MaxFields: 2, Declared: map[string]map[string]telemetry.Kind{"m": {"d": telemetry.KindFloat}}})
	for _, name := range []string{"a", "b", "c", "d"} {
		r := telemetry.Reading{Measurement: "m", Fields: []telemetry.Field{{Name: name, Value: telemetry.Int(1)}}}
		if rej := g.check(&r); rej != nil {
			t.Fatal(rej)
		}
	}
	if g.fields() != 2 || g.untracked.Load() != 2 {
		t.Fatalf("fields %d, untracked %d: want 2 and 2", g.fields(), g.untracked.Load())
	}
	// Untracked: a conflict passes through (storage will refuse that line alone)...
	r := telemetry.Reading{Measurement: "m", Fields: []telemetry.Field{{Name: "c", Value: telemetry.String("x")}}}
	if rej := g.check(&r); rej != nil {
		t.Fatalf("untracked field guarded: %v", rej)
	}
	// ...but a declared type is still enforced.
	r = telemetry.Reading{Measurement: "m", Fields: []telemetry.Field{{Name: "d", Value: telemetry.String("x")}}}
	if rej := g.check(&r); rej == nil || rej.code != CodeTypeConflict {
		t.Fatalf("declared field past the bound: %v", rej)
	}
	if newTypeGuard(TypeGuardConfig{Disabled: true}) != nil {
		t.Fatal("disabled guard exists")
	}
}

func TestTypeGuardConcurrentFirstSeen(t *testing.T) {
	// Many goroutines race to be first on a new field with different types:
	// exactly one type wins, and every accepted value has that type.
	g := newTypeGuard(TypeGuardConfig{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	kinds := map[telemetry.Kind]int{}
	for i := range 8 {
		wg.Go(func() {
			v := telemetry.Value(telemetry.Float(1.5))
			if i%2 == 0 {
				v = telemetry.String("s")
			}
			r := telemetry.Reading{Measurement: "race", Fields: []telemetry.Field{{Name: "x", Value: v}}}
			if g.check(&r) == nil {
				mu.Lock()
				kinds[r.Fields[0].Value.Kind()]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(kinds) != 1 {
		t.Fatalf("accepted kinds %v, want exactly one", kinds)
	}
}

// TestBridgeTypeConflictRejectedAloneInBatch is the bridge-level proof: a
// new field whose first two values disagree would make InfluxDB refuse the
// whole batch; the guard coerces or rejects the second value alone.
func TestBridgeTypeConflictRejectedAloneInBatch(t *testing.T) {
	sink := &fakeSink{fail: func(body string) error {
		// InfluxDB's behaviour: a batch with one field in two types fails whole.
		if strings.Contains(body, "x=1i") && strings.Contains(body, `x="a"`) {
			return permanentErr{"field type conflict"}
		}
		return nil
	}}
	b, _, _ := startBridge(t, Config{FlushInterval: 50 * time.Millisecond}, sink, nil)
	var rec recorder
	mk := func(v telemetry.Value) telemetry.Reading {
		return telemetry.Reading{Measurement: "m", Fields: []telemetry.Field{{Name: "x", Value: v}}, Time: 1}
	}
	f := &telemetry.Frame{Device: "d", Done: rec.done(0), Received: time.Now(), Readings: []telemetry.Reading{
		mk(telemetry.Int(1)), mk(telemetry.String("a")), mk(telemetry.Float(2)), mk(telemetry.Float(2.5)),
	}}
	rcpt, err := b.Consume(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	if rcpt.Accepted != 2 || len(rcpt.Rejected) != 2 || rcpt.Rejected[0].Index != 1 || rcpt.Rejected[0].Code != CodeTypeConflict ||
		rcpt.Rejected[1].Index != 3 || rcpt.Rejected[1].Code != CodeTypeConflict {
		t.Fatalf("receipt %+v", rcpt)
	}
	eventually(t, "outcome", func() bool { _, ok := rec.get(0); return ok })
	if o, _ := rec.get(0); o.Err != nil || len(o.Rejected) != 0 {
		t.Fatalf("outcome %+v", o)
	}
	if got := sink.stored(); got != "m,device_id=d x=1i 1\nm,device_id=d x=2i 1\n" {
		t.Fatalf("stored %q", got)
	}
	st := b.Stats()
	if st.RejectedByCode[CodeTypeConflict] != 2 || st.TypeGuardCoerced != 1 || st.TypeGuardFields != 1 {
		t.Fatalf("stats %+v", st.DetailStats)
	}
}

type fakeTypes struct {
	types map[string]map[string]string
	err   error
}

func (f fakeTypes) FieldTypes(context.Context) (map[string]map[string]string, error) {
	return f.types, f.err
}

func TestBridgeSeedFieldTypes(t *testing.T) {
	b := New(Config{}, &fakeSink{}, nil, slog.New(slog.DiscardHandler))
	if err := b.SeedFieldTypes(context.Background(), fakeTypes{err: errors.New("down")}); err == nil {
		t.Fatal("seed error swallowed")
	}
	if err := b.SeedFieldTypes(context.Background(), fakeTypes{types: map[string]map[string]string{"m": {"x": "integer"}}}); err != nil {
		t.Fatal(err)
	}
	rcpt, err := b.Consume(context.Background(), &telemetry.Frame{Device: "d", Readings: []telemetry.Reading{
		{Measurement: "m", Fields: []telemetry.Field{{Name: "x", Value: telemetry.Float(1.25)}}},
	}})
	if err != nil || len(rcpt.Rejected) != 1 || rcpt.Rejected[0].Code != CodeTypeConflict {
		t.Fatalf("after seeding integer, 1.25: %+v %v", rcpt, err)
	}
	b2 := New(Config{Types: TypeGuardConfig{Disabled: true}}, &fakeSink{}, nil, slog.New(slog.DiscardHandler))
	if err := b2.SeedFieldTypes(context.Background(), fakeTypes{err: errors.New("never asked")}); err != nil {
		t.Fatalf("disabled guard seeded: %v", err)
	}
}

func TestBridgeUnitsAndRejectionStats(t *testing.T) {
	sink := &fakeSink{}
	b, _, _ := startBridge(t, Config{FlushInterval: time.Millisecond, Units: UnitConfig{KeepOriginal: true}}, sink, nil)
	var rec recorder
	f := &telemetry.Frame{Device: "d", Done: rec.done(0), Received: time.Now(),
		Readings: []telemetry.Reading{
			{Measurement: "env", Fields: []telemetry.Field{{Name: "t", Value: telemetry.Float(212), Unit: "degF"}}, Time: 5},
			{Measurement: "bad name", Fields: []telemetry.Field{{Name: "x", Value: telemetry.Int(1)}}},
			{},
		},
		Invalid: []telemetry.Rejection{{Index: 2, Code: "invalid_timestamp"}},
	}
	if _, err := b.Consume(context.Background(), f); err != nil {
		t.Fatal(err)
	}
	eventually(t, "written", func() bool { _, ok := rec.get(0); return ok })
	if got := sink.stored(); got != "env,device_id=d t=100,t_unit_original=\"degF\" 5\n" {
		t.Fatalf("stored %q", got)
	}
	st := b.Stats()
	if fmt.Sprint(st.RejectedByCode) != "map[invalid_name:1 invalid_timestamp:1]" || st.UnitsConverted != 1 {
		t.Fatalf("rejected %v, converted %d", st.RejectedByCode, st.UnitsConverted)
	}
	if st.WriteLatency.Count == 0 || st.QueueCapacity != 8192 || st.QueueOldestAge != 0 {
		t.Fatalf("latency count %d, capacity %d, oldest %v", st.WriteLatency.Count, st.QueueCapacity, st.QueueOldestAge)
	}
}

func TestBridgeQueueOldestAge(t *testing.T) {
	sink := &fakeSink{block: make(chan struct{})}
	b, _, _ := startBridge(t, Config{FlushInterval: time.Millisecond}, sink, nil)
	received := time.Now().Add(-time.Minute)
	f := frame("d", nil, 1)
	f.Received = received
	if _, err := b.Consume(context.Background(), f); err != nil {
		t.Fatal(err)
	}
	eventually(t, "oldest age reported while the write blocks", func() bool { return b.Stats().QueueOldestAge >= time.Minute })
	close(sink.block)
	eventually(t, "oldest age back to zero", func() bool { return b.Stats().QueueOldestAge == 0 })
}

func TestCodeCountersBound(t *testing.T) {
	var c codeCounters
	for i := range maxCodes + 10 {
		c.add(fmt.Sprint("code", i), 1)
	}
	c.add("code0", 2)
	s := c.snapshot()
	if len(s) != maxCodes+1 || s[otherCode] != 10 || s["code0"] != 3 {
		t.Fatalf("%d codes, other %d, code0 %d", len(s), s[otherCode], s["code0"])
	}
	if n := testing.AllocsPerRun(100, func() { c.add("code1", 1) }); n != 0 {
		t.Fatalf("add allocates %v times", n)
	}
}

func BenchmarkTypeGuardKnownFields(b *testing.B) {
	g := newTypeGuard(TypeGuardConfig{})
	r := telemetry.Reading{Measurement: "m", Fields: []telemetry.Field{{Name: "a", Value: telemetry.Float(1)}, {Name: "b", Value: telemetry.Int(2)}}}
	_ = g.check(&r)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := r
		r.Fields = []telemetry.Field{{Name: "a", Value: telemetry.Float(1)}, {Name: "b", Value: telemetry.Int(2)}}
		for pb.Next() {
			_ = g.check(&r)
		}
	})
}
