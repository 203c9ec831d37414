package payload

import (
	"errors"
	"fmt"
	"hash/maphash"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/valyala/fastjson"

	"github.com/telemetryd/telemetryd/telemetry"
)

// Frame-level errors. Decode wraps them; check with errors.Is.
var (
	// ErrInvalidPayload: the payload as a whole cannot be decoded.
	ErrInvalidPayload = errors.New("invalid payload")
	// ErrTooManyReadings: the payload carries more than Limits.MaxReadings readings.
	ErrTooManyReadings = errors.New("too many readings")
)

// Reading-level error codes, used in telemetry.Rejection.Code.
const (
	// CodeInvalidValue: a metric, tag or unit has a value of the wrong type or out of range.
	CodeInvalidValue = "invalid_value"
	// CodeInvalidTimestamp: the reading's time is malformed, negative or out of range.
	CodeInvalidTimestamp = "invalid_timestamp"
	// CodeInvalidReading: the reading is malformed as a whole (not an object,
	// no metrics, too many fields or tags, duplicate names, no SenML value).
	CodeInvalidReading = "invalid_reading"
)

// defaultMeasurement is used when a reading names no measurement.
const defaultMeasurement = "telemetry"

// Limits bound what one payload may carry. Zero fields get defaults.
type Limits struct {
	MaxReadings int // readings (or SenML records) per payload; default 5000
	MaxFields   int // metrics per reading; default 256
	MaxTags     int // tags per reading; default 32
}

// DefaultLimits is what a zero (or negative) Limits field stands for.
func DefaultLimits() Limits { return Limits{MaxReadings: 5000, MaxFields: 256, MaxTags: 32} }

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxReadings <= 0 {
		l.MaxReadings = d.MaxReadings
	}
	if l.MaxFields <= 0 {
		l.MaxFields = d.MaxFields
	}
	if l.MaxTags <= 0 {
		l.MaxTags = d.MaxTags
	}
	return l
}

// Message is a decoded payload.
type Message struct {
	// Seq is the payload's sequence number, valid when HasSeq is set.
	Seq    uint64
	HasSeq bool
	// Readings has one entry per reading or SenML record, in payload order.
	// Entries that failed to decode (see Invalid) or SenML records that only
	// set base values (see Skipped) are zero Reading placeholders, so that
	// Readings[i] always corresponds to the payload's i-th reading.
	Readings []telemetry.Reading
	// Invalid lists the readings that failed to decode, sorted by Index.
	Invalid []telemetry.Rejection
	// Skipped lists, in ascending order, the indexes of SenML records that
	// only carried base values (bn, bt, bu, bv, bs, bver) and no name or
	// value. They are not errors; their Readings slots are placeholders.
	Skipped []int
}

// Decoder decodes payloads. It is not safe for concurrent use; see the
// package documentation.
type Decoder struct {
	limits Limits
	parser fastjson.Parser

	// fields and tags are the backing arrays of the Message being decoded,
	// sized up front from the payload: each reading's Fields and Tags are
	// capped sub-slices of them, so a payload costs one allocation for all
	// its fields and one for all its tags. They are handed over with the
	// Message and never reused.
	fields []telemetry.Field
	tags   []telemetry.Tag

	// Scratch space reused by every Decode.
	names []string // one reading's names, for duplicate detection
	num   []byte   // raw text of the number being decoded
	name  []byte   // resolved SenML name

	// The fast path's scratch (fast.go): one payload's readings, fields and
	// tags before they are copied into the Message's own arrays.
	fastReadings []fastReading
	fastFields   []telemetry.Field
	fastTags     []telemetry.Tag

	interned map[string]string // names: measurements, devices, fields, tags, units
	values   map[string]string // short string values: "ok", "on", "idle"

	// recentNames and recentValues sit in front of the two maps: direct-
	// mapped by a hash of the bytes, a name repeated from the last payloads
	// costs a hash and one comparison, a fraction of a map lookup, and a
	// reading has a name lookup per field and tag.
	recentSeed   maphash.Seed
	recentNames  [recentSlots]string
	recentValues [recentSlots]string

	// lastNames[i] is the i-th name interned in the last reading (nameAt
	// counts them in the current one; the fast path resets it per reading).
	lastNames [16]string
	nameAt    int

	// The template of the last single reading (template.go), and the
	// fast path's record of where the values were.
	tmpl      template
	recorded  []recordedSlot
	recording bool

	// Where the fast paths' Messages get their memory (fast.go).
	blocks messageBlocks

	// CBOR (cbor.go): the decoding mode, built on first use, the arena a
	// payload's values are built in, and the walker's scratch buffer.
	cbor        cbor.DecMode
	arena       fastjson.Arena
	cborScratch []byte
	cborKeys    map[string]string
}

