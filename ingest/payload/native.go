package payload

import (
	"slices"
	"time"

	"github.com/valyala/fastjson"

	"github.com/telemetryd/telemetryd/telemetry"
)

// nativeReading decodes one native reading object. Its fields and tags are
// appended to d.fields and d.tags; when the returned problem is not ok the
// caller rolls those back.
func (d *Decoder) nativeReading(obj *fastjson.Object) (telemetry.Reading, problem) {
	var ts, measurement, device, tags, metrics *fastjson.Value
	obj.Visit(func(k []byte, v *fastjson.Value) {
		switch string(k) {
		case "ts":
			first(&ts, v)
		case "measurement":
			first(&measurement, v)
		case "device":
			first(&device, v)
		case "tags":
			first(&tags, v)
		case "metrics":
			first(&metrics, v)
		}
	})

	r := telemetry.Reading{Measurement: defaultMeasurement}
	if measurement != nil {
		b, ok := stringBytes(measurement)
		if !ok {
			return r, problemf(CodeInvalidReading, "measurement must be a string, got %s", measurement.Type())
		}
		if len(b) > 0 {
			r.Measurement = d.intern(b)
		}
	}
	if device != nil {
		b, ok := stringBytes(device)
		if !ok {
			return r, problemf(CodeInvalidReading, "device must be a string, got %s", device.Type())
		}
		r.Device = telemetry.DeviceID(d.intern(b))
	}
	if ts != nil {
		t, p := d.nativeTime(ts)
		if !p.ok() {
			return r, p
		}
		r.Time = t
	}
	if tags != nil {
		if p := d.nativeTags(tags); !p.ok() {
			return r, p
		}
	}
	if metrics == nil {
		return r, problemf(CodeInvalidReading, "no metrics")
	}
	return r, d.nativeMetrics(metrics)
}

func stringBytes(v *fastjson.Value) ([]byte, bool) {
	if v.Type() != fastjson.TypeString {
		return nil, false
	}
	b, _ := v.StringBytes()
	return b, true
}

// nativeTime decodes "ts": an epoch number whose unit follows from its
// magnitude, or an RFC 3339 string. 0 means "no device time".
func (d *Decoder) nativeTime(v *fastjson.Value) (int64, problem) {
	switch v.Type() {
	case fastjson.TypeNumber:
		return epochLiteral(d.rawNumber(v))
	case fastjson.TypeString:
		b, _ := v.StringBytes()
		return rfc3339Time(b)
	default:
		return 0, problemf(CodeInvalidTimestamp, "ts must be a number or an RFC 3339 string, got %s", v.Type())
	}
}

// epochLiteral converts a numeric "ts" literal to Unix nanoseconds.
func epochLiteral(raw []byte) (int64, problem) {
	x, ok := parseDecimal(raw)
	switch {
	case !ok:
		return 0, problemf(CodeInvalidTimestamp, "ts: malformed number %s", shorten(raw))
	case x.isZero():
		return 0, problem{}
	case x.neg:
		return 0, problemf(CodeInvalidTimestamp, "ts %s is negative", shorten(raw))
	}
	ns, _, ok := x.scaled(epochShift(x.intDigits()))
	if !ok {
		return 0, problemf(CodeInvalidTimestamp, "ts %s is out of range", shorten(raw))
	}
	return ns, problem{}
}

// rfc3339Time converts a string "ts" (unescaped) to Unix nanoseconds.
func rfc3339Time(b []byte) (int64, problem) {
	t, err := time.Parse(time.RFC3339Nano, string(b))
	if err != nil {
		return 0, problemf(CodeInvalidTimestamp, "ts %s is not an RFC 3339 time", shorten(b))
	}
	ns, ok := unixNanos(t)
	if !ok {
		return 0, problemf(CodeInvalidTimestamp, "ts %s is out of range (1970 to 2262)", shorten(b))
	}
	return ns, problem{}
}

// nativeTags decodes "tags", an object of string values, in payload order.
func (d *Decoder) nativeTags(v *fastjson.Value) problem {
	switch v.Type() {
	case fastjson.TypeNull:
		// Go's encoding/json writes a nil map as null: no tags.
		return problem{}
	case fastjson.TypeObject:
	default:
		return problemf(CodeInvalidReading, "tags must be an object, got %s", v.Type())
	}
	o := v.GetObject()
	if n := o.Len(); n > d.limits.MaxTags {
		return problemf(CodeInvalidReading, "%d tags, at most %d allowed", n, d.limits.MaxTags)
	}
	t0 := len(d.tags)
	var p problem
	o.Visit(func(k []byte, tv *fastjson.Value) {
		if !p.ok() {
			return
		}
		b, ok := stringBytes(tv)
		if !ok {
			p = problemf(CodeInvalidValue, "tag %q: value must be a string, got %s", k, describe(tv))
			return
		}
		d.tags = append(d.tags, telemetry.Tag{Key: d.intern(k), Value: d.intern(b)})
	})
	if !p.ok() {
		return p
	}
	d.names = d.names[:0]
	for _, t := range d.tags[t0:] {
		d.names = append(d.names, t.Key)
	}
	if dup, ok := firstDuplicate(d.names); ok {
		return problemf(CodeInvalidReading, "tag %q appears more than once", dup)
	}
	return problem{}
}

