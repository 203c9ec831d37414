package live

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/telemetryd/telemetryd/telemetry"
)

// Positions and resume. The Hub numbers every reading it fans out with a
// position, one more than the last; every message of readings carries the
// position it brings its subscriber up to ("pos"). On subscriptions that
// ask for the persisted watermark, which refers to them, every reading
// carries its own as well (elsewhere that would only cost bytes). Positions start at the Hub's start time in microseconds, so a
// restarted server begins above every position it handed out before
// (unless it averaged more than a million readings a second), and a client
// holding an old one is told to start over rather than given wrong data.
//
// A client that subscribes with the last position it received (Since) gets
// what it missed instead of a snapshot: the readings after it that its
// filter matches, from the window (the latest ResumeConfig.Window readings,
// in memory), and beyond the window from storage (HistorySource), found by
// the device, measurement and time that the timeline (the latest
// ResumeConfig.Timeline positions, without values) remembers for each
// position, so that exactly the missed readings come back. All of it is
// sent from the Hub's goroutine before the next live frame of the
// subscription, paced like a snapshot (while the client's queue has Room):
// no gap, no duplicate. A position older than the timeline, ahead of the
// Hub, from before an inbox overflow (readings merged away there never had
// a position), or a history read that fails gets a "reset" message and a
// snapshot, as a new subscription does.
//
// Positions stay honest across conflation and gaps: a message carries a
// position only when its subscriber has, with it, everything its filter
// matched up to that position (every reading, or where conflated the latest
// value of every series). Live frames carry it when sent directly; a
// conflated backlog's values carry it on the message that empties the
// backlog, a snapshot on its last chunk; "conflated" and "gap" notices carry
// the position before what they announce, so a client that reconnects with
// it gets the merged or skipped readings back from the window or history
// (or a reset).

// ResumeConfig tunes positions, resume and the persisted watermark. The zero
// value of each field means its default.
type ResumeConfig struct {
	// Window is how many of the latest readings are kept in memory to be
	// replayed to resuming clients (default 16384).
	Window int
	// Timeline is how many of the latest positions are remembered (device,
	// measurement and time, no values), so that readings beyond the window
	// can be read back from History (default 262144, at least Window).
	Timeline int
	// History reads stored readings back; nil limits resume to the window.
	History HistorySource
	// HistoryTimeout bounds the history reads of one resume (default 10s).
	HistoryTimeout time.Duration
	// MaxHistoryReadings bounds the readings one resume reads back from
	// History (default 50000); a client that missed more gets a reset.
	MaxHistoryReadings int
	// DurableEvents bounds the storage completions waiting for the Hub
	// (default 4096). When full, a completion is dropped (counted): the
	// watermark then moves on with the device's next one, but a refusal in
	// the dropped one goes unreported.
	DurableEvents int
	// MaxHeldFrames bounds the live frames held for one subscription while
	// its history is read (default 4096); past it the resume ends in a reset.
	MaxHeldFrames int
}

func (c ResumeConfig) withDefaults() ResumeConfig {
	if c.Window <= 0 {
		c.Window = 16384
	}
	if c.Timeline <= 0 {
		c.Timeline = 262144
	}
	c.Timeline = max(c.Timeline, c.Window)
	if c.HistoryTimeout <= 0 {
		c.HistoryTimeout = 10 * time.Second
	}
	if c.MaxHistoryReadings <= 0 {
		c.MaxHistoryReadings = 50000
	}
	if c.DurableEvents <= 0 {
		c.DurableEvents = 4096
	}
	if c.MaxHeldFrames <= 0 {
		c.MaxHeldFrames = 4096
	}
	return c
}

// HistorySource reads stored readings back for resume. Implementations wrap
// storage (wired in cmd); live never imports it.
type HistorySource interface {
	// Readings returns the stored readings of q.Device with a time in
	// [q.From, q.To], oldest first, all fields of each point together.
	// It fails rather than return part of them.
	Readings(ctx context.Context, q HistoryRequest) ([]telemetry.Reading, error)
}

