package bridge

import (
	"sync/atomic"

	"github.com/telemetryd/telemetryd/telemetry"
)

// shapeMemo remembers the shapes of recent readings — the measurement and
// the field names, in order — that passed normalize's name checks and
// whose fields all have a type in the guard. A device sends the same
// fields in every reading, so most readings match a remembered shape: they
// then skip the name checks and the guard's map lookups (and its lock),
// at the cost of one string compare per name, which the decoder's interned
// names make mostly a length and pointer check.
//
// It is safe for concurrent use and never blocks: a slot holds an
// immutable shape behind an atomic pointer. A shape is valid only for the
// guard generation it was read at, so the store's types replacing the
// guard's (seed) retire every shape at once.
type shapeMemo struct {
	slots  [shapeSlots]atomic.Pointer[shape]
	misses atomic.Uint32
}

// shapeSlots is the memo's size: direct-mapped, a power of two.
const shapeSlots = 64

// shape is one remembered reading shape.
type shape struct {
	gen         uint64
	measurement string
	names       []string
	kinds       []telemetry.Kind // the guard's type per name; nil without a guard
}

// shapeSlot picks r's slot from lengths and one byte: hashing the names
// would cost what the memo saves. r has a first field with a name.
func shapeSlot(r *telemetry.Reading) int {
	fs := r.Fields
	h := len(r.Measurement)*131 + len(fs)*31 + len(fs[0].Name)*7 + len(fs[len(fs)-1].Name) + int(fs[0].Name[0])
	return h & (shapeSlots - 1)
}

// lookup returns r's remembered shape at guard generation gen, or nil.
// Fields with a unit never match: unit conversion may rename or add them.
func (m *shapeMemo) lookup(r *telemetry.Reading, gen uint64) *shape {
	if len(r.Fields) == 0 || r.Fields[0].Name == "" {
		return nil
	}
	s := m.slots[shapeSlot(r)].Load()
	if s == nil || s.gen != gen || len(s.names) != len(r.Fields) || s.measurement != r.Measurement {
		return nil
	}
	for i := range r.Fields {
		if f := &r.Fields[i]; f.Name != s.names[i] || f.Unit != "" {
			return nil
		}
	}
	return s
}

// remember records r's shape, which passed every check, with kinds (nil
// without a guard) read at generation gen. A slot held by another live
// shape is taken over only on every eighth miss, so that two shapes that
// share a slot do not cost an allocation per reading.
func (m *shapeMemo) remember(r *telemetry.Reading, gen uint64, kinds []telemetry.Kind) {
	if len(r.Fields) == 0 || r.Fields[0].Name == "" {
		return
	}
	for i := range r.Fields {
		if r.Fields[i].Unit != "" {
			return
		}
	}
	slot := &m.slots[shapeSlot(r)]
	if old := slot.Load(); old != nil && old.gen == gen && m.misses.Add(1)&7 != 0 {
		return
	}
	names := make([]string, len(r.Fields))
	for i := range r.Fields {
		names[i] = r.Fields[i].Name
	}
	slot.Store(&shape{gen: gen, measurement: r.Measurement, names: names, kinds: kinds})
}
