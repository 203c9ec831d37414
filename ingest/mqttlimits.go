package ingest

import (
	"sync"
	"time"

	"github.com/telemetryd/telemetryd/telemetry"
)

// MQTT devices get the WebSocket endpoint's limits: a message over
// MaxMessageSize is refused before it is decoded, and each device has a
// token bucket of FrameRate messages per second (FrameBurst deep, by
// default a minute of the rate: see newMQTTLimiter) shared by all the
// consumer's connections. A refused message is acknowledged
// (PUBACK: redelivery would be refused again, and an unacked message would
// hold the broker's in-flight window) and dropped, and counted per reason
// and device. MQTT 3.1.1 has no way to tell the publisher why (a PUBACK
// carries no reason code), so the counts — telemetryd_mqtt_refused_total
// {device, reason} — and a rate-limited log line are what an operator, not
// the device, learns; docs/security.md says so.
//
// Bounds: buckets of devices that have refilled are forgotten by the
// sweep (as the WebSocket slots are); refusal counts are kept for at most
// maxRefusalDevices devices, those beyond are counted under device "".

// Refusal reasons of MQTT messages (the reason label). Invalid payloads
// count as CodeInvalidPayload, and readings the pipeline rejected under
// their rejection code (one count per reading).
const (
	RefusedTooBig      = "too_big"
	RefusedRateLimited = "rate_limited"
)

// maxRefusalDevices bounds the devices refusals are counted for.
const maxRefusalDevices = 1024

// MQTTRefusal is one counter of refused MQTT messages.
type MQTTRefusal struct {
	Device telemetry.DeviceID // "" for devices beyond maxRefusalDevices
	Reason string
	Count  uint64
}

type refusalKey struct {
	device telemetry.DeviceID
	reason string
}

type mqttLimiter struct {
	maxSize int
	rate    WSConfig // FrameRate and FrameBurst: deviceSlot's bucket parameters
	log     logFunc

	mu       sync.Mutex
	buckets  map[telemetry.DeviceID]*deviceSlot
	refused  map[refusalKey]uint64
	devices  map[telemetry.DeviceID]struct{} // with a refusal count
	lastLog  map[telemetry.DeviceID]time.Time
	lastSwep time.Time
}

type logFunc func(msg string, args ...any)

func newMQTTLimiter(cfg MQTTConfig, log logFunc) *mqttLimiter {
	rate := WSConfig{FrameRate: cfg.FrameRate, FrameBurst: cfg.FrameBurst}
	if rate.FrameRate == 0 {
		rate.FrameRate = 100
	}
	if rate.FrameBurst <= 0 {
		// Deeper than the WebSocket bucket: after an outage of telemetryd
		// (or a reconnect) the broker delivers a device's queued messages
		// at once, and a refused MQTT message is lost (it is acked), so
		// the bucket holds a minute of the rate.
		rate.FrameBurst = max(int(60*rate.FrameRate), 1)
	}
	maxSize := cfg.MaxMessageSize
	if maxSize <= 0 {
		maxSize = 256 << 10
	}
	return &mqttLimiter{maxSize: maxSize, rate: rate, log: log,
		buckets: make(map[telemetry.DeviceID]*deviceSlot), refused: make(map[refusalKey]uint64),
		devices: make(map[telemetry.DeviceID]struct{}), lastLog: make(map[telemetry.DeviceID]time.Time)}
}

// admit says whether a message of size bytes from device may be decoded;
// if not, it is counted and the reason returned.
func (l *mqttLimiter) admit(device telemetry.DeviceID, size int, now time.Time) (bool, string) {
	if size > l.maxSize {
		l.count(device, RefusedTooBig, now)
		return false, RefusedTooBig
	}
	l.mu.Lock()
	if now.Sub(l.lastSwep) > time.Minute {
		// Forgetting a refilled bucket changes nothing (see deviceSlot.idle).
		l.lastSwep = now
		for id, s := range l.buckets {
			if s.idle(now, l.rate) {
				delete(l.buckets, id)
			}
		}
		clear(l.lastLog)
	}
	b := l.buckets[device]
	if b == nil {
		b = &deviceSlot{tokens: float64(l.rate.FrameBurst), last: now}
		l.buckets[device] = b
	}
	l.mu.Unlock()
	if ok, _ := b.take(now, l.rate); !ok {
		l.count(device, RefusedRateLimited, now)
		return false, RefusedRateLimited
	}
	return true, ""
}

func (l *mqttLimiter) count(device telemetry.DeviceID, reason string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := device
	if _, ok := l.devices[d]; !ok {
		if len(l.devices) >= maxRefusalDevices {
			d = ""
		} else {
			l.devices[d] = struct{}{}
		}
	}
	l.refused[refusalKey{d, reason}]++
	if now.Sub(l.lastLog[device]) >= time.Minute && len(l.lastLog) < maxRefusalDevices {
		l.lastLog[device] = now
		l.log("mqtt message refused", "device", device, "reason", reason)
	}
}

// countRejected counts readings of device the pipeline rejected, by code:
// an MQTT device gets no rejection answers, so these counts are its only
// trace.
func (l *mqttLimiter) countRejected(device telemetry.DeviceID, rs []telemetry.Rejection, now time.Time) {
	for _, r := range rs {
		l.count(device, r.Code, now)
	}
}

// Refused returns the refusal counters.
func (m *MQTT) Refused() []MQTTRefusal {
	l := m.limits
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]MQTTRefusal, 0, len(l.refused))
	for k, n := range l.refused {
		out = append(out, MQTTRefusal{Device: k.device, Reason: k.reason, Count: n})
	}
	return out
}
