package bridge

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"

	"github.com/telemetryd/telemetryd/telemetry"
)

// CodeTypeConflict rejects a reading with a field whose value cannot be
// stored as the type InfluxDB already holds for that measurement and field.
const CodeTypeConflict = "type_conflict"

// FieldTypeSource reports the field types a store already holds:
// measurement → field → "float", "integer", "boolean" or "string" (other
// names, such as 1.x "unsigned", are ignored). The bridge seeds its type
// guard from it at start.
type FieldTypeSource interface {
	FieldTypes(ctx context.Context) (map[string]map[string]string, error)
}

// TypeGuardConfig configures the field-type guard. InfluxDB fixes a field's
// type on first write and refuses other types afterwards; worse, two lines
// of one batch that disagree on a new field make it refuse the whole batch.
// The guard remembers the first type seen per measurement and field (seeded
// from the store with SeedFieldTypes) and coerces or rejects later values
// before they reach storage:
//
//	field is  value is               result
//	float     integer                stored as float
//	integer   float with int value   stored as integer (3.0 → 3)
//	integer   float with a fraction  rejected: type_conflict
//	any       bool/string/other      rejected: type_conflict (unless equal)
type TypeGuardConfig struct {
	// Disabled turns the guard off: conflicts then reach InfluxDB, which
	// refuses the offending lines (storage_rejected, found by the bridge's
	// one-frame-then-one-line retry).
	Disabled bool
	// Declared pins field types before any value is seen, by measurement
	// ("*": every measurement) and field. A type the store already holds
	// wins over a declaration (the store cannot change it).
	Declared map[string]map[string]telemetry.Kind
	// MaxFields bounds the measurement/field pairs remembered (default
	// 100000). Beyond it new pairs are not remembered — their declared type
	// is still enforced — and are counted in Stats.TypeGuardUntracked; a
	// conflict among them falls back to the store's refusal, isolated to
	// the offending line as with Disabled.
	MaxFields int
}

// typeGuard is safe for concurrent use. Lookups take a read lock and do not
// allocate; remembering a new field takes the write lock.
type typeGuard struct {
	declared map[string]map[string]telemetry.Kind // immutable
	max      int

	mu    sync.RWMutex
	known map[string]map[string]telemetry.Kind
	n     int
	// gen counts the times remembered types were replaced (seed); written
	// under mu. Remembering a new pair changes no type already read, so
	// it does not count: see shapeMemo.
	gen atomic.Uint64

	coerced, untracked atomic.Uint64
}

func newTypeGuard(c TypeGuardConfig) *typeGuard {
	if c.Disabled {
		return nil
	}
	if c.MaxFields <= 0 {
		c.MaxFields = 100000
	}
	return &typeGuard{declared: c.Declared, max: c.MaxFields, known: map[string]map[string]telemetry.Kind{}}
}

// kindOf maps InfluxDB's type names to kinds.
func kindOf(influxType string) (telemetry.Kind, bool) {
	switch influxType {
	case "float":
		return telemetry.KindFloat, true
	case "integer":
		return telemetry.KindInt, true
	case "boolean":
		return telemetry.KindBool, true
	case "string":
		return telemetry.KindString, true
	}
	return telemetry.KindInvalid, false
}

// seed records the store's field types; they replace what was remembered
// (the store is the truth). It returns the pairs that disagree with a
// declaration, for the caller to log.
func (g *typeGuard) seed(types map[string]map[string]string) (conflicts []string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gen.Add(1)
	for meas, fields := range types {
		for field, typ := range fields {
			k, ok := kindOf(typ)
			if !ok {
				continue
			}
			if d, ok := g.declaredKind(meas, field); ok && d != k {
				conflicts = append(conflicts, fmt.Sprintf("%s.%s is %s in storage but declared %s", meas, field, k, d))
			}
			g.rememberLocked(meas, field, k)
		}
	}
	return conflicts
}

func (g *typeGuard) declaredKind(meas, field string) (telemetry.Kind, bool) {
	if k, ok := g.declared[meas][field]; ok {
		return k, true
	}
	k, ok := g.declared["*"][field]
	return k, ok
}

