package payload

import (
	"bytes"
	"fmt"
	"math"
	"time"

	"github.com/valyala/fastjson"

	"github.com/telemetryd/telemetryd/telemetry"
)

// relativeLimit is 2^28 seconds in nanoseconds: SenML times below it are
// relative to the receive time (RFC 8428 §4.5.3).
const relativeLimit = int64(1<<28) * int64(time.Second)

// senmlRecord holds the members of one SenML record that we interpret.
type senmlRecord struct {
	bn, bt, bu, bv, bs, bver *fastjson.Value
	n, u, v, vs, vb, vd, s   *fastjson.Value
	t, ut                    *fastjson.Value
	// mustUnderstand is the first unknown label ending in '_'.
	mustUnderstand string
}

func (r *senmlRecord) read(o *fastjson.Object) {
	o.Visit(func(k []byte, v *fastjson.Value) {
		switch string(k) {
		case "bn":
			first(&r.bn, v)
		case "bt":
			first(&r.bt, v)
		case "bu":
			first(&r.bu, v)
		case "bv":
			first(&r.bv, v)
		case "bs":
			first(&r.bs, v)
		case "bver":
			first(&r.bver, v)
		case "n":
			first(&r.n, v)
		case "u":
			first(&r.u, v)
		case "v":
			first(&r.v, v)
		case "vs":
			first(&r.vs, v)
		case "vb":
			first(&r.vb, v)
		case "vd":
			first(&r.vd, v)
		case "s":
			first(&r.s, v)
		case "t":
			first(&r.t, v)
		case "ut":
			first(&r.ut, v)
		default:
			if len(k) > 0 && k[len(k)-1] == '_' && r.mustUnderstand == "" {
				r.mustUnderstand = string(k)
			}
		}
	})
}

// hasBase reports whether the record sets any base field.
func (r *senmlRecord) hasBase() bool {
	return countSet(r.bn, r.bt, r.bu, r.bv, r.bs, r.bver) > 0
}

// baseOnly reports whether the record only sets base values: it then
// produces no reading (Message.Skipped).
func (r *senmlRecord) baseOnly() bool {
	return r.hasBase() && countSet(r.n, r.u, r.v, r.vs, r.vb, r.vd, r.s, r.t, r.ut) == 0
}

// senmlBase holds the base values in force while walking a pack. A base
// field that is malformed poisons the base (its problem is kept) until a
// later record redefines it: the records relying on it are rejected rather
// than resolved against the previous base, which could attribute their
// values to the wrong device.
type senmlBase struct {
	name  []byte // points into the parser's buffer, valid during Decode
	time  int64  // nanoseconds
	unit  string
	value float64
	sum   float64

	nameBad, timeBad, unitBad, valueBad, sumBad problem
}

// decodeSenML decodes a SenML pack: one reading per record.
func (d *Decoder) decodeSenML(msg Message, records []*fastjson.Value, measurement string, now time.Time) (Message, error) {
	if len(records) > d.limits.MaxReadings {
		return msg, fmt.Errorf("%w: %d SenML records, at most %d allowed", ErrTooManyReadings, len(records), d.limits.MaxReadings)
	}
	frame := Message{Seq: msg.Seq, HasSeq: msg.HasSeq}
	d.allocate(len(records), 0)
	msg.Readings = make([]telemetry.Reading, len(records))
	nowNs := now.UnixNano()
	var base senmlBase
	for i, rv := range records {
		if rv.Type() != fastjson.TypeObject {
			msg.reject(i, problemf(CodeInvalidReading, "record is a JSON %s, want an object", rv.Type()))
			continue
		}
		var rec senmlRecord
		rec.read(rv.GetObject())
		if rec.mustUnderstand != "" {
			// RFC 8428 §4.4: a pack with an unknown must-understand label
			// must not be processed at all.
			return frame, fmt.Errorf("%w: SenML record %d has unsupported must-understand label %s", ErrInvalidPayload, i, shorten([]byte(rec.mustUnderstand)))
		}
		p := d.applyBase(&base, &rec, i)
		if rec.baseOnly() {
			if p.ok() {
				msg.Skipped = append(msg.Skipped, i)
			} else {
				msg.reject(i, p)
			}
			continue
		}
		if !p.ok() {
			msg.reject(i, p)
			continue
		}
		r, f, p := d.senmlReading(&base, &rec, nowNs)
		if !p.ok() {
			msg.reject(i, p)
			continue
		}
		r.Measurement = measurement
		f0 := len(d.fields)
		d.fields = append(d.fields, f)
		r.Fields = d.take(f0)
		msg.Readings[i] = r
	}
	return msg, nil
}

