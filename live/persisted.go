package live

import (
	"slices"
	"strconv"

	"github.com/telemetryd/telemetryd/telemetry"
)

// The persisted watermark. Live readings leave before they are written;
// the bridge tells the Hub afterwards, frame by frame, which of them are
// durable (Durable: after the storage write, or the spool's fsync) and which
// storage refused. A subscription that asks for it (SubscribeOptions.
// Persisted) then receives
//
//	{"type":"persisted","sub":"s","upto":{"dev-1":1733312000000123},
//	 "refused":[{"pos":…,"device_id":…,"measurement":…,"ts":…,"code":…,"message":…}]}
//
// where upto[d] = P says every reading of device d at a position up to P is
// durable, except those listed as refused (now or before). A device's frames
// complete in the order they arrived, so its watermark only moves forward.
// A subscription gets the watermark of every device it sees right after its
// snapshot's last chunk (or its resume), and then each change that concerns
// it. While data is held back for it (a conflated backlog), its persisted
// messages wait behind that data, at most maxHeldPersisted of them; past
// that the oldest are dropped (counted as DurableDropped) and the full
// watermark is sent instead, so only refusals in them go unreported.

// Durable implements the bridge's DurableNotifier: rs are the readings of
// one completed frame as they were published; refused index rs (storage
// refused those); err is set when none of them was stored. It never blocks:
// without a subscription asking for persisted it returns at once, and when
// the Hub is DurableEvents behind the completion is dropped and counted.
func (h *Hub) Durable(rs []telemetry.Reading, refused []telemetry.Rejection, err error) {
	if h.persistedSubs.Load() == 0 || len(rs) == 0 {
		return
	}
	ev := durableEvent{keys: make([]*telemetry.Field, len(rs)), refused: refused}
	for i := range rs {
		if len(rs[i].Fields) > 0 {
			ev.keys[i] = &rs[i].Fields[0]
		}
	}
	if err != nil {
		ev.failed = err.Error()
	}
	select {
	case h.durableEvents <- ev:
	default:
		h.durableDropped.Add(1)
	}
}

// durableEvent is one completed frame, as the Hub's goroutine gets it.
type durableEvent struct {
	keys    []*telemetry.Field // identifies each reading (see resumeState.unconfirmed)
	refused []telemetry.Rejection
	failed  string
}

// pendingDurable is a reading fanned out and not yet reported durable: its
// position and what the filters and the refusal message need (no fields).
type pendingDurable struct {
	pos int64
	r   telemetry.Reading
}

// refusal is a refused reading.
type refusal struct {
	pos          int64
	r            *telemetry.Reading
	code, reason string
}

// completed is a reading the bridge completed.
type completed struct {
	pos int64
	r   *telemetry.Reading
}

// onDurable applies ev and every completion waiting behind it, then tells
// the subscriptions that asked.
func (s *hubState) onDurable(ev durableEvent) {
	h := s.hub
	// A frame is published right after it is queued for storage; on a
	// quick write its completion can reach the Hub before its readings do.
	for n := len(h.inbox); n > 0; n-- {
		s.fanOut(<-h.inbox)
	}
	var done []completed
	var refused []refusal
	for {
		for i, key := range ev.keys {
			p, ok := s.unconfirmed[key]
			if key == nil || !ok {
				h.durableUnmatched.Add(1)
				continue
			}
			delete(s.unconfirmed, key)
			pos, r := p.pos, &p.r
			done = append(done, completed{pos, r})
			if ev.failed != "" {
				refused = append(refused, refusal{pos: pos, r: r, code: "not_stored", reason: ev.failed})
			} else if j := slices.IndexFunc(ev.refused, func(x telemetry.Rejection) bool { return x.Index == i }); j >= 0 {
				refused = append(refused, refusal{pos: pos, r: r, code: ev.refused[j].Code, reason: ev.refused[j].Message})
			}
			if pos > s.upto[r.Device] {
				if _, known := s.upto[r.Device]; known || len(s.upto) < h.cfg.MaxDevices {
					s.upto[r.Device] = pos
				}
			}
		}
		select {
		case ev = <-h.durableEvents:
			continue
		default:
		}
		break
	}
	if len(done) == 0 {
		return
	}
	for c, cs := range s.clients {
		for _, sub := range cs.subs {
			// Without a complete snapshot or resume yet, the watermark to
			// come covers this.
			if !sub.opts.Persisted || sub.job != nil || !sub.snapDone || sub.wmOwed {
				continue
			}
			msg := s.persistedMessage(sub, done, refused)
			if msg == nil {
				continue
			}
			if !cs.backlog && !sub.held() {
				if c.Send(msg) {
					continue
				}
				if !s.full(c, cs) {
					break
				}
			}
			s.holdPersisted(sub, msg)
			s.markHeld(c, cs)
		}
	}
}