const recentSlots = 256 // a power of two

// Interning bounds: names repeat in every frame of a device, and so do
// enum-like string values, so small per-Decoder caches save an allocation
// for each. They stop growing when full (rather than evicting) so a sender
// cycling through random strings costs nothing but a lookup. Values have
// their own cache so that they cannot crowd out names.
const (
	maxInterned   = 1024
	maxInternLen  = 64
	maxValues     = 256
	maxValueLen   = 16
	maxRetainSize = 1 << 20 // scratch bigger than this is dropped after a payload
)

// NewDecoder returns a Decoder enforcing l; zero fields of l get defaults.
func NewDecoder(l Limits) *Decoder {
	return &Decoder{
		limits:     l.withDefaults(),
		interned:   make(map[string]string),
		values:     make(map[string]string),
		recentSeed: maphash.MakeSeed(),
	}
}

// Decode decodes one payload. now is the receive time, which SenML relative
// times are resolved against. data is not retained: it may be reused as
// soon as Decode returns.
//
// A frame-level problem returns an error wrapping ErrInvalidPayload or
// ErrTooManyReadings and a Message that carries only Seq/HasSeq (when the
// payload was an object whose "seq" could still be read). Problems with
// individual readings are reported in Message.Invalid instead.
func (d *Decoder) Decode(data []byte, now time.Time) (Message, error) {
	defer d.release(len(data))

	// Format detection: CBOR starts with an array or map header (never
	// text), line protocol with a measurement and a field assignment
	// (never '{' or '['); everything else is JSON.
	if IsCBOR(data) {
		return d.decodeCBOR(data, now)
	}
	if looksLikeLineProtocol(data) {
		return d.decodeLineProtocol(data, lpPrecision(time.Nanosecond))
	}
	if m, ok := d.decodeTemplate(data); ok {
		return m, nil
	}
	if m, ok := d.decodeFast(data); ok {
		return m, nil
	}
	return d.decodeGeneral(data, now)
}

// decodeGeneral decodes any payload through a fastjson tree.
func (d *Decoder) decodeGeneral(data []byte, now time.Time) (Message, error) {
	d.nameAt = 0
	root, err := d.parser.ParseBytes(data)
	if err != nil {
		var m Message
		m.Seq, m.HasSeq = scanSeq(data)
		return m, fmt.Errorf("%w: malformed JSON: %v", ErrInvalidPayload, err)
	}
	return d.decodeValue(root, now)
}

// decodeValue applies the payload rules to a decoded value tree: JSON's
// (decodeGeneral) or CBOR's (cbor.go).
func (d *Decoder) decodeValue(root *fastjson.Value, now time.Time) (Message, error) {
	d.nameAt = 0
	switch root.Type() {
	case fastjson.TypeArray:
		return d.decodeSenML(Message{}, root.GetArray(), defaultMeasurement, now)
	case fastjson.TypeObject:
		return d.decodeObject(root.GetObject(), now)
	default:
		return Message{}, fmt.Errorf("%w: payload is a JSON %s, want an object or an array", ErrInvalidPayload, root.Type())
	}
}

// decodeObject decodes a payload object: a native reading, a native batch or
// a SenML envelope, told apart by which of "metrics", "readings" and "senml"
// it has.
func (d *Decoder) decodeObject(obj *fastjson.Object, now time.Time) (Message, error) {
	var seq, metrics, tags, readings, senml, measurement *fastjson.Value
	obj.Visit(func(k []byte, v *fastjson.Value) {
		switch string(k) {
		case "seq":
			first(&seq, v)
		case "metrics":
			first(&metrics, v)
		case "tags":
			first(&tags, v)
		case "readings":
			first(&readings, v)
		case "senml":
			first(&senml, v)
		case "measurement":
			first(&measurement, v)
		}
	})

	var msg Message
	if seq != nil {
		n, ok := d.parseSeq(seq)
		if !ok {
			return msg, fmt.Errorf("%w: seq must be a non-negative integer, got %s", ErrInvalidPayload, describe(seq))
		}
		msg.Seq, msg.HasSeq = n, true
	}

	switch countSet(metrics, readings, senml) {
	case 0:
		return msg, fmt.Errorf(`%w: object has none of "metrics", "readings" or "senml"`, ErrInvalidPayload)
	case 1:
	default:
		return msg, fmt.Errorf(`%w: object has more than one of "metrics", "readings" and "senml"`, ErrInvalidPayload)
	}

	switch {
	case metrics != nil:
		return d.decodeSingle(msg, obj, metrics, tags), nil
	case readings != nil:
		if readings.Type() != fastjson.TypeArray {
			return msg, fmt.Errorf("%w: readings must be an array, got %s", ErrInvalidPayload, readings.Type())
		}
		return d.decodeBatch(msg, readings.GetArray())
	default:
		if senml.Type() != fastjson.TypeArray {
			return msg, fmt.Errorf("%w: senml must be an array, got %s", ErrInvalidPayload, senml.Type())
		}
		m := defaultMeasurement
		if measurement != nil {
			b, ok := stringBytes(measurement)
			if !ok {
				return msg, fmt.Errorf("%w: measurement must be a string, got %s", ErrInvalidPayload, measurement.Type())
			}
			if len(b) > 0 {
				m = d.intern(b)
			}
		}
		return d.decodeSenML(msg, senml.GetArray(), m, now)
	}
}

