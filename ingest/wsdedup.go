package ingest

import (
	"hash/maphash"
	"math/bits"
	"sync"
	"time"

	"github.com/telemetryd/telemetryd/telemetry"
)

// Resent frames (idempotency). A device that lost the ack of a frame —
// its connection dropped after the frame was sent — resends it after
// reconnecting. Readings with a device timestamp are idempotent in storage
// (same series and time: one point), but a reading without one gets the
// receive time, so its resend would be a second point. The endpoint
// therefore remembers, for a window, the frames it accepted: same device,
// same seq and the same bytes (a device that restarted its seq counter
// sends other bytes under an old seq, and is not confused with a resend).
// A resend of a frame already stored gets the original's answers (its
// ack, and the rejections of the readings that were refused) without being
// stored again; a resend of one still being written is answered like the
// original once its outcome is known (or not_stored); a resend of one that
// failed is consumed anew.
//
// Bound and policy: at most WSConfig.DedupEntries frames (default 65536)
// are remembered, for WSConfig.DedupWindow (default 5 min); when full, the
// oldest is forgotten first (a resend after that is stored again: the
// guarantee holds within the window and the capacity). Frames without seq
// are never remembered (they have no ack to lose). At most maxDedupWaiters
// resends wait on one pending original; more are consumed. The rejections
// of a frame that had some are kept beside the ring (most frames have
// none); a frame with more than maxDedupRejections is forgotten once its
// outcome is known, so that what is remembered stays small (its resend is
// consumed again).
//
// Layout: every accepted frame is checked here, so the memory is one
// pointer-free ring of entries in insertion order (the eviction order) and
// an open-addressed index into it (linear probing, backward-shift deletion:
// no tombstones, so lookups stay short under the constant insert/evict
// churn). Nothing is allocated per frame and the GC has nothing to scan. A
// frame is identified by its seq and a 64-bit hash of its device and bytes
// (the device's part hashed once per socket).
const (
	maxDedupWaiters    = 4
	maxDedupRejections = 64
)

// dedupAnswer is what an original frame was told besides its ack: the
// readings refused when it was consumed (validation) and those storage
// refused afterwards.
type dedupAnswer struct {
	rejected, refused []telemetry.Rejection
}

type dedupKey struct {
	seq uint64
	sum uint64 // maphash of the frame's bytes mixed with the device's hash and seq
}

// dedupEntry is one remembered frame, at ring position (gen-1) % capacity.
type dedupEntry struct {
	key    dedupKey
	at     time.Duration // since dedup.epoch
	gen    uint64        // insertion number, from 1; 0: empty
	stored bool          // the original is durable
	forget bool          // too many rejections to remember its answer
}

// dedupWaiter is a resend waiting for its pending original's outcome.
type dedupWaiter interface {
	resendDone(stored bool, a dedupAnswer)
}

type dedup struct {
	seed   maphash.Seed
	epoch  time.Time
	window time.Duration

	mu      sync.Mutex
	ring    []dedupEntry
	index   []uint64                 // 0: empty; else the hash's high 32 bits << 32 | ring position+1
	shift   uint                     // a tag's home position is tag >> shift
	gen     uint64                   // the last insertion number given
	waiters map[uint64][]dedupWaiter // by gen: pending originals that resends wait for (rare)
	answers map[uint64]dedupAnswer   // by gen: remembered frames that had rejections (rare)
}

func newDedup(capacity int, window time.Duration) *dedup {
	size := 1 << bits.Len(uint(2*capacity-1)) // ≥ 2×capacity: at most half full
	return &dedup{seed: maphash.MakeSeed(), epoch: time.Now(), window: window,
		ring: make([]dedupEntry, capacity), index: make([]uint64, size),
		shift: uint(32 - bits.TrailingZeros(uint(size))), waiters: map[uint64][]dedupWaiter{},
		answers: map[uint64]dedupAnswer{}}
}

// deviceSum is the device's part of its frames' keys (once per socket).
func (d *dedup) deviceSum(device telemetry.DeviceID) uint64 {
	return maphash.String(d.seed, string(device))
}

func (d *dedup) key(deviceSum, seq uint64, frame []byte) dedupKey {
	// The multiplies keep a device's sum from cancelling another's bytes,
	// and spread seqs over the index even where the bytes hash alike.
	return dedupKey{seq: seq, sum: maphash.Bytes(d.seed, frame) ^ deviceSum*0x9e3779b97f4a7c15 ^ seq*0xc2b2ae3d27d4eb4f}
}

// home is the index position where a key's probe starts: the top bits of
// its 32-bit tag (the index has at most 2^32 positions).
func (d *dedup) home(tag uint64) int { return int(tag >> d.shift) }

func tagOf(k dedupKey) uint64 { return k.sum >> 32 }

// find returns k's index position, or -1.
func (d *dedup) find(k dedupKey) int {
	tag, mask := tagOf(k), len(d.index)-1
	for i := d.home(tag); ; i = (i + 1) & mask {
		v := d.index[i]
		if v == 0 {
			return -1
		}
		if v>>32 == tag && d.ring[uint32(v)-1].key == k {
			return i
		}
	}
}