// applyBase updates base from the record's base fields and returns the
// problem of the first malformed one.
func (d *Decoder) applyBase(base *senmlBase, rec *senmlRecord, i int) problem {
	var p problem
	keep := func(q problem) problem {
		if p.ok() {
			p = q
		}
		return q
	}
	if rec.bn != nil {
		if b, ok := stringBytes(rec.bn); ok {
			base.name, base.nameBad = b, problem{}
		} else {
			base.nameBad = keep(problemf(CodeInvalidReading, "bn (record %d) must be a string, got %s", i, rec.bn.Type()))
		}
	}
	if rec.bt != nil {
		if ns, why := d.seconds(rec.bt); why == "" {
			base.time, base.timeBad = ns, problem{}
		} else {
			base.timeBad = keep(problemf(CodeInvalidTimestamp, "bt (record %d): %s", i, why))
		}
	}
	if rec.bu != nil {
		if b, ok := stringBytes(rec.bu); ok {
			base.unit, base.unitBad = d.intern(b), problem{}
		} else {
			base.unitBad = keep(problemf(CodeInvalidValue, "bu (record %d) must be a string, got %s", i, rec.bu.Type()))
		}
	}
	if rec.bv != nil {
		if x, why := d.float(rec.bv); why == "" {
			base.value, base.valueBad = x, problem{}
		} else {
			base.valueBad = keep(problemf(CodeInvalidValue, "bv (record %d): %s", i, why))
		}
	}
	if rec.bs != nil {
		if x, why := d.float(rec.bs); why == "" {
			base.sum, base.sumBad = x, problem{}
		} else {
			base.sumBad = keep(problemf(CodeInvalidValue, "bs (record %d): %s", i, why))
		}
	}
	return p
}

// senmlReading resolves a value-carrying record against base into a
// reading (without measurement) and its single field.
func (d *Decoder) senmlReading(base *senmlBase, rec *senmlRecord, nowNs int64) (telemetry.Reading, telemetry.Field, problem) {
	var r telemetry.Reading
	var f telemetry.Field

	val, p := d.senmlValue(base, rec)
	if !p.ok() {
		return r, f, p
	}
	f.Value = val

	device, name, p := d.senmlName(base, rec)
	if !p.ok() {
		return r, f, p
	}
	r.Device, f.Name = telemetry.DeviceID(device), name

	switch {
	case rec.u != nil:
		b, ok := stringBytes(rec.u)
		if !ok {
			return r, f, problemf(CodeInvalidValue, "u must be a string, got %s", rec.u.Type())
		}
		f.Unit = d.intern(b)
	case !base.unitBad.ok():
		return r, f, base.unitBad
	default:
		f.Unit = base.unit
	}

	r.Time, p = d.senmlTime(base, rec, nowNs)
	return r, f, p
}

