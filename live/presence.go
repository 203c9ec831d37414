package live

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/telemetryd/telemetryd/telemetry"
)

// Presence is derived from readings alone: the Hub sees every accepted
// reading, so a device is online from its first reading until it has been
// silent for longer than its offline timeout (HubConfig.OfflineAfter, or
// twice its typical reporting interval when that is longer). Transitions are
// pushed to subscriptions that ask for presence; the periodic sweep in
// Hub.Run finds devices gone silent. Everything here runs on the Hub's
// goroutine.

// maxOfflineAfter caps the adaptive timeout, so a device that once paused
// for a week does not stay "online" for two.
const maxOfflineAfter = 24 * time.Hour

type device struct {
	tags     []telemetry.Tag // of the latest reading (shared, never modified)
	lastSeen int64           // Unix ns, server clock
	interval float64         // moving average of the gaps between readings, ns
	online   bool
}

func (s *hubState) timeout(d *device) int64 {
	t := float64(s.hub.cfg.OfflineAfter)
	if 2*d.interval > t {
		t = min(2*d.interval, float64(maxOfflineAfter))
	}
	return int64(t)
}

// seen records a reading's arrival and announces a device coming online.
func (s *hubState) seen(r *telemetry.Reading, now time.Time) {
	if s.devices == nil {
		s.devices = make(map[string]*device)
	}
	ns := now.UnixNano()
	d, ok := s.devices[string(r.Device)]
	if !ok {
		if len(s.devices) >= s.hub.cfg.MaxDevices {
			s.hub.devicesNotTracked.Add(1)
			return
		}
		d = &device{}
		s.devices[string(r.Device)] = d
	} else if gap := float64(ns - d.lastSeen); d.lastSeen > 0 && gap > float64(time.Millisecond) {
		// Readings that arrive together (one frame, one batch) are not
		// gaps. The average follows a changed rate within a few readings.
		if d.interval == 0 {
			d.interval = gap
		} else {
			d.interval += (gap - d.interval) / 4
		}
	}
	// Copied, and only when they changed: r's tags share one allocation with
	// the rest of its frame (the bridge allocates them together), which a
	// device kept for long must not pin.
	if !slices.Equal(d.tags, r.Tags) {
		d.tags = slices.Clone(r.Tags)
	}
	d.lastSeen = ns
	if !d.online {
		d.online = true
		s.announce(string(r.Device), d)
	}
}

// sweep marks devices silent for longer than their timeout offline, and
// announces them in id order.
func (s *hubState) sweep(now time.Time) {
	ns := now.UnixNano()
	var gone []string
	for id, d := range s.devices {
		if d.online && ns-d.lastSeen > s.timeout(d) {
			d.online = false
			gone = append(gone, id)
		}
	}
	slices.Sort(gone)
	for _, id := range gone {
		s.announce(id, s.devices[id])
	}
}

// announce sends a presence event for d to every client with a matching
// subscription, once per client.
func (s *hubState) announce(id string, d *device) {
	var frame []byte
	for c, cs := range s.clients {
		if !slices.ContainsFunc(cs.subs, func(sub *subscription) bool { return sub.filter.matchDevice(id, d.tags) }) {
			continue
		}
		if frame == nil {
			frame = appendPresence(nil, id, d)
		}
		if !cs.backlog && c.Send(frame) {
			s.hub.presenceEvents.Add(1)
			continue
		}
		if !cs.backlog && !s.full(c, cs) {
			continue
		}
		// Held back, latest per device, and sent after the backlog.
		if cs.presence == nil {
			cs.presence = make(map[string][]byte)
		}
		cs.presence[id] = frame
	}
}

// appendPresence appends {"type":"presence","device_id":…,"online":…,"last_seen":…,"tags":{…}}.
func appendPresence(dst []byte, id string, d *device) []byte {
	dst = append(dst, `{"type":"presence",`...)
	return appendDevice(dst, id, d)
}

// appendDevice appends the fields of a presence object (without the
// opening brace).
func appendDevice(dst []byte, id string, d *device) []byte {
	dst = append(dst, `"device_id":`...)
	dst = telemetry.AppendJSONString(dst, id)
	dst = append(dst, `,"online":`...)
	dst = strconv.AppendBool(dst, d.online)
	dst = append(dst, `,"last_seen":`...)
	dst = strconv.AppendInt(dst, d.lastSeen, 10)
	dst = append(dst, `,"tags":`...)
	dst = appendTagsJSON(dst, d.tags)
	return append(dst, '}')
}

func (s *hubState) deviceList() []DeviceStatus {
	now := time.Now().UnixNano()
	out := make([]DeviceStatus, 0, len(s.devices))
	for id, d := range s.devices {
		tags := make([]telemetry.Tag, 0, len(d.tags))
		for _, t := range d.tags {
			if t.Key != telemetry.DeviceIDTag {
				tags = append(tags, t)
			}
		}
		out = append(out, DeviceStatus{
			ID: id, Tags: tags, LastSeen: time.Unix(0, d.lastSeen),
			Online: d.online && now-d.lastSeen <= s.timeout(d),
		})
	}
	slices.SortFunc(out, func(a, b DeviceStatus) int { return strings.Compare(a.ID, b.ID) })
	return out
}
