package relay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/telemetryd/telemetryd/telemetry"
)

// The wire form of a batch of readings, one NATS message:
//
//	message := version(1) count(uvarint) reading*
//	reading := str(device) str(measurement) ntags(uvarint) (str(key) str(value))*
//	           nfields(uvarint) (str(name) kind(byte) value str(unit))* time(varint)
//	value   := float: 8 bytes little-endian IEEE 754 | integer: varint |
//	           boolean: 1 byte | string: str
//	str     := uvarint x; x odd: the string numbered x>>1 earlier in this
//	           message; x even: x>>1 bytes follow, and a string of 1 to
//	           maxInterned bytes gets the next number.
//
// Device ids, measurements, tag keys and values and field names repeat from
// reading to reading of a batch; numbering them makes a batch of one
// fleet's readings a fraction of its JSON size, without a compression pass
// on either side.
const (
	codecVersion = 1
	maxInterned  = 64
)

var errCorrupt = errors.New("relay: corrupt message")

// encoder appends batches; it keeps its string table between calls to
// avoid reallocating it, but every message starts a new numbering.
type encoder struct {
	table map[string]uint64
}

// reset starts a new message's string numbering.
func (e *encoder) reset() {
	if e.table == nil {
		e.table = make(map[string]uint64)
	}
	clear(e.table)
}

// head appends a message's head: the version and the reading count.
func head(dst []byte, count int) []byte {
	dst = append(dst, codecVersion)
	return binary.AppendUvarint(dst, uint64(count))
}

func (e *encoder) str(dst []byte, s string) []byte {
	if n, ok := e.table[s]; ok {
		return binary.AppendUvarint(dst, n<<1|1)
	}
	if l := len(s); l >= 1 && l <= maxInterned {
		e.table[s] = uint64(len(e.table))
	}
	dst = binary.AppendUvarint(dst, uint64(len(s))<<1)
	return append(dst, s...)
}

func (e *encoder) reading(dst []byte, r *telemetry.Reading) []byte {
	dst = e.str(dst, string(r.Device))
	dst = e.str(dst, r.Measurement)
	dst = binary.AppendUvarint(dst, uint64(len(r.Tags)))
	for _, t := range r.Tags {
		dst = e.str(dst, t.Key)
		dst = e.str(dst, t.Value)
	}
	dst = binary.AppendUvarint(dst, uint64(len(r.Fields)))
	for _, f := range r.Fields {
		dst = e.str(dst, f.Name)
		k := f.Value.Kind()
		dst = append(dst, byte(k))
		switch k {
		case telemetry.KindFloat:
			dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(f.Value.AsFloat()))
		case telemetry.KindInt:
			dst = binary.AppendVarint(dst, f.Value.AsInt())
		case telemetry.KindBool:
			b := byte(0)
			if f.Value.AsBool() {
				b = 1
			}
			dst = append(dst, b)
		case telemetry.KindString:
			dst = e.str(dst, f.Value.AsString())
		}
		dst = e.str(dst, f.Unit)
	}
	return binary.AppendVarint(dst, r.Time)
}

// encode appends one message holding rs.
func (e *encoder) encode(dst []byte, rs []telemetry.Reading) []byte {
	e.reset()
	dst = head(dst, len(rs))
	for i := range rs {
		dst = e.reading(dst, &rs[i])
	}
	return dst
}

// decoder reads messages. It interns short strings across messages (device
// ids, tag keys, field names repeat for ever), so that the receive path
// allocates little per reading; the cache is bounded and starts over when
// full. Not safe for concurrent use.
type decoder struct {
	intern map[string]string
	table  []string
}

const maxInternCache = 1 << 14

func (d *decoder) internString(b []byte) string {
	if len(b) > maxInterned {
		return string(b)
	}
	if s, ok := d.intern[string(b)]; ok {
		return s
	}
	if d.intern == nil || len(d.intern) >= maxInternCache {
		d.intern = make(map[string]string, 1024)
	}
	s := string(b)
	d.intern[s] = s
	return s
}