// nativeMetrics decodes "metrics", appending one field per member.
func (d *Decoder) nativeMetrics(v *fastjson.Value) problem {
	if v.Type() != fastjson.TypeObject {
		return problemf(CodeInvalidReading, "metrics must be an object, got %s", v.Type())
	}
	o := v.GetObject()
	switch n := o.Len(); {
	case n == 0:
		return problemf(CodeInvalidReading, "no metrics")
	case n > d.limits.MaxFields:
		return problemf(CodeInvalidReading, "%d metrics, at most %d allowed", n, d.limits.MaxFields)
	}
	f0 := len(d.fields)
	var p problem
	o.Visit(func(k []byte, fv *fastjson.Value) {
		if !p.ok() {
			return
		}
		var f telemetry.Field
		if f, p = d.nativeField(k, fv); p.ok() {
			d.fields = append(d.fields, f)
		}
	})
	if !p.ok() {
		return p
	}
	d.names = d.names[:0]
	for _, f := range d.fields[f0:] {
		d.names = append(d.names, f.Name)
	}
	if dup, ok := firstDuplicate(d.names); ok {
		return problemf(CodeInvalidReading, "metric %q appears more than once", dup)
	}
	return problem{}
}

// nativeField decodes one metric: a plain scalar or a {"value","type","unit"} object.
func (d *Decoder) nativeField(k []byte, v *fastjson.Value) (telemetry.Field, problem) {
	f := telemetry.Field{Name: d.intern(k)}
	var why string
	if v.Type() == fastjson.TypeObject {
		why = d.typedField(&f, v.GetObject())
	} else {
		f.Value, why = d.plainValue(v)
	}
	if why != "" {
		return f, problemf(CodeInvalidValue, "metric %q: %s", k, why)
	}
	return f, problem{}
}

// plainValue maps a JSON scalar to a value. Every number becomes a float,
// however it is spelled: InfluxDB fixes a field's type on its first write,
// so 21 and 21.5 from the same sensor must not be an integer and a float.
func (d *Decoder) plainValue(v *fastjson.Value) (telemetry.Value, string) {
	switch v.Type() {
	case fastjson.TypeNumber:
		f, why := d.float(v)
		if why != "" {
			return telemetry.Value{}, why
		}
		return telemetry.Float(f), ""
	case fastjson.TypeTrue:
		return telemetry.Bool(true), ""
	case fastjson.TypeFalse:
		return telemetry.Bool(false), ""
	case fastjson.TypeString:
		b, _ := v.StringBytes()
		return telemetry.String(d.internValue(b)), ""
	case fastjson.TypeNull:
		return telemetry.Value{}, "null is not a value"
	default:
		return telemetry.Value{}, "a JSON " + v.Type().String() + " is not a value"
	}
}

// typedField decodes {"value": <scalar>, "type": "int"|"float"|"bool"|"string", "unit": "..."}
// into f, returning a reason on failure.
func (d *Decoder) typedField(f *telemetry.Field, o *fastjson.Object) string {
	var value, typ, unit *fastjson.Value
	o.Visit(func(k []byte, v *fastjson.Value) {
		switch string(k) {
		case "value":
			first(&value, v)
		case "type":
			first(&typ, v)
		case "unit":
			first(&unit, v)
		}
	})
	if value == nil {
		return `object has no "value"`
	}
	if unit != nil {
		b, ok := stringBytes(unit)
		if !ok {
			return "unit must be a string, got " + unit.Type().String()
		}
		f.Unit = d.intern(b)
	}
	if typ == nil {
		var why string
		f.Value, why = d.plainValue(value)
		return why
	}
	tb, ok := stringBytes(typ)
	if !ok {
		return "type must be a string, got " + typ.Type().String()
	}
	switch string(tb) {
	case "float":
		x, why := d.float(value)
		f.Value = telemetry.Float(x)
		return why
	case "int":
		n, why := d.int(value)
		f.Value = telemetry.Int(n)
		return why
	case "bool":
		switch value.Type() {
		case fastjson.TypeTrue, fastjson.TypeFalse:
			f.Value = telemetry.Bool(value.Type() == fastjson.TypeTrue)
			return ""
		}
		return "want a boolean, got " + describe(value)
	case "string":
		b, ok := stringBytes(value)
		if !ok {
			return "want a string, got " + describe(value)
		}
		f.Value = telemetry.String(d.internValue(b))
		return ""
	default:
		return "unknown type " + shorten(tb) + ` (want "int", "float", "bool" or "string")`
	}
}

// firstDuplicate returns a name that occurs more than once in names, which
// it may reorder. Few names are compared pairwise; many are sorted so that a
// reading with hundreds of metrics costs n log n, not n².
func firstDuplicate(names []string) (string, bool) {
	const pairwiseMax = 16
	if len(names) <= pairwiseMax {
		for i := 1; i < len(names); i++ {
			if slices.Contains(names[:i], names[i]) {
				return names[i], true
			}
		}
		return "", false
	}
	slices.Sort(names)
	for i := 1; i < len(names); i++ {
		if names[i] == names[i-1] {
			return names[i], true
		}
	}
	return "", false
}
