package live

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/telemetryd/telemetryd/telemetry"
)

// Client is one dashboard connection as the Hub sees it.
type Client interface {
	// Send queues one encoded frame for the client without blocking. The
	// frame is shared with other clients and must not be modified. Send
	// returns false when the client's bounded queue is full; the Hub then
	// detaches the client, whose transport closes it (slow-consumer policy).
	Send(frame []byte) bool
}

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
	// (default 16384). When full, Publish drops the batch for live
	// delivery only (storage is unaffected) and counts it.
	InboxBatches int
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
	Published, DroppedBatches, Deliveries   uint64
	SlowClientsDropped, SeriesNotRemembered uint64
	DevicesNotTracked, PresenceEvents       uint64
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
	// resuming is set while the missed readings are read from history:
	// live frames wait in job until they have been sent.
	resuming bool
	job      *resumeJob
}

type clientState struct {
	subs []*subscription
}

type hubOp struct {
	client  Client
	sub     *subscription // subscribe when set
	unsub   string        // unsubscribe id when sub is nil and unsub != ""
	detach  bool
	stats   chan HubStats
	devices chan []DeviceStatus
}

type series struct {
	reading telemetry.Reading // latest time; Fields hold the last value of every field seen
}

// Hub fans normalized readings out to dashboard clients and remembers the
// last value of every series for subscription snapshots. All state is owned
// by the goroutine running Run; other methods only send it messages.
type Hub struct {
	cfg   HubConfig
	log   *slog.Logger
	inbox chan []telemetry.Reading
	ops   chan hubOp

	published, dropped, deliveries, slowDropped, seriesNotRemembered atomic.Uint64
	devicesNotTracked, presenceEvents                                atomic.Uint64

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
	cfg.Resume = cfg.Resume.withDefaults()
	return &Hub{
		cfg:       cfg,
		log:       log,
		inbox:     make(chan []telemetry.Reading, cfg.InboxBatches),
		ops:       make(chan hubOp, 1024),
		resumeHub: newResumeHub(cfg.Resume),
	}
}

// Publish implements bridge.Publisher. It never blocks: when the fan-out is behind
// by more than InboxBatches batches, the batch is not shown live (and is
// counted); it is still stored.
func (h *Hub) Publish(rs []telemetry.Reading) {
	select {
	case h.inbox <- rs:
		h.published.Add(1)
	default:
		h.dropped.Add(1)
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
		Published: h.published.Load(), DroppedBatches: h.dropped.Load(), Deliveries: h.deliveries.Load(),
		SlowClientsDropped: h.slowDropped.Load(), SeriesNotRemembered: h.seriesNotRemembered.Load(),
		DevicesNotTracked: h.devicesNotTracked.Load(), PresenceEvents: h.presenceEvents.Load(),
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
		resumeState: newResumeState(h, ctx.Done()),
	}
	sweep := time.NewTicker(h.cfg.SweepInterval)
	defer sweep.Stop()
	for {
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
		}
	}
}

type hubState struct {
	hub     *Hub
	clients map[Client]*clientState
	last    map[string]*series
	batch   []telemetry.Reading
	keyBuf  []byte
	frames  map[string][]byte
	devices map[string]*device

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
		o.stats <- st
	case o.devices != nil:
		o.devices <- s.deviceList()
	case o.detach:
		delete(s.clients, o.client)
		s.countPersisted()
	case o.sub != nil:
		cs := s.clients[o.client]
		if cs == nil {
			cs = &clientState{}
			s.clients[o.client] = cs
		}
		cs.subs = slices.DeleteFunc(cs.subs, func(x *subscription) bool { return x.id == o.sub.id })
		cs.subs = append(cs.subs, o.sub)
		s.countPersisted()
		if o.sub.opts.Resume {
			s.startResume(o.client, o.sub) // resume.go
			return
		}
		if !o.client.Send(s.snapshot(o.sub, time.Now())) {
			s.dropSlow(o.client)
			return
		}
		s.sendWatermark(o.client, o.sub) // persisted.go
	case o.unsub != "":
		if cs := s.clients[o.client]; cs != nil {
			cs.subs = slices.DeleteFunc(cs.subs, func(x *subscription) bool { return x.id == o.unsub })
		}
		s.countPersisted()
	}
}

