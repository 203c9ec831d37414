package bridge

import (
	"context"
	"log/slog"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/telemetry"
)

// TestShapeMemo: a reading whose shape the memo remembers (the teacher's)
// gets every check a first reading gets — values, coercion, conflicts —
// and a reading that only looks alike (same lengths, same slot) is checked
// in full.
func TestShapeMemo(t *testing.T) {
	f := func(name string, v telemetry.Value) telemetry.Field { return telemetry.Field{Name: name, Value: v} }
	tests := []struct {
		name      string
		guard     bool
		teacher   []telemetry.Field
		probe     []telemetry.Field
		wantCode  string
		wantValue telemetry.Value // of the probe's first field, when accepted
	}{
		{"hit: integer stored as float", true, []telemetry.Field{f("x", telemetry.Float(1.5))}, []telemetry.Field{f("x", telemetry.Int(2))}, "", telemetry.Float(2)},
		{"hit: bool refused by a float field", true, []telemetry.Field{f("x", telemetry.Float(1.5))}, []telemetry.Field{f("x", telemetry.Bool(true))}, CodeTypeConflict, telemetry.Value{}},
		{"hit: NaN refused", true, []telemetry.Field{f("x", telemetry.Float(1.5))}, []telemetry.Field{f("x", telemetry.Float(math.NaN()))}, CodeInvalidValue, telemetry.Value{}},
		{"hit without a guard", false, []telemetry.Field{f("x", telemetry.Float(1.5))}, []telemetry.Field{f("x", telemetry.Bool(true))}, "", telemetry.Bool(true)},
		{"same lengths, invalid name", true, []telemetry.Field{f("ab", telemetry.Float(1))}, []telemetry.Field{f("a,", telemetry.Float(1))}, CodeInvalidName, telemetry.Value{}},
		{"same lengths, reserved name", true, []telemetry.Field{f("tame", telemetry.Float(1))}, []telemetry.Field{f("time", telemetry.Float(1))}, CodeInvalidName, telemetry.Value{}},
		{"same lengths, repeated name", true, []telemetry.Field{f("a", telemetry.Float(1)), f("b", telemetry.Float(1))}, []telemetry.Field{f("a", telemetry.Float(1)), f("a", telemetry.Float(1))}, CodeInvalidName, telemetry.Value{}},
		{"same lengths, new field of another type", true, []telemetry.Field{f("a", telemetry.Float(1)), f("b", telemetry.Float(1))}, []telemetry.Field{f("a", telemetry.Float(1)), f("c", telemetry.String("s"))}, "", telemetry.Float(1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{}
			cfg.Types.Disabled = !tt.guard
			b := New(cfg, nil, nil, slog.New(slog.DiscardHandler))
			now := time.Now()
			teacher := telemetry.Reading{Measurement: "m", Fields: tt.teacher}
			if rej := b.normalize(&teacher, "d", now, new(tagArena)); rej != nil {
				t.Fatalf("teacher rejected: %v", rej)
			}
			var gen uint64
			if b.guard != nil {
				gen = b.guard.gen.Load()
			}
			again := telemetry.Reading{Measurement: "m", Fields: append([]telemetry.Field(nil), tt.teacher...)}
			if b.shapes.lookup(&again, gen) == nil {
				t.Fatal("the teacher's shape is not remembered: the probe would not test the memo")
			}
			probe := telemetry.Reading{Measurement: "m", Fields: tt.probe}
			rej := b.normalize(&probe, "d", now, new(tagArena))
			switch {
			case tt.wantCode == "" && rej != nil:
				t.Fatalf("probe rejected: %v", rej)
			case tt.wantCode != "" && (rej == nil || rej.code != tt.wantCode):
				t.Fatalf("probe: got %v, want %s", rej, tt.wantCode)
			case rej == nil && probe.Fields[0].Value != tt.wantValue:
				t.Fatalf("probe value %v (%s), want %v (%s)", probe.Fields[0].Value, probe.Fields[0].Value.Kind(), tt.wantValue, tt.wantValue.Kind())
			}
		})
	}
}

// TestShapeMemoRetiredBySeed: types loaded from the store replace what the
// guard remembered, and a remembered shape must not outlive them.
func TestShapeMemoRetiredBySeed(t *testing.T) {
	b := New(Config{}, nil, nil, slog.New(slog.DiscardHandler))
	now := time.Now()
	r := telemetry.Reading{Measurement: "m", Fields: []telemetry.Field{{Name: "x", Value: telemetry.Float(1.5)}}}
	if rej := b.normalize(&r, "d", now, new(tagArena)); rej != nil {
		t.Fatal(rej)
	}
	if err := b.SeedFieldTypes(context.Background(), fakeTypes{types: map[string]map[string]string{"m": {"x": "integer"}}}); err != nil {
		t.Fatal(err)
	}
	r = telemetry.Reading{Measurement: "m", Fields: []telemetry.Field{{Name: "x", Value: telemetry.Float(1.5)}}}
	if rej := b.normalize(&r, "d", now, new(tagArena)); rej == nil || rej.code != CodeTypeConflict {
		t.Fatalf("1.5 into an integer field after seeding: %v", rej)
	}
}

// TestShapeMemoUnits: a field with a unit never matches a shape — its
// conversion may add a field the shape does not have — even when the same
// names came without units before.
func TestShapeMemoUnits(t *testing.T) {
	b := New(Config{Units: UnitConfig{KeepOriginal: true}}, nil, nil, slog.New(slog.DiscardHandler))
	now := time.Now()
	plain := telemetry.Reading{Measurement: "m", Fields: []telemetry.Field{{Name: "t", Value: telemetry.Float(21)}}}
	if rej := b.normalize(&plain, "d", now, new(tagArena)); rej != nil {
		t.Fatal(rej)
	}
	for range 3 {
		r := telemetry.Reading{Measurement: "m", Fields: []telemetry.Field{{Name: "t", Value: telemetry.Float(212), Unit: "degF"}}}
		if rej := b.normalize(&r, "d", now, new(tagArena)); rej != nil {
			t.Fatal(rej)
		}
		if got := r.Fields[0].Value.AsFloat(); got != 100 || r.Fields[0].Unit != "Cel" || len(r.Fields) != 2 {
			t.Fatalf("212 degF became %v %s, fields %v", got, r.Fields[0].Unit, r.Fields)
		}
	}
}

// TestShapeMemoConcurrent runs many shapes that share slots from several
// goroutines (for the race detector), each reading checked in full or
// against its own shape.
func TestShapeMemoConcurrent(t *testing.T) {
	b := New(Config{}, nil, nil, slog.New(slog.DiscardHandler))
	now := time.Now()
	names := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				name := names[(i+w)%len(names)]
				valid := telemetry.Reading{Measurement: "m", Fields: []telemetry.Field{{Name: name, Value: telemetry.Float(1)}}}
				if rej := b.normalize(&valid, "d", now, new(tagArena)); rej != nil {
					t.Errorf("%s: %v", name, rej)
					return
				}
				conflict := telemetry.Reading{Measurement: "m", Fields: []telemetry.Field{{Name: name, Value: telemetry.String("s")}}}
				if rej := b.normalize(&conflict, "d", now, new(tagArena)); rej == nil || rej.code != CodeTypeConflict {
					t.Errorf("%s: string into a float field: %v", name, rej)
					return
				}
			}
		})
	}
	wg.Wait()
}