// maxHeldPersisted bounds the persisted messages held for one subscription.
const maxHeldPersisted = 256

func (s *hubState) holdPersisted(sub *subscription, msg []byte) {
	if len(sub.persisted) >= maxHeldPersisted {
		s.hub.durableDropped.Add(uint64(len(sub.persisted)))
		sub.persisted, sub.wmOwed = nil, true
		return
	}
	sub.persisted = append(sub.persisted, msg)
}

// persistedMessage encodes what of done and refused concerns sub, nil when
// nothing does.
func (s *hubState) persistedMessage(sub *subscription, done []completed, refused []refusal) []byte {
	var devs []telemetry.DeviceID
	for _, d := range done {
		if sub.filter.matchSeries(d.r) && !slices.Contains(devs, d.r.Device) {
			devs = append(devs, d.r.Device)
		}
	}
	if len(devs) == 0 {
		return nil
	}
	msg := s.watermarkHead(sub, devs)
	msg = append(msg, `,"refused":[`...)
	n := 0
	for _, rf := range refused {
		if !sub.filter.matchSeries(rf.r) {
			continue
		}
		if n > 0 {
			msg = append(msg, ',')
		}
		n++
		msg = append(msg, `{"pos":`...)
		msg = strconv.AppendInt(msg, rf.pos, 10)
		msg = append(msg, `,"device_id":`...)
		msg = telemetry.AppendJSONString(msg, string(rf.r.Device))
		msg = append(msg, `,"measurement":`...)
		msg = telemetry.AppendJSONString(msg, rf.r.Measurement)
		msg = append(msg, `,"ts":`...)
		msg = strconv.AppendInt(msg, rf.r.Time, 10)
		msg = append(msg, `,"code":`...)
		msg = telemetry.AppendJSONString(msg, rf.code)
		msg = append(msg, `,"message":`...)
		msg = telemetry.AppendJSONString(msg, rf.reason)
		msg = append(msg, '}')
	}
	return append(msg, "]}"...)
}

// watermarkHead starts a persisted message with the watermark of devs.
func (s *hubState) watermarkHead(sub *subscription, devs []telemetry.DeviceID) []byte {
	msg := append([]byte(`{"type":"persisted","sub":`), telemetry.AppendJSONString(nil, sub.id)...)
	msg = append(msg, `,"upto":{`...)
	for i, d := range devs {
		if i > 0 {
			msg = append(msg, ',')
		}
		msg = telemetry.AppendJSONString(msg, string(d))
		msg = append(msg, ':')
		msg = strconv.AppendInt(msg, s.upto[d], 10)
	}
	return append(msg, '}')
}

// watermark is the persisted message with the watermark of every device
// sub may see.
func (s *hubState) watermark(sub *subscription) []byte {
	var devs []telemetry.DeviceID
	for d := range s.upto {
		dev := s.devices[string(d)]
		if dev == nil || (!all(sub.filter.Devices) && !slices.Contains(sub.filter.Devices, string(d))) ||
			!tagsMatch(dev.tags, sub.filter.Tags) || !tagsMatch(dev.tags, sub.filter.Scope) {
			continue
		}
		devs = append(devs, d)
	}
	slices.Sort(devs)
	return append(s.watermarkHead(sub, devs), `,"refused":[]}`...)
}

// countPersisted keeps Hub.persistedSubs, and the index Durable needs,
// up to date after subscriptions changed.
func (s *hubState) countPersisted() {
	n := 0
	for _, cs := range s.clients {
		for _, sub := range cs.subs {
			if sub.opts.Persisted {
				n++
			}
		}
	}
	s.hub.persistedSubs.Store(int32(n))
	switch {
	case n > 0 && s.unconfirmed == nil:
		s.unconfirmed = make(map[*telemetry.Field]pendingDurable)
	case n == 0:
		s.unconfirmed = nil
	}
}

// purgeUnconfirmed forgets readings older than the timeline that were
// never reported durable (their notice was dropped, or their batch was not
// shown live), so that the index stays bounded by what is still expected.
func (s *hubState) purgeUnconfirmed() {
	oldest := s.seq - int64(s.marks.len())
	for k, p := range s.unconfirmed {
		if p.pos <= oldest {
			delete(s.unconfirmed, k)
		}
	}
}