// rememberLocked records (meas, field) → k unless the table is full.
// It reports whether the pair is now known.
func (g *typeGuard) rememberLocked(meas, field string, k telemetry.Kind) bool {
	m := g.known[meas]
	if _, ok := m[field]; ok {
		m[field] = k
		return true
	}
	if g.n >= g.max {
		return false
	}
	if m == nil {
		m = map[string]telemetry.Kind{}
		g.known[meas] = m
	}
	m[field] = k
	g.n++
	return true
}

// fields is the number of measurement/field pairs remembered.
func (g *typeGuard) fields() int {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.n
}

// check coerces r's fields to their remembered (or declared) types, or
// rejects r. Fields seen for the first time are remembered, but only once
// the whole reading passed, so a rejected reading teaches the guard nothing.
func (g *typeGuard) check(r *telemetry.Reading) *rejectError {
	unknown := false
	g.mu.RLock()
	m := g.known[r.Measurement]
	for i := range r.Fields {
		f := &r.Fields[i]
		want, ok := m[f.Name]
		if !ok {
			if want, ok = g.declaredKind(r.Measurement, f.Name); !ok {
				unknown = true
				continue
			}
			unknown = true // declared, not yet remembered
		}
		if rej := g.coerce(f, want); rej != nil {
			g.mu.RUnlock()
			return rej
		}
	}
	g.mu.RUnlock()
	if !unknown {
		return nil
	}
	// Remember the new pairs. Another reading may have taught the guard a
	// different type in the meantime: check again under the write lock.
	g.mu.Lock()
	defer g.mu.Unlock()
	for i := range r.Fields {
		f := &r.Fields[i]
		if want, ok := g.known[r.Measurement][f.Name]; ok {
			if rej := g.coerce(f, want); rej != nil {
				return rej
			}
			continue
		}
		if !g.rememberLocked(r.Measurement, f.Name, f.Value.Kind()) {
			g.untracked.Add(1)
		}
	}
	return nil
}

// kindsOf returns the remembered type of each of r's fields and the
// generation they were read at; ok is false unless every field has one.
func (g *typeGuard) kindsOf(r *telemetry.Reading) (kinds []telemetry.Kind, gen uint64, ok bool) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	m := g.known[r.Measurement]
	kinds = make([]telemetry.Kind, len(r.Fields))
	for i := range r.Fields {
		if kinds[i], ok = m[r.Fields[i].Name]; !ok {
			return nil, 0, false
		}
	}
	return kinds, g.gen.Load(), true
}

// coerce converts f's value to kind want where no information is lost.
func (g *typeGuard) coerce(f *telemetry.Field, want telemetry.Kind) *rejectError {
	have := f.Value.Kind()
	if have == want {
		return nil
	}
	switch {
	case want == telemetry.KindFloat && have == telemetry.KindInt:
		f.Value = telemetry.Float(f.Value.AsFloat())
		g.coerced.Add(1)
		return nil
	case want == telemetry.KindInt && have == telemetry.KindFloat:
		// 2^63 itself is not an int64: the upper bound is exclusive.
		if x := f.Value.AsFloat(); x == math.Trunc(x) && x >= math.MinInt64 && x < math.MaxInt64 {
			f.Value = telemetry.Int(int64(x))
			g.coerced.Add(1)
			return nil
		}
	}
	return reject(CodeTypeConflict, "field %q is stored as %s; %s %v cannot be stored as %s", f.Name, want, have, f.Value, want)
}

// SeedFieldTypes loads the field types src already holds into the type
// guard, so that the first values after a restart meet the stored types,
// not whatever a device happens to send first. Call it before traffic
// flows; it may be called again (the store's types replace remembered
// ones). Declarations that disagree with the store are logged: the store wins.
func (b *Bridge) SeedFieldTypes(ctx context.Context, src FieldTypeSource) error {
	if b.guard == nil {
		return nil
	}
	types, err := src.FieldTypes(ctx)
	if err != nil {
		return fmt.Errorf("bridge: seed field types: %w", err)
	}
	for _, c := range b.guard.seed(types) {
		b.log.Warn("declared field type ignored", "conflict", c)
	}
	b.log.Info("field types loaded from storage", "fields", b.guard.fields())
	return nil
}
