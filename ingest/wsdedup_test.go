package ingest

import (
	"testing"
	"time"
)

func TestDedup(t *testing.T) {
	d := newDedup(2, time.Minute)
	t0 := time.Unix(1000, 0)
	a := d.key("dev-1", 1, []byte(`{"seq":1,"v":1}`))
	b := d.key("dev-1", 1, []byte(`{"seq":1,"v":2}`)) // same seq, other bytes
	c := d.key("dev-2", 1, []byte(`{"seq":1,"v":1}`)) // same bytes, other device
	var waited []bool
	wait := func(stored bool) { waited = append(waited, stored) }
	steps := []struct {
		name string
		do   func() dedupVerdict
		want dedupVerdict
	}{
		{"new", func() dedupVerdict { return d.check(a, t0, wait) }, dedupNew},
		{"resend while pending waits", func() dedupVerdict { return d.check(a, t0, wait) }, dedupWaiting},
		{"other bytes are new", func() dedupVerdict { return d.check(b, t0, wait) }, dedupNew},
		{"stored", func() dedupVerdict { d.done(a, true); return d.check(a, t0.Add(time.Second), wait) }, dedupStored},
		{"failed is forgotten", func() dedupVerdict { d.done(b, false); return d.check(b, t0, wait) }, dedupNew},
		{"after the window", func() dedupVerdict { return d.check(a, t0.Add(2*time.Minute), wait) }, dedupNew},
		{"capacity evicts the oldest", func() dedupVerdict {
			d.done(a, true)
			d.done(b, true)
			d.check(c, t0.Add(2*time.Minute), wait) // evicts the oldest slot
			return d.check(b, t0.Add(2*time.Minute), wait)
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