func (s *hubState) dropSlow(c Client) {
	delete(s.clients, c)
	s.hub.slowDropped.Add(1)
	s.countPersisted()
}

func (s *hubState) fanOut(rs []telemetry.Reading) {
	now := time.Now()
	first := s.record(rs) // resume.go: positions first+0… and the window
	for i := range rs {
		s.remember(&rs[i])
		s.seen(&rs[i], now)
	}
	if len(s.clients) == 0 {
		return
	}
	if s.frames == nil {
		s.frames = make(map[string][]byte)
	}
	clear(s.frames)
	for c, cs := range s.clients {
		for _, sub := range cs.subs {
			frame, ok := s.frames[sub.key]
			if !ok {
				frame = encodeFrame(nil, "readings", sub, rs, first, first+int64(len(rs))-1)
				s.frames[sub.key] = frame
			}
			if frame == nil {
				continue
			}
			if sub.resuming {
				sub.job.hold(frame) // resume.go: sent after the missed readings
				continue
			}
			if !c.Send(frame) {
				s.dropSlow(c)
				break
			}
			s.hub.deliveries.Add(1)
		}
	}
}

// remember updates the last-value cache with r.
func (s *hubState) remember(r *telemetry.Reading) {
	k := append(s.keyBuf[:0], r.Device...)
	k = append(k, 0)
	k = append(k, r.Measurement...)
	for _, t := range r.Tags {
		k = append(k, 0)
		k = append(k, t.Key...)
		k = append(k, 1)
		k = append(k, t.Value...)
	}
	s.keyBuf = k
	sr, ok := s.last[string(k)]
	if !ok {
		if len(s.last) >= s.hub.cfg.MaxSeries {
			s.hub.seriesNotRemembered.Add(1)
			return
		}
		// A copy of the tags: r's share one allocation with the rest of its
		// frame (the bridge allocates them together), which a series kept for
		// long must not pin.
		sr = &series{reading: telemetry.Reading{Device: r.Device, Measurement: r.Measurement, Tags: slices.Clone(r.Tags)}}
		s.last[string(k)] = sr
	}
	if r.Time >= sr.reading.Time {
		sr.reading.Time = r.Time
	}
	for _, f := range r.Fields {
		if i := slices.IndexFunc(sr.reading.Fields, func(x telemetry.Field) bool { return x.Name == f.Name }); i >= 0 {
			if r.Time >= sr.reading.Time {
				sr.reading.Fields[i] = f
			}
		} else {
			sr.reading.Fields = append(sr.reading.Fields, f)
		}
	}
}

func (s *hubState) snapshot(sub *subscription, now time.Time) []byte {
	var rs []telemetry.Reading
	if sub.filter.Presence != PresenceOnly {
		for _, sr := range s.last {
			rs = append(rs, sr.reading)
		}
	}
	slices.SortFunc(rs, func(a, b telemetry.Reading) int {
		switch {
		case a.Device != b.Device:
			return cmpString(string(a.Device), string(b.Device))
		case a.Measurement != b.Measurement:
			return cmpString(a.Measurement, b.Measurement)
		}
		return 0
	})
	frame := encodeFrame(nil, "snapshot", sub, rs, 0, s.seq)
	if frame == nil { // nothing matched: an empty snapshot still confirms the subscription
		frame = append(frameHead(nil, "snapshot", sub.id, s.seq), "]}"...)
	}
	if sub.filter.Presence != PresenceNone {
		frame = s.appendPresenceList(frame[:len(frame)-1], &sub.filter, now)
		frame = append(frame, '}')
	}
	return frame
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

// frameHead starts a message of readings. pos is the stream position the
// message brings its subscriber up to (resume.go); it comes right after the
// type, where the SSE feed reads it for the event id.
func frameHead(dst []byte, typ, id string, pos int64) []byte {
	dst = append(dst, `{"type":"`...)
	dst = append(dst, typ...)
	dst = append(dst, `","pos":`...)
	dst = strconv.AppendInt(dst, pos, 10)
	dst = append(dst, `,"sub":`...)
	dst = telemetry.AppendJSONString(dst, id)
	return append(dst, `,"readings":[`...)
}

// encodeFrame encodes the readings of rs that sub matches as one frame, or
// returns nil when none matches. first is the position of rs[0] (the
// others follow it), 0 when the readings have none (a snapshot of last
// values); pos is the message's own (the last it covers).
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