// HistoryRequest selects one device's readings over an inclusive time range.
type HistoryRequest struct {
	Device   string
	From, To int64             // Unix ns, inclusive
	Tags     map[string]string // equalities every point must meet (filter tags and the viewer's scope)
}

// SubscribeOptions are a subscription's options beyond its filter.
type SubscribeOptions struct {
	// Resume asks for the readings after position Since instead of a
	// snapshot (see above).
	Resume bool
	Since  int64
	// Persisted asks for "persisted" messages (persisted.go).
	Persisted bool
}

// ResumeStats are the counters of resume and the watermark.
type ResumeStats struct {
	Resumes, ResumeResets, ReadingsReplayed, ReadingsFromHistory uint64
	DurableDropped, DurableUnmatched                             uint64
}

// SubscribeWith is Subscribe with options: resume from a position, and
// persisted messages.
func (h *Hub) SubscribeWith(ctx context.Context, c Client, id string, f Filter, o SubscribeOptions) {
	key := f.key(id)
	if o.Persisted {
		key += "\x00persisted" // its frames give each reading's position too
	}
	h.op(ctx, hubOp{client: c, sub: &subscription{id: id, filter: f, key: key, opts: o}})
}

// resumeHub is the Hub's part of resume and the watermark: channels into
// its goroutine and counters.
type resumeHub struct {
	durableEvents chan durableEvent
	historyRead   chan historyResult
	persistedSubs atomic.Int32 // subscriptions asking for persisted: Durable is free without any

	resumes, resets, replayed, fromHistory atomic.Uint64
	durableDropped, durableUnmatched       atomic.Uint64
}

func newResumeHub(c ResumeConfig) resumeHub {
	return resumeHub{
		durableEvents: make(chan durableEvent, c.DurableEvents),
		historyRead:   make(chan historyResult, 16),
	}
}

func (h *resumeHub) resumeStats() ResumeStats {
	return ResumeStats{
		Resumes: h.resumes.Load(), ResumeResets: h.resets.Load(),
		ReadingsReplayed: h.replayed.Load(), ReadingsFromHistory: h.fromHistory.Load(),
		DurableDropped: h.durableDropped.Load(), DurableUnmatched: h.durableUnmatched.Load(),
	}
}

// ResumeStats returns the counters of resume and the watermark.
func (h *Hub) ResumeStats() ResumeStats { return h.resumeStats() }

// mark is what the timeline remembers of a position.
type mark struct {
	device      telemetry.DeviceID
	measurement string
	ts          int64
}

// ring is a bounded FIFO that overwrites its oldest element.
type ring[T any] struct {
	buf        []T
	start, max int
}

func (r *ring[T]) len() int { return len(r.buf) }

// push appends v, returning the element it overwrote (ok when it did).
func (r *ring[T]) push(v T) (old T, ok bool) {
	if r.max == 0 {
		return v, true // keeps nothing
	}
	if len(r.buf) < r.max {
		r.buf = append(r.buf, v)
		return old, false
	}
	old = r.buf[r.start]
	r.buf[r.start] = v
	r.start++
	if r.start == r.max {
		r.start = 0
	}
	return old, true
}

// at returns the i-th oldest element.
func (r *ring[T]) at(i int) *T {
	i += r.start
	if i >= len(r.buf) {
		i -= len(r.buf)
	}
	return &r.buf[i]
}

// resumeState is the Hub goroutine's part: positions, window, timeline and
// the watermark (persisted.go).
type resumeState struct {
	seq    int64 // position of the latest reading
	window ring[telemetry.Reading]
	marks  ring[mark]
	// unconfirmed finds a reading the bridge reports durable by the
	// address of its first field (the same readings were published; the
	// key keeps that memory alive, so the address is not reused while it
	// is here). Kept while anyone asks for persisted, from the fan-out to
	// the durable notice, for the readings of the timeline at most
	// (purgeUnconfirmed).
	unconfirmed map[*telemetry.Field]pendingDurable
	upto        map[telemetry.DeviceID]int64 // per device: completed up to this position
	stop        <-chan struct{}              // Run's end: history reads give up
	// hole is the latest position after which readings were lost without
	// one (an inbox overflow merged or skipped them): a resume from it or
	// before is reset.
	hole int64
}

