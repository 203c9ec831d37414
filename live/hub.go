package live

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/telemetryd/telemetryd/telemetry"
)

// Client is one dashboard connection as the Hub sees it. Its methods are
// called from the Hub's goroutine only and never block.
type Client interface {
	// Send queues one encoded frame for the client. The frame is shared
	// with other clients and must not be modified. Send returns false, and
	// queues nothing, when the frame would pass the client's bound; the Hub
	// then applies its SlowPolicy.
	Send(frame []byte) bool
	// Room reports whether the client's queue is at most half full. Only
	// then does the Hub send what it holds back for the client (snapshot
	// chunks, conflated values), so live frames always find headroom.
	Room() bool
	// Drop tells the transport that the Hub has given up on the client
	// (SlowDisconnect): it closes the socket with 1013 or ends the stream.
	Drop()
}

// SlowPolicy is what the Hub does with a dashboard whose queue is full.
type SlowPolicy string

// Slow-consumer policies.
const (
	// SlowConflate (the default) keeps the dashboard: while its queue is
	// full the Hub holds, per subscription, which series changed, and
	// sends their latest values once the queue has room again, preceded by
	// a "conflated" message with the count of readings merged away. The
	// dashboard sees fewer intermediate values, never stale ones.
	SlowConflate SlowPolicy = "conflate"
	// SlowDisconnect drops the dashboard (1013, or the SSE stream ends);
	// it reconnects and re-subscribes, and its snapshot brings it up to date.
	SlowDisconnect SlowPolicy = "disconnect"
)

// Valid reports whether p is a known policy ("" means the default).
func (p SlowPolicy) Valid() bool { return p == "" || p == SlowConflate || p == SlowDisconnect }

// Filter selects the readings a subscription receives. Empty lists and "*"
// mean "all".
type Filter struct {
	Devices      []string
	Measurements []string
	// Fields limits which fields are sent; readings without any of them are skipped.
	Fields []string
	// Tags must all match the reading's tags.
	Tags map[string]string
	// Scope is set by the server, not the client: the label selectors a
	// restricted viewer may see. It is enforced exactly like Tags.
	Scope map[string]string
	// Presence asks for device presence events (see PresenceMode).
	Presence PresenceMode
}

// PresenceMode says whether a subscription receives presence events:
// {"type":"presence","device_id":…,"online":bool,"last_seen":<ns>,"tags":{…}}
// whenever a matching device goes online or offline, and the current
// presence of every matching device in its snapshot ("presence":[…]).
// Devices and tags (and the viewer's scope) select the devices;
// measurements and fields do not apply to presence.
type PresenceMode string

// Presence modes.
const (
	PresenceNone    PresenceMode = ""        // readings only (the default)
	PresenceInclude PresenceMode = "include" // readings and presence events
	PresenceOnly    PresenceMode = "only"    // presence events, no readings
)

// Valid reports whether m is a known mode.
func (m PresenceMode) Valid() bool {
	return m == PresenceNone || m == PresenceInclude || m == PresenceOnly
}

func all(list []string) bool { return len(list) == 0 || slices.Contains(list, "*") }

func (f *Filter) matchSeries(r *telemetry.Reading) bool {
	if !all(f.Devices) && !slices.Contains(f.Devices, string(r.Device)) {
		return false
	}
	if !all(f.Measurements) && !slices.Contains(f.Measurements, r.Measurement) {
		return false
	}
	return tagsMatch(r.Tags, f.Tags) && tagsMatch(r.Tags, f.Scope)
}

func (f *Filter) wantField(name string) bool { return all(f.Fields) || slices.Contains(f.Fields, name) }

func (f *Filter) match(r *telemetry.Reading) bool {
	if f.Presence == PresenceOnly || !f.matchSeries(r) {
		return false
	}
	if all(f.Fields) {
		return true
	}
	for _, fl := range r.Fields {
		if slices.Contains(f.Fields, fl.Name) {
			return true
		}
	}
	return false
}

// matchDevice reports whether presence events of device id (whose latest
// reading carried tags) are for this subscription.
func (f *Filter) matchDevice(id string, tags []telemetry.Tag) bool {
	if f.Presence == PresenceNone {
		return false
	}
	if !all(f.Devices) && !slices.Contains(f.Devices, id) {
		return false
	}
	return tagsMatch(tags, f.Tags) && tagsMatch(tags, f.Scope)
}