// first stores v in *dst unless an earlier occurrence of the key already did:
// with repeated keys the first one counts, as in the seq scan of malformed
// payloads.
func first(dst **fastjson.Value, v *fastjson.Value) {
	if *dst == nil {
		*dst = v
	}
}

func countSet(vs ...*fastjson.Value) int {
	n := 0
	for _, v := range vs {
		if v != nil {
			n++
		}
	}
	return n
}

// parseSeq accepts only a plain non-negative integer literal: a sequence
// number written as 1.0 or 1e3 is a sender bug worth reporting.
func (d *Decoder) parseSeq(v *fastjson.Value) (uint64, bool) {
	if v.Type() != fastjson.TypeNumber {
		return 0, false
	}
	d.num = v.MarshalTo(d.num[:0])
	return parseUintLiteral(d.num)
}

// decodeSingle decodes a payload that is itself one native reading.
func (d *Decoder) decodeSingle(msg Message, obj *fastjson.Object, metrics, tags *fastjson.Value) Message {
	d.allocate(objectLen(metrics, d.limits.MaxFields), objectLen(tags, d.limits.MaxTags))
	msg.Readings = make([]telemetry.Reading, 1)
	d.nativeSlot(&msg, 0, obj)
	return msg
}

// decodeBatch decodes the elements of a native "readings" array.
func (d *Decoder) decodeBatch(msg Message, elems []*fastjson.Value) (Message, error) {
	if len(elems) > d.limits.MaxReadings {
		return msg, fmt.Errorf("%w: %d readings, at most %d allowed", ErrTooManyReadings, len(elems), d.limits.MaxReadings)
	}
	// Size the fields and tags arrays in a first pass: looking up two keys
	// per reading is much cheaper than growing the arrays.
	nf, nt := 0, 0
	for _, el := range elems {
		if el.Type() == fastjson.TypeObject {
			o := el.GetObject()
			nf += objectLen(o.Get("metrics"), d.limits.MaxFields)
			nt += objectLen(o.Get("tags"), d.limits.MaxTags)
		}
	}
	d.allocate(nf, nt)
	msg.Readings = make([]telemetry.Reading, len(elems))
	for i, el := range elems {
		if el.Type() != fastjson.TypeObject {
			msg.reject(i, problemf(CodeInvalidReading, "reading is a JSON %s, want an object", el.Type()))
			continue
		}
		d.nativeSlot(&msg, i, el.GetObject())
	}
	return msg, nil
}

// nativeSlot decodes one native reading into msg.Readings[i], or records
// its rejection and takes back the fields and tags it had appended.
func (d *Decoder) nativeSlot(msg *Message, i int, obj *fastjson.Object) {
	f0, t0 := len(d.fields), len(d.tags)
	r, p := d.nativeReading(obj)
	if !p.ok() {
		d.fields, d.tags = d.fields[:f0], d.tags[:t0]
		msg.reject(i, p)
		return
	}
	r.Fields = d.take(f0)
	if len(d.tags) > t0 {
		r.Tags = d.tags[t0:len(d.tags):len(d.tags)]
	}
	msg.Readings[i] = r
}

// allocate sizes the backing arrays of a new Message. The counts are hints:
// should a payload carry more (the count skipped a repeated key, say), the
// arrays grow by append, and readings already decoded keep pointing at the
// old array, which stays valid.
func (d *Decoder) allocate(fields, tags int) {
	d.fields = make([]telemetry.Field, 0, fields)
	if tags > 0 {
		d.tags = make([]telemetry.Tag, 0, tags)
	}
}

