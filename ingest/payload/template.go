package payload

import (
	"slices"

	"github.com/telemetryd/telemetryd/telemetry"
)

// A device sends the same payload shape all day: the same keys in the same
// order, with the same spacing; only the values change. After the fast path
// decodes a single reading, the Decoder keeps its template: the payload's
// bytes with the values cut out, and what each value is (the seq, the time,
// the i-th metric, …). The next payload is first matched against it: the
// text between values is compared as bytes, and only the values are read.
// Keys are neither scanned, dispatched nor interned, and the Message is
// built straight from the values, in the Message's own memory, which makes
// it much cheaper than the fast path (BenchmarkDecodeNative against
// BenchmarkDecodeNativeFastPath).
//
// Why the answer is the fast path's: a payload that matches is the learned
// one, byte for byte, except for the values, and each value is read as the
// fast path reads the value at that place (fastScalar for a metric, and so
// on). The fast path would therefore walk the same keys in the same order,
// with the same counts (so the same limits, and no repeated names, as the
// learned payload had none), and build the same Message from the same
// values. Anything unexpected — a value the fast path would not take, or
// text that differs — gives up, and the payload takes the fast path, which
// learns its template in turn. TestTemplateAgrees and FuzzTemplateAgrees
// check the answers against the general path.
//
// Only single readings whose metrics are plain values have templates:
// typed fields ({"value":..,"type":..}) and batches take the fast path.

// maxTemplateSize bounds the payloads whose template is kept (and so what
// a Decoder keeps for it).
const maxTemplateSize = 2048

// slotRole says what a value in a template is.
type slotRole uint8

const (
	roleSeq slotRole = iota
	roleTime
	roleMeasurement
	roleDevice
	roleTag    // the value of tag index
	roleMetric // the value of metric index
)

// templateSlot is one value of a template. It holds no pointers, so that
// learning a template is a plain copy.
type templateSlot struct {
	end   int32 // where the text before this value ends in template.text
	index int32 // the tag's or metric's position in the reading
	role  slotRole
}

// template is the shape of the last single reading the fast path decoded.
type template struct {
	text    []byte // the learned payload without its values
	slots   []templateSlot
	last    []string // per slot, a string value's last value, reused while its bytes repeat
	metrics []string // metric names, in payload order
	tagKeys []string // tag keys, in payload order

	// A Decoder shared by devices of different layouts (a pool of them,
	// or one MQTT worker for a whole fleet) could miss its template on
	// most payloads and pay for learning a new one each time. So the
	// matches and misses of every templateRound payloads are counted, and
	// when misses win, templates are neither tried nor learned for the
	// next templatePause payloads.
	hits, misses, pause int
}

const (
	templateRound = 32
	templatePause = 1024
)

// recordedSlot is a value the fast path read while recording: data[start:end].
type recordedSlot struct {
	start, end int
	role       slotRole
	index      int
}

// record notes a value the fast path read, when it is recording.
func (d *Decoder) record(start, end int, role slotRole, index int) {
	if d.recording {
		d.recorded = append(d.recorded, recordedSlot{start: start, end: end, role: role, index: index})
	}
}

// learn makes data, which the fast path decoded into msg while recording,
// the Decoder's template.
func (d *Decoder) learn(data []byte, msg Message) {
	t := &d.tmpl
	r := &msg.Readings[0]
	t.text, t.slots = t.text[:0], t.slots[:0]
	from := 0
	for _, s := range d.recorded {
		t.text = append(t.text, data[from:s.start]...)
		t.slots = append(t.slots, templateSlot{end: int32(len(t.text)), role: s.role, index: int32(s.index)})
		from = s.end
	}
	t.text = append(t.text, data[from:]...)
	t.last = slices.Grow(t.last[:0], len(t.slots))[:len(t.slots)]
	clear(t.last)
	t.metrics = t.metrics[:0]
	for _, f := range r.Fields {
		t.metrics = append(t.metrics, f.Name)
	}
	t.tagKeys = t.tagKeys[:0]
	for _, tag := range r.Tags {
		t.tagKeys = append(t.tagKeys, tag.Key)
	}
}