func newResumeState(h *Hub, stop <-chan struct{}) resumeState {
	return resumeState{
		seq:    time.Now().UnixMicro(),
		window: ring[telemetry.Reading]{max: h.cfg.Resume.Window},
		marks:  ring[mark]{max: h.cfg.Resume.Timeline},
		upto:   make(map[telemetry.DeviceID]int64),
		stop:   stop,
	}
}

// record numbers rs and keeps them in the window and timeline; it returns
// the position of rs[0].
func (s *resumeState) record(rs []telemetry.Reading) int64 {
	first := s.seq + 1
	for i := range rs {
		r := &rs[i]
		s.seq++
		// The window keeps a copy of the Reading; its fields and tags are
		// shared with the frame and never modified after publishing.
		s.window.push(*r)
		s.marks.push(mark{device: r.Device, measurement: r.Measurement, ts: r.Time})
		if s.unconfirmed != nil && len(r.Fields) > 0 && len(s.unconfirmed) < s.marks.max {
			s.unconfirmed[&r.Fields[0]] = pendingDurable{pos: s.seq, r: telemetry.Reading{Device: r.Device, Measurement: r.Measurement, Time: r.Time, Tags: r.Tags}}
		}
	}
	return first
}

// windowFirst is the position of the oldest reading in the window.
func (s *resumeState) windowFirst() int64 { return s.seq - int64(s.window.len()) + 1 }

// windowAt returns the reading at pos, nil when it left the window.
func (s *resumeState) windowAt(pos int64) *telemetry.Reading {
	i := pos - s.windowFirst()
	if i < 0 || pos > s.seq {
		return nil
	}
	return s.window.at(int(i))
}

// posReading is a reading with its position, for replay.
type posReading struct {
	pos int64
	r   telemetry.Reading
}

// historyKey finds a read-back reading among the missed ones.
type historyKey struct {
	measurement string
	ts          int64
}

// historyWant is what one device's history read must bring back.
type historyWant struct {
	from, to int64
	pos      map[historyKey]int64
}

type historyResult struct {
	client   Client
	sub      *subscription
	readings []posReading
	wanted   int
	err      error
}

// startResume answers a subscription that asked for the readings after
// sub.opts.Since: it sets up sub.job (or a reset), which flush sends.
func (s *hubState) startResume(c Client, sub *subscription) {
	h := s.hub
	h.resumes.Add(1)
	sub.snapDone = true // no snapshot unless reset
	since := sub.opts.Since
	switch {
	case since > s.seq:
		s.reset(sub, "position unknown to this server (ahead of it: restarted, or another server's)")
		return
	case since < s.seq-int64(s.marks.len()):
		s.reset(sub, "position older than the history this server keeps")
		return
	case since <= s.hole && since < s.seq:
		s.reset(sub, "readings after this position were merged or skipped while the live feed was overloaded")
		return
	}
	wf := s.windowFirst()
	job := &resumeJob{maxHeld: h.cfg.Resume.MaxHeldFrames}
	if since+1 >= wf {
		job.replay = s.windowItems(sub, since+1)
		sub.job = job
		return
	}
	// Positions since+1 … wf-1 have left the window: find those the filter
	// may match in the timeline and read them back.
	want := map[string]*historyWant{}
	wanted := 0
	markFirst := s.seq - int64(s.marks.len()) + 1
	for p := since + 1; p < wf; p++ {
		m := s.marks.at(int(p - markFirst))
		if (!all(sub.filter.Devices) && !slices.Contains(sub.filter.Devices, string(m.device))) ||
			(!all(sub.filter.Measurements) && !slices.Contains(sub.filter.Measurements, m.measurement)) {
			continue
		}
		w := want[string(m.device)]
		if w == nil {
			w = &historyWant{from: m.ts, to: m.ts, pos: map[historyKey]int64{}}
			want[string(m.device)] = w
		}
		w.from, w.to = min(w.from, m.ts), max(w.to, m.ts)
		w.pos[historyKey{m.measurement, m.ts}] = p
		wanted++
	}
	switch {
	case wanted == 0:
		job.replay = s.windowItems(sub, wf)
		sub.job = job
		return
	case h.cfg.Resume.History == nil:
		s.reset(sub, "missed readings have left the window and this server reads no history")
		return
	case wanted > h.cfg.Resume.MaxHistoryReadings:
		s.reset(sub, "too many missed readings to replay ("+strconv.Itoa(wanted)+")")
		return
	}
	// The window's part is taken now and live frames are held from now on,
	// however long the read takes.
	job.replay, job.waiting = s.windowItems(sub, wf), true
	sub.job = job
	tags := maps.Clone(sub.filter.Tags)
	if len(sub.filter.Scope) > 0 {
		if tags == nil {
			tags = map[string]string{}
		}
		maps.Copy(tags, sub.filter.Scope)
	}
	go h.readHistory(c, sub, want, wanted, tags, s.stop)
}