func tagsMatch(tags []telemetry.Tag, want map[string]string) bool {
	for k, v := range want {
		found := false
		for _, t := range tags {
			if t.Key == k {
				found = t.Value == v
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// key identifies the filter's shape for sharing encoded frames between
// subscribers with the same subscription.
func (f *Filter) key(id string) string {
	b := append([]byte(id), 0)
	b = append(b, f.Presence...)
	b = append(b, 0)
	for _, l := range [][]string{f.Devices, f.Measurements, f.Fields} {
		for _, s := range l {
			b = append(b, s...)
			b = append(b, 1)
		}
		b = append(b, 0)
	}
	for _, m := range []map[string]string{f.Tags, f.Scope} {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			b = append(b, k...)
			b = append(b, 1)
			b = append(b, m[k]...)
			b = append(b, 1)
		}
		b = append(b, 0)
	}
	return string(b)
}

// HubConfig tunes the Hub. The zero value of each field means its default.
type HubConfig struct {
	// InboxBatches bounds the published batches waiting for fan-out
	// (default 16384). When full, Publish merges the readings to the
	// latest value per series (at most MaxSeries of them) until the
	// fan-out catches up; the dashboards are told how many readings were
	// merged away ("conflated"), and of readings beyond that bound ("gap").
	InboxBatches int
	// SlowPolicy applies to a dashboard whose queue is full (default
	// SlowConflate).
	SlowPolicy SlowPolicy
	// SnapshotChunkBytes is the size a snapshot message (or a message of
	// conflated values) grows to before the next reading goes into a new
	// one (default 64 KiB); it should be well under the clients' byte
	// bound. Such messages are sent only while the client's queue has Room.
	SnapshotChunkBytes int
	// BacklogInterval is how often clients with held-back data are checked
	// for room (default 20ms).
	BacklogInterval time.Duration
	// MaxSeries bounds the last-value cache used for snapshots (default
	// 100000); series beyond it are not remembered, and counted.
	MaxSeries int
	// MaxDevices bounds presence tracking (default 100000); devices beyond
	// it have no presence and are not listed by Devices, and are counted.
	MaxDevices int
	// OfflineAfter is the shortest silence after which a device is
	// offline (default 60s). A device that reports more slowly gets twice
	// its typical interval between readings (at most 24h).
	OfflineAfter time.Duration
	// SweepInterval is how often silent devices are looked for (default 5s).
	SweepInterval time.Duration
	// Resume tunes positions, resume and the persisted watermark (resume.go).
	Resume ResumeConfig
}

// HubStats are the Hub's counters.
type HubStats struct {
	Clients, Subscriptions, Series, Devices int
	// Backlogged is the number of clients the Hub holds data back for
	// (a snapshot in progress, conflated values).
	Backlogged                              int
	Published, Deliveries                   uint64
	SlowClientsDropped, SeriesNotRemembered uint64
	DevicesNotTracked, PresenceEvents       uint64
	// InboxFullBatches found the inbox full; InboxConflated readings of
	// them were merged away (latest value per series) and GapReadings
	// could not even be merged (told as gaps).
	InboxFullBatches, InboxConflated, GapReadings uint64
	// Conflated counts readings merged away for slow dashboards
	// (per subscription); SnapshotChunks the snapshot messages sent.
	Conflated, SnapshotChunks uint64
}

// DeviceStatus is what the Hub knows about a device from its readings.
type DeviceStatus struct {
	ID string
	// Tags are those of the device's latest reading (labels included,
	// device_id excluded).
	Tags []telemetry.Tag
	// LastSeen is when the Hub last received a reading from the device
	// (server clock).
	LastSeen time.Time
	Online   bool
}

type subscription struct {
	id     string
	filter Filter
	key    string
	opts   SubscribeOptions // resume.go

	// done is the position up to which the subscriber has everything its
	// filter matches (the latest value of each series, where conflated);
	// 0 until its snapshot or resume is complete. Messages carry no other
	// position (resume.go: positions stay honest).
	done int64
	// job is a resume in progress (resume.go): live frames wait in it
	// until the missed readings have been sent.
	job *resumeJob
	// notice is a message owed before anything else (a reset's), and
	// persisted the persisted messages held back while other data is
	// (persisted.go); wmOwed: the full watermark is owed.
	notice    []byte
	persisted [][]byte
	wmOwed    bool

	// What the Hub holds back for this subscription (its goroutine only).
	// snap lists the snapshot's series still to send; snapDone is set once
	// its last chunk went out.
	snap      []*series
	snapDevs  []string // then the devices of its presence list
	snapChunk int
	snapDone  bool
	// pend is the conflated backlog: series whose latest value is owed.
	pend map[*series]struct{}
	// merged readings were merged away (conflated), skipped ones neither
	// delivered nor kept (a gap, device time from..to); not yet told.
	merged, skipped uint64
	gapFrom, gapTo  int64
}

// held reports whether anything is held back for sub.
func (sub *subscription) held() bool {
	return sub.notice != nil || sub.job != nil || !sub.snapDone || len(sub.pend) > 0 || sub.merged > 0 || sub.skipped > 0 ||
		sub.wmOwed || len(sub.persisted) > 0
}

// skip records n readings (device times from..to) as a gap.
func (sub *subscription) skip(from, to int64, n uint64) {
	if sub.skipped == 0 || from < sub.gapFrom {
		sub.gapFrom = from
	}
	if sub.skipped == 0 || to > sub.gapTo {
		sub.gapTo = to
	}
	sub.skipped += n
}

type clientState struct {
	subs []*subscription
	// backlog: the client's queue was full (SlowConflate), so live data
	// goes to its subscriptions' pend until the backlog is sent.
	backlog bool
	// presence events held back during a backlog, latest per device.
	presence map[string][]byte
}

type hubOp struct {
	client  Client
	sub     *subscription // subscribe when set
	unsub   string        // unsubscribe id when sub is nil and unsub != ""
	detach  bool
	stats   chan HubStats
	devices chan []DeviceStatus
	// Relay hooks (remote.go).
	seed     []telemetry.Reading
	notice   []byte
	standing bool
}

type series struct {
	reading telemetry.Reading // latest time; Fields hold the last value of every field seen
	pos     int64             // position of the latest reading merged in (resume.go)
}

// merge folds r into sr: the latest time, and the latest value of every field.
func (sr *series) merge(r *telemetry.Reading) {
	newer := r.Time >= sr.reading.Time
	if newer {
		sr.reading.Time = r.Time
	}
	for _, f := range r.Fields {
		if i := slices.IndexFunc(sr.reading.Fields, func(x telemetry.Field) bool { return x.Name == f.Name }); i >= 0 {
			if newer {
				sr.reading.Fields[i] = f
			}
		} else {
			sr.reading.Fields = append(sr.reading.Fields, f)
		}
	}
}

// appendSeriesKey appends the identity of r's series.
func appendSeriesKey(k []byte, r *telemetry.Reading) []byte {
	k = append(k, r.Device...)
	k = append(k, 0)
	k = append(k, r.Measurement...)
	for _, t := range r.Tags {
		k = append(k, 0)
		k = append(k, t.Key...)
		k = append(k, 1)
		k = append(k, t.Value...)
	}
	return k
}

// overflow holds what Publish could not queue: the readings merged to the
// latest value per series (at most MaxSeries), and what was beyond even
// that. Once it holds anything, later batches join it too (on), so the
// fan-out sees every publisher's readings in order: first the inbox, then
// the overflow.
type overflow struct {
	on      atomic.Bool
	mu      sync.Mutex
	series  map[string]*overflowSeries
	order   []*overflowSeries
	keyBuf  []byte
	skipped uint64
	from    int64
	to      int64
}

type overflowSeries struct {
	series
	n uint64 // readings merged into it
}

// Hub fans normalized readings out to dashboard clients and remembers the
// last value of every series for subscription snapshots. All state is owned
// by the goroutine running Run; other methods only send it messages.
type Hub struct {
	cfg   HubConfig
	log   *slog.Logger
	inbox chan []telemetry.Reading
	ops   chan hubOp
	over  overflow
	wake  chan struct{} // the overflow has something (capacity 1)

	published, deliveries, slowDropped, seriesNotRemembered atomic.Uint64
	devicesNotTracked, presenceEvents                       atomic.Uint64
	inboxFull, inboxConflated, gapReadings                  atomic.Uint64
	conflated, snapshotChunks                               atomic.Uint64

	resumeHub // resume.go, persisted.go: durable events, finished history reads
}

// NewHub returns a Hub; start it with Run.
func NewHub(cfg HubConfig, log *slog.Logger) *Hub {
	if cfg.InboxBatches <= 0 {
		cfg.InboxBatches = 16384
	}
	if cfg.MaxSeries <= 0 {
		cfg.MaxSeries = 100000
	}
	if cfg.MaxDevices <= 0 {
		cfg.MaxDevices = 100000
	}
	if cfg.OfflineAfter <= 0 {
		cfg.OfflineAfter = 60 * time.Second
	}
	if cfg.SweepInterval <= 0 {
		cfg.SweepInterval = 5 * time.Second
	}
	if cfg.SlowPolicy == "" {
		cfg.SlowPolicy = SlowConflate
	}
	if cfg.SnapshotChunkBytes <= 0 {
		cfg.SnapshotChunkBytes = 64 << 10
	}
	if cfg.BacklogInterval <= 0 {
		cfg.BacklogInterval = 20 * time.Millisecond
	}
	cfg.Resume = cfg.Resume.withDefaults()
	return &Hub{
		cfg:       cfg,
		log:       log,
		inbox:     make(chan []telemetry.Reading, cfg.InboxBatches),
		ops:       make(chan hubOp, 1024),
		wake:      make(chan struct{}, 1),
		resumeHub: newResumeHub(cfg.Resume),
	}
}

// Publish implements bridge.Publisher. It never blocks: when the fan-out is
// behind by more than InboxBatches batches, the readings are merged to the
// latest value per series until it catches up (see HubConfig.InboxBatches).
func (h *Hub) Publish(rs []telemetry.Reading) {
	if !h.over.on.Load() {
		select {
		case h.inbox <- rs:
			h.published.Add(1)
			return
		default:
		}
	}
	h.inboxFull.Add(1)
	o := &h.over
	o.mu.Lock()
	o.on.Store(true)
	if o.series == nil {
		o.series = make(map[string]*overflowSeries)
	}
	for i := range rs {
		r := &rs[i]
		o.keyBuf = appendSeriesKey(o.keyBuf[:0], r)
		if e, ok := o.series[string(o.keyBuf)]; ok {
			e.merge(r)
			e.n++
			continue
		}
		if len(o.series) >= h.cfg.MaxSeries {
			if o.skipped == 0 || r.Time < o.from {
				o.from = r.Time
			}
			if o.skipped == 0 || r.Time > o.to {
				o.to = r.Time
			}
			o.skipped++
			continue
		}
		// Copies: rs belongs to the publisher's frame.
		e := &overflowSeries{n: 1, series: series{reading: telemetry.Reading{
			Device: r.Device, Measurement: r.Measurement, Time: r.Time,
			Tags: slices.Clone(r.Tags), Fields: slices.Clone(r.Fields),
		}}}
		o.series[string(o.keyBuf)] = e
		o.order = append(o.order, e)
	}
	o.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// Subscribe adds or replaces subscription id of client c. The Hub first sends
// c a snapshot of the last value of every matching series, then live batches.
func (h *Hub) Subscribe(ctx context.Context, c Client, id string, f Filter) {
	h.SubscribeWith(ctx, c, id, f, SubscribeOptions{})
}

// Unsubscribe removes subscription id of client c.
func (h *Hub) Unsubscribe(ctx context.Context, c Client, id string) {
	h.op(ctx, hubOp{client: c, unsub: id})
}

// Detach forgets client c and all its subscriptions.
func (h *Hub) Detach(ctx context.Context, c Client) {
	h.op(ctx, hubOp{client: c, detach: true})
}

// Stats returns the Hub's counters (zero counts of state if the Hub is not running).
func (h *Hub) Stats(ctx context.Context) HubStats {
	ch := make(chan HubStats, 1)
	h.op(ctx, hubOp{stats: ch})
	select {
	case s := <-ch:
		return s
	case <-ctx.Done():
		return h.counters()
	}
}

// Devices returns the presence of every device the Hub has seen a reading
// from since it started, sorted by id (nil if ctx ends first).
func (h *Hub) Devices(ctx context.Context) []DeviceStatus {
	ch := make(chan []DeviceStatus, 1)
	h.op(ctx, hubOp{devices: ch})
	select {
	case ds := <-ch:
		return ds
	case <-ctx.Done():
		return nil
	}
}

func (h *Hub) counters() HubStats {
	return HubStats{
		Published: h.published.Load(), Deliveries: h.deliveries.Load(),
		SlowClientsDropped: h.slowDropped.Load(), SeriesNotRemembered: h.seriesNotRemembered.Load(),
		DevicesNotTracked: h.devicesNotTracked.Load(), PresenceEvents: h.presenceEvents.Load(),
		InboxFullBatches: h.inboxFull.Load(), InboxConflated: h.inboxConflated.Load(), GapReadings: h.gapReadings.Load(),
		Conflated: h.conflated.Load(), SnapshotChunks: h.snapshotChunks.Load(),
	}
}

func (h *Hub) op(ctx context.Context, o hubOp) {
	select {
	case h.ops <- o:
	case <-ctx.Done():
	}
}

// Run owns the Hub's state and does the fan-out until ctx is done.
func (h *Hub) Run(ctx context.Context) error {
	s := hubState{
		hub:         h,
		clients:     make(map[Client]*clientState),
		last:        make(map[string]*series),
		devices:     make(map[string]*device),
		backlogged:  make(map[Client]*clientState),
		resumeState: newResumeState(h, ctx.Done()),
	}
	sweep := time.NewTicker(h.cfg.SweepInterval)
	defer sweep.Stop()
	backlog := time.NewTicker(h.cfg.BacklogInterval)
	defer backlog.Stop()
	for {
		var retry <-chan time.Time
		if len(s.backlogged) > 0 {
			retry = backlog.C
		}
		select {
		case <-ctx.Done():
			return nil
		case o := <-h.ops:
			s.apply(o)
		case now := <-sweep.C:
			s.sweep(now)
			s.purgeUnconfirmed() // persisted.go
		case evs := <-h.durableEvents:
			s.onDurable(evs)
		case res := <-h.historyRead:
			s.finishResume(res)
		case <-retry:
			for c, cs := range s.backlogged {
				s.flush(c, cs)
			}
		case <-h.wake:
			if len(h.inbox) == 0 {
				s.takeOverflow()
			}
		case rs := <-h.inbox:
			// Coalesce what is already waiting into one frame per
			// subscription: under load this cuts per-frame costs without
			// ever waiting for more.
			batch := append(s.batch[:0], rs...)
		drain:
			for len(batch) < 1024 {
				select {
				case more := <-h.inbox:
					batch = append(batch, more...)
				default:
					break drain
				}
			}
			s.fanOut(batch)
			clear(batch)
			s.batch = batch[:0]
			// The overflow is newer than everything the inbox held.
			if len(h.inbox) == 0 && h.over.on.Load() {
				s.takeOverflow()
			}
		}
	}
}

type hubState struct {
	hub        *Hub
	clients    map[Client]*clientState
	last       map[string]*series
	batch      []telemetry.Reading
	srs        []*series // the series of batch's readings (nil: not remembered)
	keyBuf     []byte
	frames     map[string][]byte
	devices    map[string]*device
	backlogged map[Client]*clientState // clients with something held back
	sent       []*series               // scratch of flush
	notice     []byte                  // standing notice for new clients (remote.go)

	resumeState // resume.go: positions, the window, the watermark
}

func (s *hubState) apply(o hubOp) {
	h := s.hub
	switch {
	case o.stats != nil:
		st := h.counters()
		st.Clients = len(s.clients)
		for _, c := range s.clients {
			st.Subscriptions += len(c.subs)
		}
		st.Series = len(s.last)
		st.Devices = len(s.devices)
		st.Backlogged = len(s.backlogged)
		o.stats <- st
	case o.devices != nil:
		o.devices <- s.deviceList()
	case o.seed != nil:
		s.seed(o.seed) // remote.go
	case o.notice != nil:
		s.setNotice(o.notice, o.standing) // remote.go
	case o.detach:
		delete(s.clients, o.client)
		delete(s.backlogged, o.client)
		s.countPersisted()
	case o.sub != nil:
		cs := s.clients[o.client]
		if cs == nil {
			cs = &clientState{}
			s.clients[o.client] = cs
			s.sendNotice(o.client) // remote.go
		}
		cs.subs = slices.DeleteFunc(cs.subs, func(x *subscription) bool { return x.id == o.sub.id })
		cs.subs = append(cs.subs, o.sub)
		s.countPersisted()
		if o.sub.opts.Resume {
			s.startResume(o.client, o.sub) // resume.go
		} else {
			s.startSnapshot(o.sub)
		}
		s.markHeld(o.client, cs)
		s.flush(o.client, cs)
	case o.unsub != "":
		if cs := s.clients[o.client]; cs != nil {
			cs.subs = slices.DeleteFunc(cs.subs, func(x *subscription) bool { return x.id == o.unsub })
		}
		s.countPersisted()
	}
}

// full applies the slow-consumer policy to c, whose queue refused a frame.
// It reports whether c is still a client (conflating).
func (s *hubState) full(c Client, cs *clientState) bool {
	if s.hub.cfg.SlowPolicy == SlowDisconnect {
		delete(s.clients, c)
		delete(s.backlogged, c)
		s.hub.slowDropped.Add(1)
		s.countPersisted()
		c.Drop()
		return false
	}
	cs.backlog = true
	s.markHeld(c, cs)
	return true
}

// hold_ marks c as having something held back (flush retries it).
func (s *hubState) markHeld(c Client, cs *clientState) {
	if s.backlogged == nil {
		s.backlogged = make(map[Client]*clientState)
	}
	s.backlogged[c] = cs
}

func (s *hubState) fanOut(rs []telemetry.Reading) {
	now := time.Now()
	first := s.record(rs) // resume.go: positions first+0… and the window
	last := first + int64(len(rs)) - 1
	srs := s.srs[:0]
	for i := range rs {
		sr := s.remember(&rs[i])
		if sr != nil {
			sr.pos = first + int64(i)
		}
		srs = append(srs, sr)
		// A device's readings of one batch arrived together: presence
		// needs the last of each run, not each (seen clones changed tags).
		if i+1 == len(rs) || rs[i+1].Device != rs[i].Device {
			s.seen(&rs[i], now)
		}
	}
	s.deliver(rs, srs, first, last)
}

// deliver sends rs (whose series are srs, at positions first to last) to
// every matching subscription, one shared frame per subscription shape, or
// holds them for clients that are behind.
func (s *hubState) deliver(rs []telemetry.Reading, srs []*series, first, last int64) {
	s.srs = srs
	defer clear(srs)
	if len(s.clients) == 0 {
		return
	}
	if s.frames == nil {
		s.frames = make(map[string][]byte)
	}
	clear(s.frames)
	for c, cs := range s.clients {
		for _, sub := range cs.subs {
			// A subscription whose snapshot is not complete holds its live
			// readings like a backlogged one: they go into the snapshot's
			// last chunks, so no message reaches it with a position it does
			// not have everything up to (resume.go).
			if sub.job == nil && (cs.backlog || !sub.snapDone) {
				s.hold(sub, rs, srs)
				continue
			}
			frame, ok := s.frames[sub.key]
			if !ok {
				frame = encodeFrame(nil, "readings", sub, rs, first, last)
				s.frames[sub.key] = frame
			}
			if frame == nil {
				continue
			}
			if sub.job != nil {
				sub.job.hold(frame) // resume.go: sent after the missed readings
				continue
			}
			if !c.Send(frame) {
				if !s.full(c, cs) {
					break
				}
				s.hold(sub, rs, srs)
				continue
			}
			sub.done = last
			s.hub.deliveries.Add(1)
		}
	}
}

// hold adds the readings of rs that sub matches to its conflated backlog.
// A reading of a series not remembered cannot be sent later: it is a gap
// (its position is still in the window and the timeline, so a resume from
// before the gap brings it back).
func (s *hubState) hold(sub *subscription, rs []telemetry.Reading, srs []*series) {
	for i := range rs {
		if !sub.filter.match(&rs[i]) {
			continue
		}
		sr := srs[i]
		if sr == nil {
			sub.skip(rs[i].Time, rs[i].Time, 1)
			s.hub.gapReadings.Add(1)
			continue
		}
		if sub.pend == nil {
			sub.pend = make(map[*series]struct{})
		}
		if _, ok := sub.pend[sr]; ok {
			sub.merged++
			s.hub.conflated.Add(1)
		} else {
			sub.pend[sr] = struct{}{}
		}
	}
}

// takeOverflow fans out what Publish merged while the inbox was full:
// every subscription is told how many of the readings it matches were
// merged away, and of readings not even kept (a gap), then gets the
// merged readings like any batch. The readings merged away never had a
// position: the Hub remembers where they were lost (resumeState.hole), and
// a resume from before that point ends in a reset.
func (s *hubState) takeOverflow() {
	o := &s.hub.over
	o.mu.Lock()
	order, skipped, from, to := o.order, o.skipped, o.from, o.to
	o.series, o.order, o.skipped = nil, nil, 0
	o.on.Store(false)
	o.mu.Unlock()
	if len(order) == 0 && skipped == 0 {
		return
	}
	rs := make([]telemetry.Reading, len(order))
	var merged uint64
	var folded []*overflowSeries // the series with readings merged away
	for i, e := range order {
		rs[i] = e.reading
		if e.n > 1 {
			merged += e.n - 1
			folded = append(folded, e)
		}
	}
	if merged > 0 || skipped > 0 {
		s.hole = s.seq
	}
	s.hub.inboxConflated.Add(merged)
	s.hub.gapReadings.Add(skipped)
	for c, cs := range s.clients {
		told := false
		for _, sub := range cs.subs {
			for _, e := range folded {
				if sub.filter.match(&e.reading) {
					sub.merged += e.n - 1
					told = true
				}
			}
			// Which subscriptions the readings beyond the bound were for
			// is not known: all that take readings are told.
			if skipped > 0 && sub.filter.Presence != PresenceOnly {
				sub.skip(from, to, skipped)
				told = true
			}
			if told && sub.job != nil {
				sub.job.lost = true // the resume cannot be exact: reset
			}
		}
		if told {
			s.markHeld(c, cs)
			if !cs.backlog {
				s.flush(c, cs) // the notices go before the readings
			}
		}
	}
	s.fanOut(rs)
}

// flush sends c what is held back for it, while its queue has room:
// per subscription a reset notice, the resume or the snapshot chunks,
// the watermark, a gap notice, a conflated notice and the conflated
// values, held persisted messages; then held presence events. Once
// nothing is held, live frames go to c directly again. A subscription
// waiting for its history read is skipped (finishResume flushes again).
func (s *hubState) flush(c Client, cs *clientState) {
	for _, sub := range cs.subs {
		if sub.job != nil && sub.job.waiting {
			continue
		}
		for sub.held() {
			if !c.Room() || !s.sendHeld(c, sub) {
				return
			}
		}
	}
	for id, frame := range cs.presence {
		if !c.Room() || !c.Send(frame) {
			return
		}
		delete(cs.presence, id)
		s.hub.presenceEvents.Add(1)
	}
	cs.backlog = false
	delete(s.backlogged, c)
}

// sendHeld sends the next message held back for sub, and reports whether
// c took it (the state advances only then).
func (s *hubState) sendHeld(c Client, sub *subscription) bool {
	chunk := s.hub.cfg.SnapshotChunkBytes
	switch {
	case sub.notice != nil:
		if !c.Send(sub.notice) {
			return false
		}
		sub.notice = nil
	case sub.job != nil:
		return s.sendResume(c, sub) // resume.go
	case !sub.snapDone:
		frame, series, devs, pend := s.snapshotChunk(sub, chunk)
		if !c.Send(frame) {
			return false
		}
		s.hub.snapshotChunks.Add(1)
		sub.snap, sub.snapDevs = sub.snap[series:], sub.snapDevs[devs:]
		for _, sr := range pend {
			delete(sub.pend, sr)
		}
		sub.snapChunk++
		sub.snapDone = len(sub.snap) == 0 && len(sub.snapDevs) == 0 && len(sub.pend) == 0
		if sub.snapDone {
			sub.snap, sub.snapDevs = nil, nil
			sub.done = s.seq
			sub.wmOwed = sub.opts.Persisted // persisted.go: once the last chunk is out
		}
	case sub.wmOwed:
		if !c.Send(s.watermark(sub)) {
			return false
		}
		sub.wmOwed = false
	case sub.skipped > 0:
		frame := append(frameHeadNoReadings(nil, "gap", sub.id, sub.done), `,"skipped":`...)
		frame = strconv.AppendUint(frame, sub.skipped, 10)
		frame = append(frame, `,"from":`...)
		frame = strconv.AppendInt(frame, sub.gapFrom, 10)
		frame = append(frame, `,"to":`...)
		frame = strconv.AppendInt(frame, sub.gapTo, 10)
		if !c.Send(append(frame, '}')) {
			return false
		}
		sub.skipped = 0
	case sub.merged > 0:
		frame := append(frameHeadNoReadings(nil, "conflated", sub.id, sub.done), `,"merged":`...)
		frame = strconv.AppendUint(frame, sub.merged, 10)
		if !c.Send(append(frame, '}')) {
			return false
		}
		sub.merged = 0
	case len(sub.pend) > 0:
		var frame []byte
		sent := s.sent[:0]
		for sr := range sub.pend {
			if len(frame) > 0 {
				frame = append(frame, ',')
			}
			frame = AppendReadingJSON(frame, &sr.reading, &sub.filter)
			if sub.opts.Persisted {
				frame = appendPos(frame, sr.pos)
			}
			sent = append(sent, sr)
			if len(frame) >= chunk {
				break
			}
		}
		s.sent = sent
		defer clear(sent)
		// Only the message that empties the backlog carries a position:
		// then the dashboard has the latest value of every series up to
		// the newest reading fanned out.
		pos := int64(0)
		if len(sent) == len(sub.pend) {
			pos = s.seq
		}
		frame = append(frameHead(make([]byte, 0, len(frame)+64), "readings", sub.id, pos), frame...)
		if !c.Send(append(frame, "]}"...)) {
			return false
		}
		for _, sr := range sent {
			delete(sub.pend, sr)
		}
		if pos > 0 {
			sub.done = pos
		}
		s.hub.deliveries.Add(1)
	default:
		if !c.Send(sub.persisted[0]) {
			return false
		}
		sub.persisted = sub.persisted[1:]
	}
	return true
}

// remember updates the last-value cache with r and returns its series (nil
// when the cache is full and r's series is not in it).
func (s *hubState) remember(r *telemetry.Reading) *series {
	k := appendSeriesKey(s.keyBuf[:0], r)
	s.keyBuf = k
	sr, ok := s.last[string(k)]
	if !ok {
		if len(s.last) >= s.hub.cfg.MaxSeries {
			s.hub.seriesNotRemembered.Add(1)
			return nil
		}
		// A copy of the tags: r's share one allocation with the rest of its
		// frame (the bridge allocates them together), which a series kept for
		// long must not pin.
		sr = &series{reading: telemetry.Reading{Device: r.Device, Measurement: r.Measurement, Tags: slices.Clone(r.Tags)}}
		s.last[string(k)] = sr
	}
	sr.merge(r)
	return sr
}

// startSnapshot lists the series sub's snapshot will carry, sorted; flush
// sends them in chunks (snapshotChunk).
func (s *hubState) startSnapshot(sub *subscription) {
	sub.snap, sub.snapDevs, sub.snapChunk, sub.snapDone = nil, nil, 0, false
	if sub.filter.Presence != PresenceNone {
		for id, d := range s.devices {
			if sub.filter.matchDevice(id, d.tags) {
				sub.snapDevs = append(sub.snapDevs, id)
			}
		}
		slices.Sort(sub.snapDevs)
	}
	if sub.filter.Presence == PresenceOnly {
		return
	}
	for _, sr := range s.last {
		if sub.filter.match(&sr.reading) {
			sub.snap = append(sub.snap, sr)
		}
	}
	slices.SortFunc(sub.snap, func(a, b *series) int {
		switch {
		case a.reading.Device != b.reading.Device:
			return cmpString(string(a.reading.Device), string(b.reading.Device))
		case a.reading.Measurement != b.reading.Measurement:
			return cmpString(a.reading.Measurement, b.reading.Measurement)
		}
		return slices.CompareFunc(a.reading.Tags, b.reading.Tags, func(x, y telemetry.Tag) int {
			if c := cmpString(x.Key, y.Key); c != 0 {
				return c
			}
			return cmpString(x.Value, y.Value)
		})
	})
}

// snapshotChunk encodes sub's next snapshot chunk, about max bytes (at
// least one entry), with current values:
// {"type":"snapshot","pos":…,"sub":…,"chunk":i,"last":bool,"readings":[…]},
// and for a subscription with presence, once the readings are all sent,
// "presence":[…] with the next devices of its list. Series that changed
// since an earlier chunk went out (held in sub.pend) follow the listed
// ones, so that the last chunk, and only it, carries a position: the
// latest one, up to which the snapshot is complete. It returns the frame,
// how many listed series and devices it carries, and the held series it
// carries.
func (s *hubState) snapshotChunk(sub *subscription, max int) ([]byte, int, int, []*series) {
	n := 0
	var body []byte
	for n < len(sub.snap) && (n == 0 || len(body) < max) {
		if n > 0 {
			body = append(body, ',')
		}
		body = AppendReadingJSON(body, &sub.snap[n].reading, &sub.filter)
		n++
	}
	for _, sr := range sub.snap[:n] {
		delete(sub.pend, sr) // sent with its current value
	}
	pend := s.sent[:0]
	if n == len(sub.snap) {
		for sr := range sub.pend {
			if len(body) >= max && len(body) > 0 {
				break
			}
			if len(body) > 0 {
				body = append(body, ',')
			}
			body = AppendReadingJSON(body, &sr.reading, &sub.filter)
			pend = append(pend, sr)
		}
	}
	s.sent = pend
	nd := 0
	var devs []byte
	if sub.filter.Presence != PresenceNone && n == len(sub.snap) && len(pend) == len(sub.pend) {
		now := time.Now().UnixNano()
		for ; nd < len(sub.snapDevs) && (nd == 0 || len(devs)+len(body) < max); nd++ {
			if nd > 0 {
				devs = append(devs, ',')
			}
			// The sweep may lag by up to SweepInterval: online is
			// recomputed against now.
			d := *s.devices[sub.snapDevs[nd]]
			d.online = d.online && now-d.lastSeen <= s.timeout(&d)
			devs = append(devs, '{')
			devs = appendDevice(devs, sub.snapDevs[nd], &d)
		}
	}
	last := n == len(sub.snap) && len(pend) == len(sub.pend) && nd == len(sub.snapDevs)
	pos := int64(0)
	if last {
		pos = s.seq
	}
	frame := frameHeadNoReadings(make([]byte, 0, len(body)+len(devs)+128), "snapshot", sub.id, pos)
	frame = append(frame, `,"chunk":`...)
	frame = strconv.AppendInt(frame, int64(sub.snapChunk), 10)
	frame = append(frame, `,"last":`...)
	frame = strconv.AppendBool(frame, last)
	frame = append(frame, `,"readings":[`...)
	frame = append(frame, body...)
	frame = append(frame, ']')
	if sub.filter.Presence != PresenceNone && n == len(sub.snap) && len(pend) == len(sub.pend) {
		frame = append(frame, `,"presence":[`...)
		frame = append(frame, devs...)
		frame = append(frame, ']')
	}
	return append(frame, '}'), n, nd, pend
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// frameHead starts a message of readings (frameHeadNoReadings).
func frameHead(dst []byte, typ, id string, pos int64) []byte {
	return append(frameHeadNoReadings(dst, typ, id, pos), `,"readings":[`...)
}

// frameHeadNoReadings appends {"type":"<typ>","pos":<pos>,"sub":<id> (no
// closing brace). pos is the stream position up to which the message
// brings its subscriber (resume.go); it comes right after the type, where
// the SSE feed reads it for the event id, and is left out when pos is 0
// (the message completes nothing: a snapshot chunk before the last).
func frameHeadNoReadings(dst []byte, typ, id string, pos int64) []byte {
	dst = append(dst, `{"type":"`...)
	dst = append(dst, typ...)
	dst = append(dst, '"')
	if pos > 0 {
		dst = append(dst, `,"pos":`...)
		dst = strconv.AppendInt(dst, pos, 10)
	}
	dst = append(dst, `,"sub":`...)
	return telemetry.AppendJSONString(dst, id)
}

// encodeFrame encodes the readings of rs that sub matches as one frame, or
// returns nil when none matches. first is the position of rs[0] (the
// others follow it); pos is the message's own (the last it covers).
func encodeFrame(dst []byte, typ string, sub *subscription, rs []telemetry.Reading, first, pos int64) []byte {
	n := 0
	for i := range rs {
		r := &rs[i]
		if !sub.filter.match(r) {
			continue
		}
		if n == 0 {
			dst = frameHead(dst, typ, sub.id, pos)
		} else {
			dst = append(dst, ',')
		}
		dst = AppendReadingJSON(dst, r, &sub.filter)
		if first > 0 && sub.opts.Persisted { // what the watermark refers to (resume.go)
			dst = appendPos(dst, first+int64(i))
		}
		n++
	}
	if n == 0 {
		return nil
	}
	return append(dst, "]}"...)
}

// AppendReadingJSON appends the dashboard form of a reading:
// {"device_id":…,"measurement":…,"ts":<ns>,"fields":{…},"tags":{…},"units":{…}}.
// Only fields f wants are included (f may be nil); "tags" omits device_id and
// "units" appears only when a field declared a unit.
func AppendReadingJSON(dst []byte, r *telemetry.Reading, f *Filter) []byte {
	dst = append(dst, `{"device_id":`...)
	dst = telemetry.AppendJSONString(dst, string(r.Device))
	dst = append(dst, `,"measurement":`...)
	dst = telemetry.AppendJSONString(dst, r.Measurement)
	dst = append(dst, `,"ts":`...)
	dst = strconv.AppendInt(dst, r.Time, 10)
	dst = append(dst, `,"fields":{`...)
	units := false
	first := true
	for _, fl := range r.Fields {
		if f != nil && !f.wantField(fl.Name) {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = telemetry.AppendJSONString(dst, fl.Name)
		dst = append(dst, ':')
		dst = fl.Value.AppendJSON(dst)
		units = units || fl.Unit != ""
	}
	dst = append(dst, `},"tags":`...)
	dst = appendTagsJSON(dst, r.Tags)
	if units {
		dst = append(dst, `,"units":{`...)
		first = true
		for _, fl := range r.Fields {
			if fl.Unit == "" || (f != nil && !f.wantField(fl.Name)) {
				continue
			}
			if !first {
				dst = append(dst, ',')
			}
			first = false
			dst = telemetry.AppendJSONString(dst, fl.Name)
			dst = append(dst, ':')
			dst = telemetry.AppendJSONString(dst, fl.Unit)
		}
		dst = append(dst, '}')
	}
	return append(dst, '}')
}

// appendTagsJSON appends tags as a JSON object, leaving out device_id (the
// dashboard forms carry it as a field of their own).
func appendTagsJSON(dst []byte, tags []telemetry.Tag) []byte {
	dst = append(dst, '{')
	first := true
	for _, t := range tags {
		if t.Key == telemetry.DeviceIDTag {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = telemetry.AppendJSONString(dst, t.Key)
		dst = append(dst, ':')
		dst = telemetry.AppendJSONString(dst, t.Value)
	}
	return append(dst, '}')
}
