package bridge

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/telemetryd/telemetryd/telemetry"
)

// maxCodes bounds the distinct codes a codeCounters tracks. Codes come from
// our own packages (decoder and bridge), so there are about a dozen; the
// bound only guarantees a metric's label set cannot grow without limit.
const maxCodes = 64

// otherCode counts every code beyond maxCodes.
const otherCode = "other"

// codeCounters counts events by code (rejection reasons, for metrics).
// Counting a code seen before takes a read lock and does not allocate.
type codeCounters struct {
	mu sync.RWMutex
	m  map[string]*atomic.Uint64
}

func (c *codeCounters) add(code string, n uint64) {
	c.mu.RLock()
	ctr := c.m[code]
	c.mu.RUnlock()
	if ctr == nil {
		c.mu.Lock()
		if c.m == nil {
			c.m = map[string]*atomic.Uint64{}
		}
		if ctr = c.m[code]; ctr == nil {
			if len(c.m) >= maxCodes {
				code = otherCode
			}
			if ctr = c.m[code]; ctr == nil {
				ctr = new(atomic.Uint64)
				c.m[code] = ctr
			}
		}
		c.mu.Unlock()
	}
	ctr.Add(n)
}

// snapshot returns the counts by code.
func (c *codeCounters) snapshot() map[string]uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make(map[string]uint64, len(c.m))
	for k, v := range c.m {
		out[k] = v.Load()
	}
	return out
}

// DetailStats are the bridge's finer counters, for metrics and operators.
type DetailStats struct {
	// QueueCapacity is the write queue's bound in frames.
	QueueCapacity int
	// QueueOldestAge is how long ago the oldest frame accepted but not yet
	// written was received; 0 when nothing waits.
	QueueOldestAge time.Duration
	// RejectedByCode counts rejected readings by rejection code, the
	// decoder's, validation's and storage's alike.
	RejectedByCode map[string]uint64
	// WriteLatency is the duration of every storage write request,
	// retries and isolation writes included.
	WriteLatency telemetry.HistogramSnapshot
	// UnitsConverted counts field values converted to another unit.
	UnitsConverted uint64
	// TypeGuardFields is the number of measurement/field types remembered;
	// TypeGuardCoerced counts values converted to their field's type;
	// TypeGuardUntracked counts fields not remembered because the guard
	// was full (TypeGuardConfig.MaxFields).
	TypeGuardFields                      int
	TypeGuardCoerced, TypeGuardUntracked uint64
}

// detail is the Bridge's state behind DetailStats, plus the unit rules and
// the type guard that normalize uses.
type detail struct {
	units          *unitRules // immutable
	guard          *typeGuard // nil when disabled
	shapes         shapeMemo  // shape.go
	writeLatency   *telemetry.Histogram
	rejects        codeCounters
	unitsConverted atomic.Uint64
	oldest         atomic.Int64 // receive time (Unix ns) of the oldest unwritten frame; 0: none
}

func (b *Bridge) initDetail() {
	b.units = newUnitRules(b.cfg.Units)
	b.guard = newTypeGuard(b.cfg.Types)
	b.writeLatency = telemetry.NewHistogram()
}

func (b *Bridge) detailStats(queueCapacity int) DetailStats {
	s := DetailStats{
		QueueCapacity:  queueCapacity,
		RejectedByCode: b.rejects.snapshot(),
		WriteLatency:   b.writeLatency.Snapshot(),
		UnitsConverted: b.unitsConverted.Load(),
	}
	if at := b.oldestUnwritten(); at != 0 {
		s.QueueOldestAge = max(time.Since(time.Unix(0, at)), 0)
	}
	if b.guard != nil {
		s.TypeGuardFields = b.guard.fields()
		s.TypeGuardCoerced = b.guard.coerced.Load()
		s.TypeGuardUntracked = b.guard.untracked.Load()
	}
	return s
}