// readHistory reads the missed readings back on its own goroutine and hands
// them to the Hub's.
func (h *Hub) readHistory(c Client, sub *subscription, want map[string]*historyWant, wanted int, tags map[string]string, stop <-chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.Resume.HistoryTimeout)
	defer cancel()
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	res := historyResult{client: c, sub: sub, wanted: wanted}
	h.log.Debug("resume: reading history", "devices", len(want), "readings", wanted)
	defer func() { h.log.Debug("resume: history read", "found", len(res.readings), "error", res.err) }()
	for dev, w := range want {
		rs, err := h.cfg.Resume.History.Readings(ctx, HistoryRequest{Device: dev, From: w.from, To: w.to, Tags: tags})
		if err != nil {
			res.err = err
			break
		}
		for _, r := range rs {
			if p, ok := w.pos[historyKey{r.Measurement, r.Time}]; ok {
				delete(w.pos, historyKey{r.Measurement, r.Time}) // once each
				r.Device = telemetry.DeviceID(dev)
				res.readings = append(res.readings, posReading{pos: p, r: r})
			}
		}
	}
	slices.SortFunc(res.readings, func(a, b posReading) int { return cmp.Compare(a.pos, b.pos) })
	select {
	case h.historyRead <- res:
	case <-stop:
	}
}

// finishResume puts what the history read brought back before the window's
// part of the replay, and flushes.
func (s *hubState) finishResume(res historyResult) {
	cs := s.clients[res.client]
	if cs == nil || !slices.Contains(cs.subs, res.sub) {
		s.hub.log.Debug("resume: subscription gone", "sub", res.sub.id, "client", cs != nil)
		return // gone, or subscribed anew
	}
	sub := res.sub
	job := sub.job
	job.waiting = false
	if res.err != nil {
		s.hub.log.Warn("resume: history read failed", "sub", sub.id, "error", res.err)
		s.reset(sub, "history unavailable")
	} else {
		items := res.readings[:0]
		for _, pr := range res.readings {
			// Stored points carry no tags: the device's latest stand in, and
			// the filter is applied as to live readings.
			if d := s.devices[string(pr.r.Device)]; d != nil {
				pr.r.Tags = d.tags
			}
			if sub.filter.match(&pr.r) {
				items = append(items, pr)
			}
		}
		s.hub.fromHistory.Add(uint64(len(items)))
		job.fromHistory, job.missing = len(items), res.wanted-len(res.readings)
		job.replay = append(items, job.replay...)
	}
	s.markHeld(res.client, cs)
	s.flush(res.client, cs)
}

// resumeJob is a resume in progress: the missed readings still to send,
// and the live frames since it began.
type resumeJob struct {
	replay      []posReading // missed readings still to send, in order
	replayed    int          // sent so far
	fromHistory int          // of them read back from storage
	missing     int          // expected from storage but not found
	waiting     bool         // the history read is in flight
	held        [][]byte     // live frames since the resume began, in order
	maxHeld     int
	overflow    bool // more than maxHeld frames: the resume ends in a reset
	lost        bool // an inbox overflow lost readings meanwhile: a reset too
}