// take returns the fields appended since f0 as one reading's Fields. The
// slice is capped so that a consumer appending to it cannot overwrite the
// next reading's fields in the shared array.
func (d *Decoder) take(f0 int) []telemetry.Field {
	return d.fields[f0:len(d.fields):len(d.fields)]
}

// objectLen returns the member count of v when it is an object within limit
// members, else 0 (the reading will be rejected or has none).
func objectLen(v *fastjson.Value, limit int) int {
	if v == nil || v.Type() != fastjson.TypeObject {
		return 0
	}
	if n := v.GetObject().Len(); n <= limit {
		return n
	}
	return 0
}

func (m *Message) reject(i int, p problem) {
	m.Invalid = append(m.Invalid, telemetry.Rejection{Index: i, Code: p.code, Message: p.msg})
}

// release hands the Message's arrays over, drops the scratch space's
// references to this payload's strings, so a pooled Decoder does not keep
// them alive, and frees scratch space that an unusually large payload grew.
func (d *Decoder) release(payloadSize int) {
	d.fields, d.tags = nil, nil
	clear(d.names[:cap(d.names)])
	d.names = d.names[:0]
	// The fast scratch only grows during a payload, so clearing its length
	// clears everything it wrote.
	clear(d.fastReadings)
	clear(d.fastFields)
	clear(d.fastTags)
	if payloadSize > maxRetainSize {
		d.fastReadings, d.fastFields, d.fastTags = nil, nil, nil
		// The parser keeps a copy of the payload and a value per JSON node.
		d.parser = fastjson.Parser{}
		d.names, d.num, d.name = nil, nil, nil
	}
}

// intern returns a name as a string, sharing one copy between payloads.
func (d *Decoder) intern(b []byte) string {
	// A device sends the same names in the same order in every reading:
	// the name read at this position of the last reading is the likely
	// match, and one comparison with it costs less than hashing b.
	i := d.nameAt
	d.nameAt++
	if i >= len(d.lastNames) {
		return d.internRecent(&d.recentNames, d.interned, b, maxInterned, maxInternLen)
	}
	if s := d.lastNames[i]; s == string(b) {
		return s
	}
	s := d.internRecent(&d.recentNames, d.interned, b, maxInterned, maxInternLen)
	if len(s) <= maxInternLen { // pins no more than the caches do
		d.lastNames[i] = s
	}
	return s
}

// internValue returns a string value as a string, sharing one copy between
// payloads when it is short.
func (d *Decoder) internValue(b []byte) string {
	return d.internRecent(&d.recentValues, d.values, b, maxValues, maxValueLen)
}

// internRecent is internIn behind the recent cache. Only strings the map
// may hold (at most maxLen bytes) are cached, so the cache pins no more
// than the map's bound does.
func (d *Decoder) internRecent(recent *[recentSlots]string, m map[string]string, b []byte, maxEntries, maxLen int) string {
	slot := &recent[maphash.Bytes(d.recentSeed, b)&(recentSlots-1)]
	if *slot == string(b) {
		return *slot
	}
	s := internIn(m, b, maxEntries, maxLen)
	if len(s) <= maxLen {
		*slot = s
	}
	return s
}

// internIn returns b as a string from cache m, adding it while m has fewer
// than maxEntries entries and b is at most maxLen bytes long. The lookup
// with string(b) does not allocate.
func internIn(m map[string]string, b []byte, maxEntries, maxLen int) string {
	if len(b) == 0 {
		return ""
	}
	if s, ok := m[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(s) <= maxLen && len(m) < maxEntries {
		m[s] = s
	}
	return s
}

// problem is a reading-level failure; the zero problem means success.
type problem struct {
	code, msg string
}

func (p problem) ok() bool { return p.code == "" }

func problemf(code, format string, args ...any) problem {
	return problem{code: code, msg: fmt.Sprintf(format, args...)}
}

// describe names a JSON value for an error message: its literal when it is a
// short scalar, else its type.
func describe(v *fastjson.Value) string {
	const maxShown = 32
	switch v.Type() {
	case fastjson.TypeNumber, fastjson.TypeTrue, fastjson.TypeFalse, fastjson.TypeNull:
		if b := v.MarshalTo(nil); len(b) <= maxShown {
			return string(b)
		}
	case fastjson.TypeString:
		if b := v.GetStringBytes(); len(b) <= maxShown {
			return fmt.Sprintf("string %q", b)
		}
	}
	return v.Type().String()
}
