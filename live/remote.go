package live

import (
	"context"

	"github.com/telemetryd/telemetryd/telemetry"
)

// Hooks for a relay that joins this Hub to other instances' (live/relay).
// Remote readings arriving live need nothing new: they go through Publish
// like local ones, so filters, scopes and presence apply to them alike. The
// two hooks here cover what Publish cannot: last values that were already
// seen elsewhere, and news about the relay itself.

// Seed merges rs into the last values used for snapshots, as last values
// kept elsewhere (another instance, a last-value store): a reading newer
// than what the Hub holds for its series (or of a series it does not know)
// replaces it and is also sent to the matching subscriptions as live
// readings, so dashboards that stayed connected catch up; older ones change
// nothing. Presence is not touched: these readings say nothing about when
// their device was last heard from. Seed waits at most for ctx; the Hub
// takes rs over.
func (h *Hub) Seed(ctx context.Context, rs []telemetry.Reading) {
	if len(rs) == 0 {
		return
	}
	h.op(ctx, hubOp{seed: rs})
}

// Notice sends frame, one complete message (its JSON starts with
// {"type":"<word>"), to every dashboard client. When standing, the Hub also
// sends it to each client that subscribes later (before its first
// snapshot), until the next Notice replaces it; a Notice that is not
// standing ends the standing one. A client whose queue is full misses it
// and is handled by the SlowPolicy, as for readings. Notice waits at most
// for ctx; the frame must not be modified afterwards.
func (h *Hub) Notice(ctx context.Context, frame []byte, standing bool) {
	if len(frame) == 0 {
		return
	}
	h.op(ctx, hubOp{notice: frame, standing: standing})
}

func (s *hubState) seed(rs []telemetry.Reading) {
	newer := rs[:0] // rs is ours: keep the newer readings in place
	srs := s.srs[:0]
	for i := range rs {
		r := &rs[i]
		s.keyBuf = appendSeriesKey(s.keyBuf[:0], r)
		old, known := s.last[string(s.keyBuf)]
		isNewer := !known || r.Time > old.reading.Time
		if sr := s.remember(r); sr != nil && isNewer {
			newer = append(newer, *r)
			srs = append(srs, sr)
		}
	}
	if len(newer) == 0 {
		s.srs = srs
		return
	}
	// Numbered like published readings, so resuming subscriptions replay
	// them too (resume.go).
	first := s.record(newer)
	for i, sr := range srs {
		sr.pos = first + int64(i)
	}
	s.deliver(newer, srs, first, first+int64(len(newer))-1)
}

func (s *hubState) setNotice(frame []byte, standing bool) {
	s.notice = nil
	if standing {
		s.notice = frame
	}
	for c, cs := range s.clients {
		if !c.Send(frame) {
			s.full(c, cs)
		}
	}
}

// sendNotice sends the standing notice, if any, to a new client. Its queue
// is empty, so only a bound smaller than the notice refuses it; the client
// then goes without (it is not handled as slow before it has subscribed).
func (s *hubState) sendNotice(c Client) {
	if s.notice != nil {
		_ = c.Send(s.notice)
	}
}
