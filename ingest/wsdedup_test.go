package ingest

import (
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/telemetry"
)

func TestDedup(t *testing.T) {
	d := newDedup(2, time.Minute)
	t0 := time.Unix(1000, 0)
	a := d.key("dev-1", 1, []byte(`{"seq":1,"v":1}`))
	b := d.key("dev-1", 1, []byte(`{"seq":1,"v":2}`)) // same seq, other bytes
	c := d.key("dev-2", 1, []byte(`{"seq":1,"v":1}`)) // same bytes, other device
	var waited []bool
	wait := func(stored bool, _ dedupAnswer) { waited = append(waited, stored) }
	check := func(k dedupKey, at time.Time) dedupVerdict { v, _ := d.check(k, at, wait); return v }
	steps := []struct {
		name string
		do   func() dedupVerdict
		want dedupVerdict
	}{
		{"new", func() dedupVerdict { return check(a, t0) }, dedupNew},
		{"resend while pending waits", func() dedupVerdict { return check(a, t0) }, dedupWaiting},
		{"other bytes are new", func() dedupVerdict { return check(b, t0) }, dedupNew},
		{"stored", func() dedupVerdict { d.done(a, true, nil); return check(a, t0.Add(time.Second)) }, dedupStored},
		{"failed is forgotten", func() dedupVerdict { d.done(b, false, nil); return check(b, t0) }, dedupNew},
		{"after the window", func() dedupVerdict { return check(a, t0.Add(2*time.Minute)) }, dedupNew},
		{"capacity evicts the oldest", func() dedupVerdict {
			d.done(a, true, nil)
			d.done(b, true, nil)
			check(c, t0.Add(2*time.Minute)) // evicts the oldest slot
			return check(b, t0.Add(2*time.Minute))
		}, dedupNew},
	}
	for _, st := range steps {
		if got := st.do(); got != st.want {
			t.Fatalf("%s: %v, want %v", st.name, got, st.want)
		}
	}
	if len(waited) != 1 || !waited[0] {
		t.Fatalf("waiters answered %v, want [true]", waited)
	}
	if len(d.entries) > 2+1 { // capacity, plus at most the pending ones
		t.Fatalf("%d entries for capacity 2", len(d.entries))
	}
}

// TestDedupRemembersRejections: a resend of a stored frame is answered
// like its original, rejections included; a frame with too many rejections
// to remember is forgotten once done.
func TestDedupRemembersRejections(t *testing.T) {
	d := newDedup(8, time.Minute)
	t0 := time.Unix(1000, 0)
	nop := func(bool, dedupAnswer) {}
	a := d.key("dev-1", 1, []byte(`a`))
	d.check(a, t0, nop)
	bad := []telemetry.Rejection{{Index: 1, Code: "invalid_value", Message: "NaN"}}
	refused := []telemetry.Rejection{{Index: 0, Code: "storage_rejected", Message: "type"}}
	d.rejected(a, bad)
	var got dedupAnswer
	d.check(a, t0, func(_ bool, ans dedupAnswer) { got = ans }) // a resend while pending
	d.done(a, true, refused)
	if len(got.rejected) != 1 || len(got.refused) != 1 {
		t.Fatalf("waiting resend answered %+v, want the original's rejections", got)
	}
	v, ans := d.check(a, t0.Add(time.Second), nop)
	if v != dedupStored || len(ans.rejected) != 1 || ans.rejected[0].Code != "invalid_value" || len(ans.refused) != 1 {
		t.Fatalf("resend of a stored frame: %v %+v", v, ans)
	}

	b := d.key("dev-1", 2, []byte(`b`))
	d.check(b, t0, nop)
	d.rejected(b, make([]telemetry.Rejection, maxDedupRejections+1))
	d.done(b, true, nil)
	if v, _ := d.check(b, t0, nop); v != dedupNew {
		t.Fatalf("a frame with too many rejections was remembered: %v", v)
	}
}
