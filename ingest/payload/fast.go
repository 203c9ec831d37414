package payload

import (
	"encoding/binary"
	"math/bits"
	"unsafe"

	"github.com/telemetryd/telemetryd/telemetry"
)

// The fast path decodes the payloads devices send all day — native single
// readings and batches whose strings have no escapes — in one pass over the
// bytes, without building a JSON tree: on the service's hot path that tree
// (fastjson's parse, then a visit per object) cost more than everything the
// bridge does with a reading.
//
// It handles a strict subset of the format and gives up (ok false) the
// moment a payload steps outside it: an escape or control character in a
// string, an unknown or repeated key, SenML, null where a value belongs,
// a limit reached, or any reading-level problem. Decode then decodes the
// payload again on the general path, which produces the errors and
// rejections. So the fast path never has to describe a problem, and its
// answer for a payload it accepts must equal the general path's — which
// FuzzFastPathAgrees checks on every input the fuzzer finds.

// fastReading is one reading being decoded: its fields and tags are
// d.fastFields[f0:f1] and d.fastTags[t0:t1] until the message is built.
type fastReading struct {
	measurement string
	device      telemetry.DeviceID
	time        int64
	f0, f1      int
	t0, t1      int
	seen        uint8 // readingKey bits
}

// Bits of fastReading.seen, one per reading key: a key that repeats makes
// the fast path give up (the general path lets its first occurrence count).
const (
	seenTS uint8 = 1 << iota
	seenMeasurement
	seenDevice
	seenTags
	seenMetrics
)

// fastScanner walks a payload. Every method skips the whitespace before
// what it reads and reports false when the bytes are not what the fast
// path handles.
type fastScanner struct {
	s []byte
	i int
}

func (p *fastScanner) ws() {
	for p.i < len(p.s) && p.s[p.i] <= ' ' && isSpace(p.s[p.i]) {
		p.i++
	}
}

// peek returns the next non-space byte without consuming it (0 at the end).
func (p *fastScanner) peek() byte {
	p.ws()
	if p.i < len(p.s) {
		return p.s[p.i]
	}
	return 0
}

// consume reads c, which must be the next non-space byte.
func (p *fastScanner) consume(c byte) bool {
	if p.peek() != c {
		return false
	}
	p.i++
	return true
}

// more reads what follows a member or element: true after a comma (another
// one follows), false after close (the container ended); ok is false for
// anything else.
func (p *fastScanner) more(close byte) (more, ok bool) {
	switch p.peek() {
	case ',':
		p.i++
		return true, true
	case close:
		p.i++
		return false, true
	}
	return false, false
}

// str reads a string without escapes or control characters and returns its
// content, which aliases the payload.
func (p *fastScanner) str() ([]byte, bool) {
	if !p.consume('"') {
		return nil, false
	}
	start := p.i
	// Eight bytes at a time; the lowest bit of stopsString's mask marks
	// the first byte that stops the scan. The last few bytes go one by one.
	for {
		if p.i+8 > len(p.s) {
			for p.i < len(p.s) && !stringStop[p.s[p.i]] {
				p.i++
			}
			break
		}
		if m := stopsString(binary.LittleEndian.Uint64(p.s[p.i:])); m != 0 {
			p.i += bits.TrailingZeros64(m) >> 3
			break
		}
		p.i += 8
	}
	if p.i == len(p.s) || p.s[p.i] != '"' {
		return nil, false
	}
	p.i++
	return p.s[start : p.i-1], true
}

// stopsString is non-zero when one of the eight bytes in x (little-endian)
// is a quote, a backslash or a control character: the classic SWAR byte
// tests, whose borrows can only mark bytes above a byte that truly
// matches, so the lowest set bit (0x80 of a byte) is always exact.
func stopsString(x uint64) uint64 {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	hasZero := func(v uint64) uint64 { return (v - ones) &^ v & highs }
	return hasZero(x^(ones*'"')) | hasZero(x^(ones*'\\')) | (x-ones*0x20)&^x&highs
}