type reader struct {
	d   *decoder
	buf []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.buf)
	if n <= 0 {
		r.err = errCorrupt
		return 0
	}
	r.buf = r.buf[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.buf)
	if n <= 0 {
		r.err = errCorrupt
		return 0
	}
	r.buf = r.buf[n:]
	return v
}

func (r *reader) byte() byte {
	if r.err != nil || len(r.buf) == 0 {
		r.err = errCorrupt
		return 0
	}
	b := r.buf[0]
	r.buf = r.buf[1:]
	return b
}

func (r *reader) str() string {
	x := r.uvarint()
	if r.err != nil {
		return ""
	}
	if x&1 == 1 {
		i := x >> 1
		if i >= uint64(len(r.d.table)) {
			r.err = errCorrupt
			return ""
		}
		return r.d.table[i]
	}
	l := x >> 1
	if l > uint64(len(r.buf)) {
		r.err = errCorrupt
		return ""
	}
	s := r.d.internString(r.buf[:l])
	r.buf = r.buf[l:]
	if l >= 1 && l <= maxInterned {
		r.d.table = append(r.d.table, s)
	}
	return s
}

// count reads a count of items that each take at least min bytes, so that
// a corrupt count cannot make the decoder allocate more than the message
// could hold.
func (r *reader) count(min int) int {
	n := r.uvarint()
	if r.err == nil && n > uint64(len(r.buf)/min) {
		r.err = errCorrupt
	}
	if r.err != nil {
		return 0
	}
	return int(n)
}

// decode returns the readings of one message. Their tags and fields share a
// few allocations per message (sized as if every reading were like the
// one being read).
func (d *decoder) decode(msg []byte) ([]telemetry.Reading, error) {
	d.table = d.table[:0]
	if len(msg) == 0 || msg[0] != codecVersion {
		return nil, fmt.Errorf("%w: unknown version", errCorrupt)
	}
	r := &reader{d: d, buf: msg[1:]}
	// A reading takes at least 5 bytes: two strings, two counts, a time.
	n := r.count(5)
	if r.err != nil {
		return nil, r.err
	}
	rs := make([]telemetry.Reading, n)
	var tags []telemetry.Tag
	var fields []telemetry.Field
	for i := range rs {
		rd := &rs[i]
		rd.Device = telemetry.DeviceID(r.str())
		rd.Measurement = r.str()
		nt := r.count(2)
		if nt > 0 {
			if cap(tags)-len(tags) < nt {
				tags = make([]telemetry.Tag, 0, max(nt, min(nt*(n-i), len(r.buf)/2)))
			}
			start := len(tags)
			for range nt {
				k := r.str()
				tags = append(tags, telemetry.Tag{Key: k, Value: r.str()})
			}
			rd.Tags = tags[start:len(tags):len(tags)]
		}
		nf := r.count(4)
		if nf > 0 {
			if cap(fields)-len(fields) < nf {
				fields = make([]telemetry.Field, 0, max(nf, min(nf*(n-i), len(r.buf)/4)))
			}
			start := len(fields)
			for range nf {
				name := r.str()
				var v telemetry.Value
				switch k := telemetry.Kind(r.byte()); k {
				case telemetry.KindFloat:
					if len(r.buf) < 8 {
						r.err = errCorrupt
					} else {
						v = telemetry.Float(math.Float64frombits(binary.LittleEndian.Uint64(r.buf)))
						r.buf = r.buf[8:]
					}
				case telemetry.KindInt:
					v = telemetry.Int(r.varint())
				case telemetry.KindBool:
					v = telemetry.Bool(r.byte() == 1)
				case telemetry.KindString:
					v = telemetry.String(r.str())
				default:
					r.err = errCorrupt
				}
				fields = append(fields, telemetry.Field{Name: name, Value: v, Unit: r.str()})
			}
			rd.Fields = fields[start:len(fields):len(fields)]
		}
		rd.Time = r.varint()
		if r.err != nil {
			return nil, r.err
		}
	}
	if len(r.buf) != 0 {
		return nil, fmt.Errorf("%w: trailing bytes", errCorrupt)
	}
	return rs, nil
}