// senmlValue returns the record's one value, with bv or bs added to v or s.
func (d *Decoder) senmlValue(base *senmlBase, rec *senmlRecord) (telemetry.Value, problem) {
	switch countSet(rec.v, rec.vs, rec.vb, rec.vd, rec.s) {
	case 0:
		return telemetry.Value{}, problemf(CodeInvalidReading, "record has no value (v, vs, vb, vd or s)")
	case 1:
	default:
		return telemetry.Value{}, problemf(CodeInvalidReading, "record has more than one of v, vs, vb, vd and s")
	}
	switch {
	case rec.v != nil:
		return d.senmlSum("v", rec.v, base.value, base.valueBad)
	case rec.s != nil:
		return d.senmlSum("s", rec.s, base.sum, base.sumBad)
	case rec.vb != nil:
		switch rec.vb.Type() {
		case fastjson.TypeTrue, fastjson.TypeFalse:
			return telemetry.Bool(rec.vb.Type() == fastjson.TypeTrue), problem{}
		}
		return telemetry.Value{}, problemf(CodeInvalidValue, "vb must be a boolean, got %s", describe(rec.vb))
	case rec.vs != nil:
		return d.senmlString("vs", rec.vs, d.internValue)
	default:
		// Data values stay base64 text: decoding is the consumer's business.
		// They are rarely repeated, so they are not interned.
		return d.senmlString("vd", rec.vd, func(b []byte) string { return string(b) })
	}
}

// senmlSum decodes a numeric value and adds its base value.
func (d *Decoder) senmlSum(label string, v *fastjson.Value, base float64, baseBad problem) (telemetry.Value, problem) {
	if !baseBad.ok() {
		return telemetry.Value{}, baseBad
	}
	x, why := d.float(v)
	if why != "" {
		return telemetry.Value{}, problemf(CodeInvalidValue, "%s: %s", label, why)
	}
	x += base
	if math.IsInf(x, 0) {
		return telemetry.Value{}, problemf(CodeInvalidValue, "%s plus its base value is out of the float64 range", label)
	}
	return telemetry.Float(x), problem{}
}

// senmlString decodes a string value, copying it out with str.
func (d *Decoder) senmlString(label string, v *fastjson.Value, str func([]byte) string) (telemetry.Value, problem) {
	b, ok := stringBytes(v)
	if !ok {
		return telemetry.Value{}, problemf(CodeInvalidValue, "%s must be a string, got %s", label, describe(v))
	}
	return telemetry.String(str(b)), problem{}
}

// senmlName resolves bn+n and splits it at its last '/' into the child
// device id and the field name, so a gateway sends
// {"bn":"<device-id>/","n":"temperature","v":21}.
func (d *Decoder) senmlName(base *senmlBase, rec *senmlRecord) (device, field string, p problem) {
	if !base.nameBad.ok() {
		return "", "", base.nameBad
	}
	d.name = append(d.name[:0], base.name...)
	if rec.n != nil {
		b, ok := stringBytes(rec.n)
		if !ok {
			return "", "", problemf(CodeInvalidReading, "n must be a string, got %s", rec.n.Type())
		}
		d.name = append(d.name, b...)
	}
	if len(d.name) == 0 {
		return "", "", problemf(CodeInvalidReading, "record has no name (bn+n is empty)")
	}
	dev, name := []byte(nil), d.name
	if i := bytes.LastIndexByte(d.name, '/'); i >= 0 {
		dev, name = d.name[:i], d.name[i+1:]
	}
	if len(name) == 0 {
		return "", "", problemf(CodeInvalidReading, "name %s has no field name after its last '/'", shorten(d.name))
	}
	return d.intern(dev), d.intern(name), problem{}
}

// senmlTime resolves bt+t; a result below 2^28 seconds is relative to now.
func (d *Decoder) senmlTime(base *senmlBase, rec *senmlRecord, nowNs int64) (int64, problem) {
	if !base.timeBad.ok() {
		return 0, base.timeBad
	}
	t := base.time
	if rec.t != nil {
		ns, why := d.seconds(rec.t)
		if why != "" {
			return 0, problemf(CodeInvalidTimestamp, "t: %s", why)
		}
		var ok bool
		if t, ok = addNanos(t, ns); !ok {
			return 0, problemf(CodeInvalidTimestamp, "bt+t is out of range")
		}
	}
	if t < relativeLimit {
		var ok bool
		if t, ok = addNanos(nowNs, t); !ok || t < 0 {
			return 0, problemf(CodeInvalidTimestamp, "relative time resolves to before 1970 or out of range")
		}
	}
	return t, problem{}
}
