package ingest

import (
	"hash/maphash"
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
// stored again; a resend of one still being written is answered with the
// original's outcome once it is known (the same answers, or not_stored); a
// resend of one that failed is consumed anew.
//
// Bound and policy: at most WSConfig.DedupEntries frames (default 65536)
// are remembered, for WSConfig.DedupWindow (default 5 min); when full, the
// oldest is forgotten first (a resend after that is stored again: the
// guarantee holds within the window and the capacity). Frames without seq
// are never remembered (they have no ack to lose). At most maxDedupWaiters
// resends wait on one pending original; more are consumed. A frame with
// more than maxDedupRejections refused readings is forgotten once its
// outcome is known, so that remembered answers stay small (its resend is
// consumed again).
const (
	maxDedupWaiters    = 4
	maxDedupRejections = 64
)

// dedupAnswer is what an original frame was answered: the readings refused
// when it was consumed (validation) and those storage refused afterwards.
type dedupAnswer struct {
	rejected, refused []telemetry.Rejection
}

type dedupKey struct {
	device telemetry.DeviceID
	seq    uint64
	sum    uint64 // maphash of the frame's bytes
}

type dedupEntry struct {
	at      time.Time
	stored  bool // the original is durable
	answer  dedupAnswer
	forget  bool                               // too many rejections to remember
	waiters []func(stored bool, a dedupAnswer) // resends waiting for a pending original
}

type dedup struct {
	seed   maphash.Seed
	window time.Duration

	mu      sync.Mutex
	entries map[dedupKey]*dedupEntry
	ring    []dedupKey // insertion order, for eviction; len == capacity
	next    int
}

func newDedup(capacity int, window time.Duration) *dedup {
	return &dedup{seed: maphash.MakeSeed(), window: window,
		entries: make(map[dedupKey]*dedupEntry), ring: make([]dedupKey, capacity)}
}

func (d *dedup) key(device telemetry.DeviceID, seq uint64, frame []byte) dedupKey {
	return dedupKey{device: device, seq: seq, sum: maphash.Bytes(d.seed, frame)}
}

// dedupVerdict says what to do with a frame.
type dedupVerdict int

const (
	dedupNew     dedupVerdict = iota // consume it; call done with its outcome
	dedupStored                      // a resend of a stored frame: ack it
	dedupWaiting                     // a resend of a pending frame: wait is called with the outcome
)

// check looks k up at now. For a new frame it registers k as pending;
// for a resend of a pending frame it registers wait; for a resend of a
// stored one it returns the original's answer.
func (d *dedup) check(k dedupKey, now time.Time, wait func(stored bool, a dedupAnswer)) (dedupVerdict, dedupAnswer) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e := d.entries[k]; e != nil && now.Sub(e.at) <= d.window {
		if e.stored {
			return dedupStored, e.answer
		}
		if len(e.waiters) < maxDedupWaiters {
			e.waiters = append(e.waiters, wait)
			return dedupWaiting, dedupAnswer{}
		}
		return dedupNew, dedupAnswer{} // consumed again, not remembered twice
	}
	if old := d.ring[d.next]; old != (dedupKey{}) {
		if e := d.entries[old]; e != nil && e.stored {
			delete(d.entries, old)
		} else if e != nil {
			// A pending entry is kept until its outcome; only its
			// place in the ring is reused.
			e.at = time.Time{}
		}
	}
	d.ring[d.next] = k
	d.next = (d.next + 1) % len(d.ring)
	d.entries[k] = &dedupEntry{at: now}
	return dedupNew, dedupAnswer{}
}

// rejected records the readings refused when the original frame k was
// consumed.
func (d *dedup) rejected(k dedupKey, rs []telemetry.Rejection) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e := d.entries[k]; e != nil {
		if len(rs) > maxDedupRejections {
			e.forget = true
		}
		e.answer.rejected = rs
	}
}

// done records the outcome of the original frame k (refused: what storage
// refused of it) and answers the resends that waited for it. A failed frame
// is forgotten (a resend must be stored).
func (d *dedup) done(k dedupKey, stored bool, refused []telemetry.Rejection) {
	d.mu.Lock()
	e := d.entries[k]
	if e == nil {
		d.mu.Unlock()
		return
	}
	waiters := e.waiters
	e.waiters = nil
	e.answer.refused = refused
	if len(refused) > maxDedupRejections {
		e.forget = true
	}
	answer := e.answer
	if stored && !e.at.IsZero() && !e.forget {
		e.stored = true
	} else {
		delete(d.entries, k)
	}
	d.mu.Unlock()
	for _, w := range waiters {
		w(stored, answer)
	}
}