func (j *resumeJob) hold(frame []byte) {
	if len(j.held) >= j.maxHeld {
		j.overflow, j.held = true, nil
		return
	}
	if !j.overflow {
		j.held = append(j.held, frame)
	}
}

// sendResume sends the next message of sub's resume: a chunk of missed
// readings, a held live frame, or at the end "resumed", after which the
// subscription is live (and owed its watermark). It reports whether c took it.
func (s *hubState) sendResume(c Client, sub *subscription) bool {
	j := sub.job
	switch {
	case j.overflow:
		s.reset(sub, "the stream went on too fast while the missed readings were sent")
		return true
	case j.lost:
		s.reset(sub, "readings were merged or skipped while the live feed was overloaded")
		return true
	case len(j.replay) > 0:
		n := min(len(j.replay), replayChunk)
		chunk := j.replay[:n]
		frame := frameHead(nil, "readings", sub.id, chunk[n-1].pos)
		for i := range chunk {
			if i > 0 {
				frame = append(frame, ',')
			}
			frame = AppendReadingJSON(frame, &chunk[i].r, &sub.filter)
			if sub.opts.Persisted {
				frame = appendPos(frame, chunk[i].pos)
			}
		}
		if !c.Send(append(frame, "]}"...)) {
			return false
		}
		j.replay, j.replayed = j.replay[n:], j.replayed+n
		sub.done = chunk[n-1].pos
	case len(j.held) > 0:
		if !c.Send(j.held[0]) {
			return false
		}
		j.held[0] = nil
		j.held = j.held[1:]
		s.hub.deliveries.Add(1)
	default:
		msg := append([]byte(`{"type":"resumed","pos":`), strconv.AppendInt(nil, s.seq, 10)...)
		msg = append(msg, `,"sub":`...)
		msg = telemetry.AppendJSONString(msg, sub.id)
		msg = append(msg, `,"replayed":`...)
		msg = strconv.AppendInt(msg, int64(j.replayed), 10)
		msg = append(msg, `,"from_history":`...)
		msg = strconv.AppendInt(msg, int64(j.fromHistory), 10)
		msg = append(msg, `,"missing":`...)
		msg = strconv.AppendInt(msg, int64(j.missing), 10)
		if !c.Send(append(msg, '}')) {
			return false
		}
		s.hub.replayed.Add(uint64(j.replayed))
		sub.job, sub.done = nil, s.seq
		sub.wmOwed = sub.opts.Persisted
	}
	return true
}

// windowItems returns the window's readings from position from on that sub matches.
func (s *hubState) windowItems(sub *subscription, from int64) []posReading {
	var items []posReading
	for p := max(from, s.windowFirst()); p <= s.seq; p++ {
		if r := s.windowAt(p); r != nil && sub.filter.match(r) {
			items = append(items, posReading{pos: p, r: *r})
		}
	}
	return items
}

// replayChunk is the most readings one replayed message carries.
const replayChunk = 256

// reset tells sub it cannot resume, and why, and starts its snapshot. The
// notice carries no position: the snapshot's last chunk does.
func (s *hubState) reset(sub *subscription, reason string) {
	s.hub.resets.Add(1)
	msg := append([]byte(`{"type":"reset","sub":`), telemetry.AppendJSONString(nil, sub.id)...)
	msg = append(msg, `,"reason":`...)
	msg = telemetry.AppendJSONString(msg, reason)
	sub.notice = append(msg, '}')
	sub.job, sub.done = nil, 0
	s.startSnapshot(sub)
}

// appendPos adds "pos" to a reading AppendReadingJSON just encoded.
func appendPos(dst []byte, pos int64) []byte {
	dst = append(dst[:len(dst)-1], `,"pos":`...)
	dst = strconv.AppendInt(dst, pos, 10)
	return append(dst, '}')
}

// options are the subscribe message's SubscribeOptions.
func (m *clientMessage) options() SubscribeOptions {
	o := SubscribeOptions{Persisted: m.Persisted}
	if m.Since != nil {
		o.Resume, o.Since = true, *m.Since
	}
	return o
}