// stringStop marks the bytes that end the fast scan of a string: its
// closing quote, and what the fast path leaves to the general one (an
// escape, a control character).
var stringStop = func() (t [256]bool) {
	for c := range 0x20 {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

// key reads an object key and its colon.
func (p *fastScanner) key() ([]byte, bool) {
	k, ok := p.str()
	return k, ok && p.consume(':')
}

// number reads the characters fastjson would take as a number literal; the
// caller checks the strict grammar (parseDecimal via the *Literal helpers).
func (p *fastScanner) number() []byte {
	p.ws()
	start := p.i
	// Timestamps are long runs of digits: eight at a time, then the rest
	// (and any sign, point or exponent) one by one.
	for p.i+8 <= len(p.s) && eightDigits(binary.LittleEndian.Uint64(p.s[p.i:])) {
		p.i += 8
	}
	for p.i < len(p.s) && numberChars[p.s[p.i]] {
		p.i++
	}
	return p.s[start:p.i]
}

// plainNumber reads what number reads, and parses it in the same pass when
// it is plain (see parsePlainNumber): most values are, so their digits are
// read once, not once to find the end and again to parse.
func (p *fastScanner) plainNumber() (raw []byte, x plainNumber, plain bool) {
	p.ws()
	start := p.i
	x, p.i, plain = scanPlainNumber(p.s, p.i)
	if p.i < len(p.s) && numberChars[p.s[p.i]] {
		// An exponent, or a literal that is not plain: the rest of
		// what number would take, for the general helpers.
		plain = false
		for p.i < len(p.s) && numberChars[p.s[p.i]] {
			p.i++
		}
	}
	return p.s[start:p.i], x, plain
}

// numberChars marks the bytes number takes: isNumberChar as a table.
var numberChars = func() (t [256]bool) {
	for c := range t {
		t[c] = isNumberChar(byte(c))
	}
	return t
}()

// literal consumes word (true, false, null).
func (p *fastScanner) literal(word string) bool {
	p.ws()
	if len(p.s)-p.i < len(word) || string(p.s[p.i:p.i+len(word)]) != word {
		return false
	}
	p.i += len(word)
	return true
}

// object reads an object, calling member for each key with the scanner at
// its value; member reads the value and reports whether it could. An empty
// object is accepted only when allowEmpty is set.
func (p *fastScanner) object(allowEmpty bool, member func(k []byte) bool) bool {
	if !p.consume('{') {
		return false
	}
	if p.peek() == '}' {
		p.i++
		return allowEmpty
	}
	for {
		k, ok := p.key()
		if !ok || !member(k) {
			return false
		}
		more, ok := p.more('}')
		if !ok {
			return false
		}
		if !more {
			return true
		}
	}
}

// decodeFast is the fast path; see the comment at the top of this file.
func (d *Decoder) decodeFast(data []byte) (Message, bool) {
	d.fastFields, d.fastTags, d.fastReadings = d.fastFields[:0], d.fastTags[:0], d.fastReadings[:0]
	d.nameAt = 0
	// Record where the values are, to learn this payload's template if it
	// turns out to be a single reading of plain metrics (template.go).
	d.recorded, d.recording = d.recorded[:0], d.learning(data)
	p := fastScanner{s: data}
	var msg Message
	var top fastReading
	seenSeq, batch := false, false
	ok := p.object(false, func(k []byte) bool {
		switch string(k) {
		case "seq":
			if seenSeq {
				return false
			}
			seenSeq = true
			p.ws()
			start := p.i
			msg.Seq, msg.HasSeq = parseUintLiteral(p.number())
			d.record(start, p.i, roleSeq, 0)
			return msg.HasSeq
		case "readings":
			if batch {
				return false
			}
			batch = true
			d.recording = false
			return d.fastBatch(&p)
		}
		return d.fastReadingMember(&p, &top, k)
	})
	if p.ws(); !ok || p.i != len(p.s) {
		return Message{}, false
	}
	switch {
	case batch && top.seen == 0:
	case !batch && top.seen&seenMetrics != 0:
		d.fastReadings = append(d.fastReadings, top)
	default:
		// A batch with reading keys beside it (ignored by the general
		// path) or an object without metrics: leave both to it.
		return Message{}, false
	}
	msg = d.fastMessage(msg)
	if !batch && d.recording {
		d.learn(data, msg)
	}
	return msg, true
}

// fastBatch reads a "readings" array of reading objects.
func (d *Decoder) fastBatch(p *fastScanner) bool {
	if !p.consume('[') || p.peek() == ']' {
		return false // an empty batch is rare enough for the general path
	}
	for {
		if len(d.fastReadings) == d.limits.MaxReadings {
			return false
		}
		var r fastReading
		d.nameAt = 0
		if !p.object(false, func(k []byte) bool { return d.fastReadingMember(p, &r, k) }) || r.seen&seenMetrics == 0 {
			return false
		}
		d.fastReadings = append(d.fastReadings, r)
		more, ok := p.more(']')
		if !ok {
			return false
		}
		if !more {
			return true
		}
	}
}

// fastReadingMember reads the value of reading key k into r.
func (d *Decoder) fastReadingMember(p *fastScanner, r *fastReading, k []byte) bool {
	var bit uint8
	switch string(k) {
	case "ts":
		bit = seenTS
	case "measurement":
		bit = seenMeasurement
	case "device":
		bit = seenDevice
	case "tags":
		bit = seenTags
	case "metrics":
		bit = seenMetrics
	default:
		return false
	}
	if r.seen&bit != 0 {
		return false
	}
	r.seen |= bit
	p.ws()
	start := p.i
	switch bit {
	case seenTS:
		var ok bool
		r.time, ok = fastTime(p)
		d.record(start, p.i, roleTime, 0)
		return ok
	case seenMeasurement:
		b, ok := p.str()
		if ok && len(b) > 0 {
			r.measurement = d.intern(b)
		}
		d.record(start, p.i, roleMeasurement, 0)
		return ok
	case seenDevice:
		b, ok := p.str()
		r.device = telemetry.DeviceID(d.intern(b))
		d.record(start, p.i, roleDevice, 0)
		return ok
	case seenTags:
		return d.fastTagsObject(p, r)
	default:
		return d.fastMetrics(p, r)
	}
}

// fastTime reads "ts": an epoch or an RFC 3339 string.
func fastTime(p *fastScanner) (int64, bool) {
	if p.peek() != '"' {
		return plainEpoch(p.plainNumber())
	}
	b, ok := p.str()
	if !ok {
		return 0, false
	}
	t, pr := rfc3339Time(b)
	return t, pr.ok()
}

// fastTagsObject reads "tags": null or an object of strings.
func (d *Decoder) fastTagsObject(p *fastScanner, r *fastReading) bool {
	r.t0 = len(d.fastTags)
	r.t1 = r.t0
	if p.peek() == 'n' {
		return p.literal("null")
	}
	ok := p.object(true, func(k []byte) bool {
		p.ws()
		start := p.i
		v, ok := p.str()
		if !ok || len(d.fastTags)-r.t0 == d.limits.MaxTags {
			return false
		}
		d.record(start, p.i, roleTag, len(d.fastTags)-r.t0)
		key := d.intern(k)
		if ts := d.fastTags[r.t0:]; len(ts) < pairwiseNames {
			for _, t := range ts {
				if t.Key == key {
					return false
				}
			}
		}
		d.fastTags = append(d.fastTags, telemetry.Tag{Key: key, Value: d.intern(v)})
		return true
	})
	r.t1 = len(d.fastTags)
	if !ok {
		return false
	}
	if r.t1-r.t0 > pairwiseNames {
		d.names = d.names[:0]
		for _, t := range d.fastTags[r.t0:r.t1] {
			d.names = append(d.names, t.Key)
		}
		_, dup := firstDuplicate(d.names)
		return !dup
	}
	return true
}

// fastMetrics reads "metrics": an object of at least one metric.
func (d *Decoder) fastMetrics(p *fastScanner, r *fastReading) bool {
	r.f0 = len(d.fastFields)
	ok := p.object(false, func(k []byte) bool {
		if len(d.fastFields)-r.f0 == d.limits.MaxFields {
			return false
		}
		f := telemetry.Field{Name: d.intern(k)}
		if !d.newFieldName(r, f.Name) {
			return false
		}
		ok := false
		if p.peek() == '{' {
			d.recording = false // typed fields have no template
			ok = d.fastTypedField(p, &f)
		} else {
			start := p.i
			f.Value, ok = d.fastScalar(p)
			d.record(start, p.i, roleMetric, len(d.fastFields)-r.f0)
		}
		d.fastFields = append(d.fastFields, f)
		return ok
	})
	r.f1 = len(d.fastFields)
	if !ok {
		return false
	}
	if n := r.f1 - r.f0; n > pairwiseNames {
		d.names = d.names[:0]
		for _, f := range d.fastFields[r.f0:r.f1] {
			d.names = append(d.names, f.Name)
		}
		_, dup := firstDuplicate(d.names)
		return !dup
	}
	return true
}

// pairwiseNames is how many metrics (or tags) of a reading are checked
// for repeats one against another as they are read: a handful of string
// compares, most of them decided by the length. A reading with more is
// checked once at its end, by firstDuplicate, which sorts.
const pairwiseNames = 16

// newFieldName reports whether name is not among the first metrics of r
// read so far (see pairwiseNames).
func (d *Decoder) newFieldName(r *fastReading, name string) bool {
	fs := d.fastFields[r.f0:]
	if len(fs) >= pairwiseNames {
		return true
	}
	for _, f := range fs {
		if f.Name == name {
			return false
		}
	}
	return true
}

// fastScalar reads a plain metric value as plainValue maps it: every number
// a float, booleans and strings as they are.
func (d *Decoder) fastScalar(p *fastScanner) (telemetry.Value, bool) {
	switch p.peek() {
	case '"':
		b, ok := p.str()
		return telemetry.String(d.internValue(b)), ok
	case 't':
		return telemetry.Bool(true), p.literal("true")
	case 'f':
		return telemetry.Bool(false), p.literal("false")
	case 'n', '{', '[', 0:
		return telemetry.Value{}, false
	}
	x, ok := plainFloat(p.plainNumber())
	return telemetry.Float(x), ok
}

// fastTypedField reads {"value":..,"type":..,"unit":..} as typedField does.
func (d *Decoder) fastTypedField(p *fastScanner, f *telemetry.Field) bool {
	var value, typ []byte
	var valueStart byte
	hasValue, hasType, hasUnit := false, false, false
	ok := p.object(false, func(k []byte) bool {
		ok := false
		switch string(k) {
		case "value":
			if hasValue {
				return false
			}
			hasValue = true
			valueStart = p.peek()
			switch valueStart {
			case '"':
				value, ok = p.str()
			case 't':
				ok = p.literal("true")
			case 'f':
				ok = p.literal("false")
			case 'n', '{', '[', 0:
			default:
				value, ok = p.number(), true
			}
		case "type":
			if hasType {
				return false
			}
			hasType = true
			typ, ok = p.str()
		case "unit":
			if hasUnit {
				return false
			}
			hasUnit = true
			var u []byte
			if u, ok = p.str(); ok {
				f.Unit = d.intern(u)
			}
		}
		return ok
	})
	if !ok || !hasValue {
		return false
	}
	isNumber := valueStart != '"' && valueStart != 't' && valueStart != 'f'
	switch {
	case !hasType || string(typ) == "float" && isNumber:
		switch valueStart {
		case '"':
			f.Value = telemetry.String(d.internValue(value))
		case 't', 'f':
			f.Value = telemetry.Bool(valueStart == 't')
		default:
			x, ok := fastFloat(value)
			f.Value = telemetry.Float(x)
			return ok
		}
		return true
	case string(typ) == "int" && isNumber:
		n, why := intLiteral(value)
		f.Value = telemetry.Int(n)
		return why == ""
	case string(typ) == "bool" && (valueStart == 't' || valueStart == 'f'):
		f.Value = telemetry.Bool(valueStart == 't')
		return true
	case string(typ) == "string" && valueStart == '"':
		f.Value = telemetry.String(d.internValue(value))
		return true
	}
	return false
}

// fastMessage builds the Message from the scratch arrays, into memory the
// Message owns (see messageMemory). Each reading's Tags
// has one slot of spare capacity (see below); that is an optimization for
// the bridge, not part of the Message's contract.
func (d *Decoder) fastMessage(msg Message) Message {
	// One spare slot after each reading's tags: the bridge adds the
	// device_id tag in place instead of allocating a new slice.
	tagSlots := len(d.fastTags)
	for _, fr := range d.fastReadings {
		if fr.t1 > fr.t0 {
			tagSlots++
		}
	}
	var fields []telemetry.Field
	var tags []telemetry.Tag
	msg.Readings, fields, tags = d.messageMemory(len(d.fastReadings), len(d.fastFields), tagSlots)
	copy(fields, d.fastFields)
	at := 0
	for i, fr := range d.fastReadings {
		r := &msg.Readings[i]
		r.Device, r.Time = fr.device, fr.time
		r.Measurement = fr.measurement
		if r.Measurement == "" {
			r.Measurement = defaultMeasurement
		}
		r.Fields = fields[fr.f0:fr.f1:fr.f1]
		if n := fr.t1 - fr.t0; n > 0 {
			copy(tags[at:], d.fastTags[fr.t0:fr.t1])
			r.Tags = tags[at : at+n : at+n+1]
			at += n + 1
		}
	}
	return msg
}

// messageMemory returns the arrays of a Message of nr readings, nf fields
// and nt tag slots. A single reading with a few fields and tags — what most
// devices send — gets all three in one block, and the blocks come from
// the Decoder's slabs (messageBlocks): one allocation per few dozen
// payloads instead of one per payload. Anything bigger gets one
// allocation per array, as on the general path.
func (d *Decoder) messageMemory(nr, nf, nt int) ([]telemetry.Reading, []telemetry.Field, []telemetry.Tag) {
	if nr == 1 {
		switch {
		case nf <= 4 && nt <= 2:
			m := d.blocks.small.next()
			return m.r[:], m.f[:nf], m.t[:nt]
		case nf <= 5 && nt <= 2:
			m := d.blocks.medium.next()
			return m.r[:], m.f[:nf], m.t[:nt]
		case nf <= 8 && nt <= 4:
			m := d.blocks.large.next()
			return m.r[:], m.f[:nf], m.t[:nt]
		}
	}
	var tags []telemetry.Tag
	if nt > 0 {
		tags = make([]telemetry.Tag, nt)
	}
	return make([]telemetry.Reading, nr), make([]telemetry.Field, nf), tags
}

// smallBlock, mediumBlock and largeBlock are the memory of a single-reading
// Message with up to 4, 5 or 8 fields and 2, 2 or 4 tag slots. Go cannot
// size an array by a type parameter, so the three sizes are spelled out.
type (
	smallBlock struct {
		r [1]telemetry.Reading
		f [4]telemetry.Field
		t [2]telemetry.Tag
	}
	mediumBlock struct {
		r [1]telemetry.Reading
		f [5]telemetry.Field
		t [2]telemetry.Tag
	}
	largeBlock struct {
		r [1]telemetry.Reading
		f [8]telemetry.Field
		t [4]telemetry.Tag
	}
)

// messageBlocks are a Decoder's slabs of message blocks.
type messageBlocks struct {
	small  slab[smallBlock]
	medium slab[mediumBlock]
	large  slab[largeBlock]
}

// slabBytes is about the size of a slab: 8 KiB is a size class of its own,
// so a slab wastes little beyond its last partial block.
const slabBytes = 8 << 10

// slab hands out blocks from arrays of about slabBytes. A block is handed
// out once and never reused, so each Message owns its memory as before:
// nothing a consumer does to one Message reaches another. The price is that
// an array stays alive while any of its Messages does. Nothing keeps a
// Message for long — the bridge encodes it and the Hub copies what it
// remembers, both within moments — so that is a few arrays per Decoder
// beyond the Messages in flight.
type slab[T any] struct{ free []T }

func (s *slab[T]) next() *T {
	if len(s.free) == 0 {
		var zero T
		s.free = make([]T, max(1, slabBytes/int(unsafe.Sizeof(zero))))
	}
	b := &s.free[0]
	s.free = s.free[1:]
	return b
}
