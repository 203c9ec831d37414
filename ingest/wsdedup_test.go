package ingest

import (
	"fmt"
	"github.com/telemetryd/telemetryd/telemetry"
	"math/rand/v2"
	"testing"
	"time"
)

type recordWaiter struct{ got *[]bool }

func (r recordWaiter) resendDone(stored bool, _ dedupAnswer) { *r.got = append(*r.got, stored) }

func TestDedup(t *testing.T) {
	d := newDedup(2, time.Minute)
	t0 := time.Unix(1000, 0)
	dev1, dev2 := d.deviceSum("dev-1"), d.deviceSum("dev-2")
	a := d.key(dev1, 1, []byte(`{"seq":1,"v":1}`))
	b := d.key(dev1, 1, []byte(`{"seq":1,"v":2}`)) // same seq, other bytes
	c := d.key(dev2, 1, []byte(`{"seq":1,"v":1}`)) // same bytes, other device
	var waited []bool
	wait := recordWaiter{&waited}
	tickets := map[dedupKey]uint64{}
	check := func(k dedupKey, at time.Time) dedupVerdict {
		v, ticket, _ := d.check(k, at, wait)
		if ticket != 0 {
			tickets[k] = ticket
		}
		return v
	}
	steps := []struct {
		name string
		do   func() dedupVerdict
		want dedupVerdict
	}{
		{"new", func() dedupVerdict { return check(a, t0) }, dedupNew},
		{"resend while pending waits", func() dedupVerdict { return check(a, t0) }, dedupWaiting},
		{"other bytes are new", func() dedupVerdict { return check(b, t0) }, dedupNew},
		{"stored", func() dedupVerdict { d.done(tickets[a], true, nil); return check(a, t0.Add(time.Second)) }, dedupStored},
		{"failed is forgotten", func() dedupVerdict { d.done(tickets[b], false, nil); return check(b, t0) }, dedupNew},
		{"after the window", func() dedupVerdict { return check(a, t0.Add(2*time.Minute)) }, dedupNew},
		{"capacity evicts the oldest", func() dedupVerdict {
			d.done(tickets[a], true, nil)
			d.done(tickets[b], true, nil)
			check(c, t0.Add(2*time.Minute)) // evicts the oldest slot
			return check(b, t0.Add(2*time.Minute))
		}, dedupNew},
		{"the newest is still remembered", func() dedupVerdict { return check(c, t0.Add(2*time.Minute)) }, dedupWaiting},
	}
	for _, st := range steps {
		if got := st.do(); got != st.want {
			t.Fatalf("%s: %v, want %v", st.name, got, st.want)
		}
	}
	if len(waited) != 1 || !waited[0] {
		t.Fatalf("waiters answered %v, want [true]", waited)
	}
	if n := d.remembered(); n > 2 {
		t.Fatalf("%d entries for capacity 2", n)
	}
}

// TestDedupChurn runs a small dedup far beyond its capacity with frames
// resent, stored, failed and left pending in random order, against a model
// of its contract: a frame is remembered while it is among the last
// capacity accepted and has not failed. (The index's backward-shift
// deletion must never lose an entry a lookup needs, nor keep one.)
func TestDedupChurn(t *testing.T) {
	const capacity = 37
	d := newDedup(capacity, time.Hour)
	now := time.Unix(5000, 0)
	devs := []uint64{d.deviceSum("dev-1"), d.deviceSum("dev-2")}
	type entry struct {
		k       dedupKey
		ticket  uint64
		state   int // 0 pending, 1 stored, 2 failed
		waiters int
	}
	var model []*entry // every accepted frame, in order
	var answers []bool
	w := recordWaiter{&answers}
	rng := rand.New(rand.NewPCG(1, 2))
	waited := 0
	for i := range 20000 {
		seq := uint64(rng.IntN(40))
		k := d.key(devs[rng.IntN(2)], seq, fmt.Appendf(nil, `{"seq":%d,"v":%d}`, seq, rng.IntN(2)))
		var hit *entry
		for _, e := range model[max(0, len(model)-capacity):] {
			if e.k == k && e.state != 2 {
				hit = e
			}
		}
		v, ticket, _ := d.check(k, now, w)
		switch {
		case hit != nil && hit.state == 1:
			if v != dedupStored {
				t.Fatalf("frame %d: %v, want stored", i, v)
			}
		case hit != nil && hit.waiters < maxDedupWaiters:
			if v != dedupWaiting {
				t.Fatalf("frame %d: %v, want waiting", i, v)
			}
			hit.waiters++
		case hit != nil:
			if v != dedupNew || ticket != 0 {
				t.Fatalf("frame %d: %v (ticket %d), want new and not remembered", i, v, ticket)
			}
		default:
			if v != dedupNew || ticket == 0 {
				t.Fatalf("frame %d: %v (ticket %d), want new", i, v, ticket)
			}
			model = append(model, &entry{k: k, ticket: ticket})
		}
		// Complete a random pending frame now and then, the newest often.
		if rng.IntN(2) == 0 && len(model) > 0 {
			e := model[len(model)-1-rng.IntN(min(len(model), 2*capacity))]
			if e.state == 0 {
				stored := rng.IntN(4) != 0
				before := len(answers)
				d.done(e.ticket, stored, nil)
				if got := len(answers) - before; got != e.waiters {
					t.Fatalf("frame %d: done answered %d waiters, want %d", i, got, e.waiters)
				}
				waited += e.waiters
				e.state = 2
				if stored {
					e.state = 1
				}
			}
		}
	}
	if waited == 0 {
		t.Fatal("no resend waited: the test exercised nothing")
	}
	if n := d.remembered(); n > capacity {
		t.Fatalf("%d remembered for capacity %d", n, capacity)
	}
}

