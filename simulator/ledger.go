package simulator

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Rejection codes the simulator knows (the service's device protocol); a
// code outside this list is recorded as codeOther and named in the report.
var knownCodes = [numCodes]string{
	"",
	"invalid_payload", "too_many_readings",
	"invalid_value", "invalid_name", "invalid_tag", "invalid_timestamp", "invalid_reading",
	"timestamp_in_future", "no_fields", "forbidden_device", "type_conflict", "storage_rejected",
	"tag_field_conflict", "other",
}

const (
	codeOther = uint8(14)
	numCodes  = 15
)

func codeIndex(code string) uint8 {
	for i, c := range knownCodes {
		if c == code && i > 0 {
			return uint8(i)
		}
	}
	return codeOther
}

// expectedCode is the code the service must answer for a reading with
// fault k (on a transport that answers; see the package documentation).
func expectedCode(k FaultKind) string {
	switch k {
	case FaultMalformed:
		return "invalid_payload"
	case FaultInvalid:
		return "invalid_value"
	case FaultSkew:
		return "timestamp_in_future"
	}
	return ""
}

// rec is what the simulator knows about one reading. Times are Unix ns.
type rec struct {
	ts     int64 // device timestamp
	sent   int64 // first send; 0 = never sent
	acked  int64 // first ack (WebSocket ack or MQTT PUBACK); 0 = not acked
	live   int64 // first seen on /v1/live
	fault  FaultKind
	code   uint8 // rejection code index; 0 = not rejected
	stored bool
}

// source is one reporting identity — a device on its own or a gateway's
// child — with its signal generator and the ledger of its readings,
// indexed by sim_seq-1-base.
type source struct {
	id     string
	name   string
	index  int // position in the fleet, for profile assignment
	gen    generator
	lastTS int64

	mu   sync.Mutex // guards the rest: the sender, its connection's reader and the live watcher all touch it
	recs []rec
	// Without verification, readings settled long enough ago are folded
	// into done and dropped from recs (base counts them), so that a run
	// of any length keeps bounded memory.
	base uint32
	done tally
}

// tally counts settled readings that the ledger no longer keeps.
type tally struct {
	sent, valid, faulty, acked, rejected uint64
	injected, confirmed, unverified      [numFaults]uint64
	expected                             [numCodes]uint64 // rejections a fault asked for, by code
}

// compactAfter is how long after its ack a settled reading is kept, for
// rejections that follow the ack.
const compactAfter = 10 * time.Second

// compact folds the settled prefix of the ledger into done. Only without
// verification: the dashboard and storage checks need every record.
func (s *source) compact(now int64, mqtt bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for ; n < len(s.recs); n++ {
		x := &s.recs[n]
		if x.sent == 0 || x.acked == 0 || now-x.acked < int64(compactAfter) {
			break
		}
		want := expectedCode(x.fault)
		switch {
		case x.fault == FaultNone && x.code == 0:
			s.done.valid++
			s.done.acked++
		case x.fault != FaultNone && x.code != 0 && knownCodes[x.code] == want:
			s.done.faulty++
			s.done.rejected++
			s.done.injected[x.fault]++
			s.done.confirmed[x.fault]++
			s.done.expected[x.code]++
		case x.fault != FaultNone && x.code == 0 && mqtt:
			s.done.faulty++
			s.done.injected[x.fault]++
			s.done.unverified[x.fault]++
		default:
			goto stop // anything else is for the report to list
		}
		s.done.sent++
	}
stop:
	if n > 0 {
		s.recs = s.recs[n:]
		s.base += uint32(n)
	}
}

func newSource(id, name string, index int, profile string, seed uint64) *source {
	rng := rand.New(rand.NewPCG(seed, uint64(index)<<1|1))
	return &source{id: id, name: name, index: index, gen: newGenerator(profile, index, rng)}
}

// add records a new reading at ts and returns its sim_seq.
func (s *source) add(ts int64, fault FaultKind) uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs = append(s.recs, rec{ts: ts, fault: fault})
	return s.base + uint32(len(s.recs))
}

// nextTS returns a device timestamp for now, strictly after the last one,
// so that no two readings of a series collide in storage.
func (s *source) nextTS(now time.Time) int64 {
	ts := max(now.UnixNano(), s.lastTS+1)
	s.lastTS = ts
	return ts
}

func (s *source) update(seq uint32, f func(r *rec)) {
	s.mu.Lock()
	if i := int(seq) - 1 - int(s.base); i >= 0 && i < len(s.recs) {
		f(&s.recs[i])
	}
	s.mu.Unlock()
}

// counters are the run's live totals (progress line and report).
type counters struct {
	connected, buffered                           atomic.Int64
	framesSent, framesResent, framesAcked         atomic.Uint64
	readingsSent, readingsAcked, readingsRejected atomic.Uint64
	duplicatesSent, skipped, lateAcks, liveSeen   atomic.Uint64
	errors, unattributed, unknownRejections       atomic.Uint64
	connects, disconnects, dialFailures           atomic.Uint64
	authFailures, revoked                         atomic.Uint64
	overloaded, notStored, rateLimited, shutdowns atomic.Uint64
	faultInjected, faultConfirmed                 [numFaults]atomic.Uint64
	closeCodes                                    sync.Map // uint16 → *atomic.Uint64
	otherCodes                                    sync.Map // string → *atomic.Uint64
	ackWS, ackMQTT, live                          hist
}

func incr(m *sync.Map, k any) {
	v, _ := m.LoadOrStore(k, new(atomic.Uint64))
	v.(*atomic.Uint64).Add(1)
}

func (c *counters) closeCode(code uint16) { incr(&c.closeCodes, code) }