// forget drops the template.
func (d *Decoder) forget() {
	t := &d.tmpl
	t.text, t.slots, t.metrics, t.tagKeys = t.text[:0], t.slots[:0], t.metrics[:0], t.tagKeys[:0]
	clear(t.last)
}

// learning reports whether the fast path should record data's values to
// learn its template.
func (d *Decoder) learning(data []byte) bool {
	return len(data) <= maxTemplateSize && d.tmpl.pause == 0
}

// decodeTemplate decodes data when it matches the template (ok false
// otherwise; see the comment at the top of this file).
func (d *Decoder) decodeTemplate(data []byte) (msg Message, ok bool) {
	t := &d.tmpl
	if t.pause > 0 {
		t.pause--
		return Message{}, false
	}
	if len(t.slots) == 0 {
		return Message{}, false
	}
	msg, ok = d.matchTemplate(data)
	if ok {
		t.hits++
	} else {
		t.misses++
	}
	if t.hits+t.misses == templateRound {
		if t.misses > t.hits {
			t.pause = templatePause
			d.forget()
		}
		t.hits, t.misses = 0, 0
	}
	return msg, ok
}

// matchTemplate is decodeTemplate's match.
func (d *Decoder) matchTemplate(data []byte) (msg Message, ok bool) {
	t := &d.tmpl
	// The values are read straight into the Message's memory, built as
	// fastMessage builds it (one spare tag slot included). A payload that
	// turns out not to match leaves its block unused in the slab.
	nf, nt := len(t.metrics), len(t.tagKeys)
	tagSlots := nt
	if nt > 0 {
		tagSlots++
	}
	var fields []telemetry.Field
	var tags []telemetry.Tag
	msg.Readings, fields, tags = d.messageMemory(1, nf, tagSlots)
	r := &msg.Readings[0]
	p := fastScanner{s: data}
	from := 0
	for i := range t.slots {
		s := &t.slots[i]
		last := &t.last[i]
		text := t.text[from:s.end]
		from = int(s.end)
		if len(data)-p.i < len(text) || string(data[p.i:p.i+len(text)]) != string(text) {
			return Message{}, false
		}
		p.i += len(text)
		switch s.role {
		case roleSeq:
			if msg.Seq, msg.HasSeq = parseUintLiteral(p.number()); !msg.HasSeq {
				return Message{}, false
			}
		case roleTime:
			if r.Time, ok = fastTime(&p); !ok {
				return Message{}, false
			}
		case roleMeasurement:
			b, ok := p.str()
			if !ok {
				return Message{}, false
			}
			if len(b) > 0 {
				r.Measurement = d.internAt(last, b)
			}
		case roleDevice:
			b, ok := p.str()
			if !ok {
				return Message{}, false
			}
			r.Device = telemetry.DeviceID(d.internAt(last, b))
		case roleTag:
			b, ok := p.str()
			if !ok {
				return Message{}, false
			}
			tags[s.index].Value = d.internAt(last, b)
		case roleMetric:
			if fields[s.index].Value, ok = d.fastScalar(&p); !ok {
				return Message{}, false
			}
		}
	}
	if text := t.text[from:]; len(data)-p.i != len(text) || string(data[p.i:]) != string(text) {
		return Message{}, false
	}
	for i, name := range t.metrics {
		fields[i].Name = name
	}
	for i, key := range t.tagKeys {
		tags[i].Key = key
	}
	if r.Measurement == "" {
		r.Measurement = defaultMeasurement
	}
	r.Fields = fields[:nf:nf]
	if nt > 0 {
		r.Tags = tags[: nt : nt+1]
	}
	return msg, true
}

// internAt interns a slot's string value as the fast path does, but first
// compares it with the slot's last value.
func (d *Decoder) internAt(last *string, b []byte) string {
	if *last == string(b) {
		return *last
	}
	v := d.intern(b)
	if len(v) <= maxInternLen { // pins no more than the caches do
		*last = v
	}
	return v
}