// unindex removes the index entry at position i, shifting the entries of
// its probe run back so that no lookup stops early.
func (d *dedup) unindex(i int) {
	mask := len(d.index) - 1
	for j := (i + 1) & mask; d.index[j] != 0; j = (j + 1) & mask {
		h := d.home(d.index[j] >> 32)
		// Move j into the hole i unless its home lies cyclically in (i, j].
		if (j > i && (h <= i || h > j)) || (j < i && h <= i && h > j) {
			d.index[i] = d.index[j]
			i = j
		}
	}
	d.index[i] = 0
}

// forget removes the entry at ring position pos from the index (if the
// index still points there: a newer entry of the same key may have
// replaced it) and empties it.
func (d *dedup) forget(pos int) {
	if e := &d.ring[pos]; e.gen != 0 {
		if i := d.find(e.key); i >= 0 && int(uint32(d.index[i]))-1 == pos {
			d.unindex(i)
		}
		if len(d.answers) > 0 {
			delete(d.answers, e.gen)
		}
		*e = dedupEntry{}
	}
}

// dedupVerdict says what to do with a frame.
type dedupVerdict int

const (
	dedupNew     dedupVerdict = iota // consume it; call done with the ticket and its outcome
	dedupStored                      // a resend of a stored frame: ack it
	dedupWaiting                     // a resend of a pending frame: w.resendDone is called with the outcome
)

// check looks k up at now. For a new frame it registers k as pending and
// returns its ticket for done (0: not remembered, nothing to call); for a
// resend of a pending frame it registers w; for a resend of a stored one it
// returns the original's answer.
func (d *dedup) check(k dedupKey, now time.Time, w dedupWaiter) (dedupVerdict, uint64, dedupAnswer) {
	at := now.Sub(d.epoch)
	d.mu.Lock()
	defer d.mu.Unlock()
	i := d.find(k)
	if i >= 0 {
		e := &d.ring[uint32(d.index[i])-1]
		if at-e.at <= d.window {
			if e.stored {
				var a dedupAnswer
				if len(d.answers) > 0 {
					a = d.answers[e.gen]
				}
				return dedupStored, 0, a
			}
			if ws := d.waiters[e.gen]; len(ws) < maxDedupWaiters {
				d.waiters[e.gen] = append(ws, w)
				return dedupWaiting, 0, dedupAnswer{}
			}
			return dedupNew, 0, dedupAnswer{} // consumed again, not remembered twice
		}
		// Expired: the new entry replaces it in the index; its ring
		// place is reused in its turn.
		d.unindex(i)
	}
	pos := int(d.gen % uint64(len(d.ring)))
	d.forget(pos) // the oldest; a pending one's waiters stay in d.waiters until its done
	d.gen++
	d.ring[pos] = dedupEntry{key: k, at: at, gen: d.gen}
	tag, mask := tagOf(k), len(d.index)-1
	j := d.home(tag)
	for d.index[j] != 0 {
		j = (j + 1) & mask
	}
	d.index[j] = tag<<32 | uint64(pos+1)
	return dedupNew, d.gen, dedupAnswer{}
}

// rejected records the readings refused when the original frame with
// ticket gen was consumed.
func (d *dedup) rejected(gen uint64, rs []telemetry.Rejection) {
	if gen == 0 || len(rs) == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	pos := int((gen - 1) % uint64(len(d.ring)))
	if e := &d.ring[pos]; e.gen == gen {
		if len(rs) > maxDedupRejections {
			e.forget = true
		}
		a := d.answers[gen]
		a.rejected = rs
		d.answers[gen] = a
	}
}

// done records the outcome of the original frame with ticket gen
// (refused: what storage refused of it) and answers the resends that
// waited for it. A failed frame is forgotten (a resend must be stored).
func (d *dedup) done(gen uint64, stored bool, refused []telemetry.Rejection) {
	if gen == 0 {
		return
	}
	d.mu.Lock()
	pos := int((gen - 1) % uint64(len(d.ring)))
	var answer dedupAnswer
	if e := &d.ring[pos]; e.gen == gen { // else evicted meanwhile
		if len(refused) > 0 {
			if len(refused) > maxDedupRejections {
				e.forget = true
			}
			a := d.answers[gen]
			a.refused = refused
			d.answers[gen] = a
		}
		if len(d.answers) > 0 {
			answer = d.answers[gen]
		}
		if stored && !e.forget {
			e.stored = true
		} else {
			d.forget(pos)
		}
	}
	var waiters []dedupWaiter
	if len(d.waiters) > 0 {
		if waiters = d.waiters[gen]; waiters != nil {
			delete(d.waiters, gen)
		}
	}
	d.mu.Unlock()
	for _, w := range waiters {
		w.resendDone(stored, answer)
	}
}

// remembered is how many frames the index holds (tests).
func (d *dedup) remembered() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, v := range d.index {
		if v != 0 {
			n++
		}
	}
	return n
}