// BenchmarkDedup is one accepted frame's dedup work at capacity: its key,
// the check (evicting the oldest) and its done.
func BenchmarkDedup(b *testing.B) {
	d := newDedup(65536, time.Minute)
	dev := d.deviceSum("dev-1")
	frame := []byte(`{"seq":123456,"ts":1700000000000,"measurement":"env","tags":{"site":"a"},"metrics":{"t":21.5,"h":40}}`)
	now := time.Now()
	b.ReportAllocs()
	for i := range b.N {
		k := d.key(dev, uint64(i), frame)
		_, ticket, _ := d.check(k, now, nil)
		d.done(ticket, true, nil)
	}
}

type answerWaiter struct{ got *dedupAnswer }

func (w answerWaiter) resendDone(_ bool, a dedupAnswer) { *w.got = a }

// TestDedupRemembersRejections: a resend of a stored frame is answered
// like its original, rejections included; a frame with too many rejections
// to remember is forgotten once done.
func TestDedupRemembersRejections(t *testing.T) {
	d := newDedup(8, time.Minute)
	t0 := time.Unix(1000, 0)
	dev := d.deviceSum("dev-1")
	a := d.key(dev, 1, []byte(`a`))
	_, ticket, _ := d.check(a, t0, nil)
	bad := []telemetry.Rejection{{Index: 1, Code: "invalid_value", Message: "NaN"}}
	refused := []telemetry.Rejection{{Index: 0, Code: "storage_rejected", Message: "type"}}
	d.rejected(ticket, bad)
	var got dedupAnswer
	if v, _, _ := d.check(a, t0, answerWaiter{&got}); v != dedupWaiting { // a resend while pending
		t.Fatalf("resend while pending: %v", v)
	}
	d.done(ticket, true, refused)
	if len(got.rejected) != 1 || len(got.refused) != 1 {
		t.Fatalf("waiting resend answered %+v, want the original's rejections", got)
	}
	v, _, ans := d.check(a, t0.Add(time.Second), nil)
	if v != dedupStored || len(ans.rejected) != 1 || ans.rejected[0].Code != "invalid_value" || len(ans.refused) != 1 {
		t.Fatalf("resend of a stored frame: %v %+v", v, ans)
	}

	b := d.key(dev, 2, []byte(`b`))
	_, tb, _ := d.check(b, t0, nil)
	d.rejected(tb, make([]telemetry.Rejection, maxDedupRejections+1))
	d.done(tb, true, nil)
	if v, _, _ := d.check(b, t0, nil); v != dedupNew {
		t.Fatalf("a frame with too many rejections was remembered: %v", v)
	}
	// Evicting a remembered frame drops its answer too.
	for i := uint64(10); i < 30; i++ {
		_, tk, _ := d.check(d.key(dev, i, []byte(`x`)), t0, nil)
		d.done(tk, true, nil)
	}
	if len(d.answers) != 0 {
		t.Fatalf("%d answers kept after their frames were evicted", len(d.answers))
	}
}
