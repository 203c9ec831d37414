package bridge

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/telemetryd/telemetryd/telemetry"
)

// Rejection codes the bridge reports for readings it refuses. They are part
// of the device protocol: devices may switch on them.
const (
	CodeInvalidName     = "invalid_name"
	CodeInvalidValue    = "invalid_value"
	CodeInvalidTag      = "invalid_tag"
	CodeFutureTimestamp = "timestamp_in_future"
	CodeNoFields        = "no_fields"
	CodeForbiddenDevice = "forbidden_device"
	CodeStorageRejected = "storage_rejected"
	// CodeTagFieldConflict: a tag and a field of the reading share a name,
	// which InfluxDB 3 refuses (and which makes InfluxQL on 1.x and 2.x
	// ambiguous).
	CodeTagFieldConflict = "tag_field_conflict"
)

// Limits bound what one reading may contain. The zero value of a field
// means its default.
type Limits struct {
	// MaxClockSkew is how far in the future a device time may be (default 5m).
	MaxClockSkew time.Duration
	// MaxTags per reading, payload tags and labels together (default 32).
	MaxTags int
	// MaxTagValueLen in bytes (default 256).
	MaxTagValueLen int
	// MaxNameLen for measurement, field and tag key names in bytes (default 128).
	MaxNameLen int
	// MaxStringLen for string field values in bytes (default 65535, InfluxDB's limit).
	MaxStringLen int
}

// DefaultLimits is what the zero value of each Limits field stands for.
func DefaultLimits() Limits {
	return Limits{
		MaxClockSkew:   5 * time.Minute,
		MaxTags:        32,
		MaxTagValueLen: 256,
		MaxNameLen:     128,
		MaxStringLen:   65535,
	}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxClockSkew <= 0 {
		l.MaxClockSkew = d.MaxClockSkew
	}
	if l.MaxTags <= 0 {
		l.MaxTags = d.MaxTags
	}
	if l.MaxTagValueLen <= 0 {
		l.MaxTagValueLen = d.MaxTagValueLen
	}
	if l.MaxNameLen <= 0 {
		l.MaxNameLen = d.MaxNameLen
	}
	if l.MaxStringLen <= 0 {
		l.MaxStringLen = d.MaxStringLen
	}
	return l
}

// validName reports whether s may be used as a measurement, field or tag key.
// The allow-list ([A-Za-z0-9_.:/-], not starting with '_', not "time") means
// no device-supplied name can escape its place in line protocol, start a
// comment line, or collide with InfluxDB's reserved names.
func validName(s string, maxLen int) bool {
	if s == "" || len(s) > maxLen || s[0] == '_' || s == "time" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !nameChars[s[i]] {
			return false
		}
	}
	return true
}

// nameChars is the allow-list of validName as a lookup table.
var nameChars = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		t[c] = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '_' || c == '.' || c == ':' || c == '/' || c == '-'
	}
	return t
}()

// validTagValue accepts printable UTF-8 without a trailing backslash (which
// line protocol cannot represent).
func validTagValue(s string, maxLen int) bool {
	if s == "" || len(s) > maxLen || s[len(s)-1] == '\\' {
		return false
	}
	// One pass for the usual ASCII value; UTF-8 is validated only from
	// the first byte that is not ASCII.
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == 0x7f {
			return false
		}
		if c >= utf8.RuneSelf {
			return validUTF8TagValue(s[i:])
		}
	}
	return true
}

// validUTF8TagValue is validTagValue's check from the first non-ASCII byte.
func validUTF8TagValue(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

// rejectError is a reading-level refusal with its protocol code.
type rejectError struct {
	code, msg string
}

func (e *rejectError) Error() string { return e.msg }

func reject(code, format string, args ...any) *rejectError {
	return &rejectError{code: code, msg: fmt.Sprintf(format, args...)}
}

// normalize validates r in place and completes it: the device (sender or an
// authorized child), the receive time when the device gave none, and the
// device_id tag plus labels, sorted by key as line protocol requires; the
// new tags slice comes from arena. It returns nil or a *rejectError.
func (b *Bridge) normalize(r *telemetry.Reading, sender telemetry.DeviceID, received time.Time, arena *tagArena) *rejectError {
	l := &b.limits
	if r.Device == "" || r.Device == sender {
		r.Device = sender
	} else if b.children == nil || !b.children.MayReportFor(sender, r.Device) {
		return reject(CodeForbiddenDevice, "device %q is not assigned to gateway %q", r.Device, sender)
	}
	var gen uint64
	if b.guard != nil {
		gen = b.guard.gen.Load()
	}
	// A reading of a shape that passed before (shape.go) has valid,
	// distinct names, and the guard knows the type of each field.
	known := b.shapes.lookup(r, gen)
	if known == nil {
		if !validName(r.Measurement, l.MaxNameLen) {
			return reject(CodeInvalidName, "invalid measurement name %q", truncate(r.Measurement))
		}
		if len(r.Fields) == 0 {
			return reject(CodeNoFields, "reading has no fields")
		}
	}
	for i := range r.Fields {
		f := &r.Fields[i]
		if known == nil && !validName(f.Name, l.MaxNameLen) {
			return reject(CodeInvalidName, "invalid field name %q", truncate(f.Name))
		}
		switch f.Value.Kind() {
		case telemetry.KindFloat:
			if x := f.Value.AsFloat(); math.IsNaN(x) || math.IsInf(x, 0) {
				return reject(CodeInvalidValue, "field %q: NaN and infinities cannot be stored", f.Name)
			}
		case telemetry.KindString:
			if s := f.Value.AsString(); len(s) > l.MaxStringLen || !utf8.ValidString(s) {
				return reject(CodeInvalidValue, "field %q: string longer than %d bytes or not UTF-8", f.Name, l.MaxStringLen)
			}
		case telemetry.KindInt, telemetry.KindBool:
		default:
			return reject(CodeInvalidValue, "field %q has no value", f.Name)
		}
		if known != nil {
			continue
		}
		for j := range i {
			if r.Fields[j].Name == f.Name {
				return reject(CodeInvalidName, "field %q appears twice", f.Name)
			}
		}
	}
	// Units (units.go) after validation: only valid, finite values convert.
	if n, rej := b.units.convert(r, l.MaxNameLen); rej != nil {
		return rej
	} else if n > 0 {
		b.unitsConverted.Add(uint64(n))
	}
	switch now := received.UnixNano(); {
	case r.Time == 0:
		r.Time = now
	case r.Time > now+int64(l.MaxClockSkew):
		return reject(CodeFutureTimestamp, "timestamp %s is more than %s ahead of the server clock",
			time.Unix(0, r.Time).UTC().Format(time.RFC3339Nano), l.MaxClockSkew)
	}
	if rej := b.normalizeTags(r, arena); rej != nil {
		return rej
	}
	if rej := tagFieldConflict(r); rej != nil {
		return rej
	}
	// The type guard (typeguard.go) last: it remembers the types of
	// readings that pass every other check.
	switch {
	case b.guard == nil:
		if known == nil {
			b.shapes.remember(r, 0, nil)
		}
	case known != nil:
		for i := range r.Fields {
			if rej := b.guard.coerce(&r.Fields[i], known.kinds[i]); rej != nil {
				return rej
			}
		}
	default:
		if rej := b.guard.check(r); rej != nil {
			return rej
		}
		if kinds, gen, ok := b.guard.kindsOf(r); ok {
			b.shapes.remember(r, gen, kinds)
		}
	}
	return nil
}

// tagFieldConflict refuses a reading with a tag and a field of the same
// name (its tags complete: labels and device_id included). A reading has
// a handful of each: comparing every pair is cheaper than a set (and
// their first bytes first, rather than call the runtime's compare for
// every pair of equal length).
func tagFieldConflict(r *telemetry.Reading) *rejectError {
	for i := range r.Fields {
		name := r.Fields[i].Name
		if name == "" {
			continue
		}
		for j := range r.Tags {
			if k := r.Tags[j].Key; len(k) == len(name) && k[0] == name[0] && k == name {
				return reject(CodeTagFieldConflict, "%q is both a tag and a field; InfluxDB 3 stores neither", truncate(name))
			}
		}
	}
	return nil
}

func (b *Bridge) normalizeTags(r *telemetry.Reading, arena *tagArena) *rejectError {
	l := &b.limits
	var labels []telemetry.Tag
	if b.labels != nil {
		labels = b.labels.Labels(r.Device)
	}
	if n := len(r.Tags) + len(labels) + 1; n > l.MaxTags {
		return reject(CodeInvalidTag, "%d tags exceed the limit of %d", n, l.MaxTags)
	}
	for _, t := range r.Tags {
		if !validName(t.Key, l.MaxNameLen) || t.Key == telemetry.DeviceIDTag {
			return reject(CodeInvalidTag, "invalid tag key %q", truncate(t.Key))
		}
		if !validTagValue(t.Value, l.MaxTagValueLen) {
			return reject(CodeInvalidTag, "tag %q: value empty, longer than %d bytes, or with control characters", t.Key, l.MaxTagValueLen)
		}
	}
	var tags []telemetry.Tag
	if cap(r.Tags)-len(r.Tags) > len(labels) {
		// Room left by the decoder (it reserves a slot for device_id): the
		// reading's slice is the frame's, so it is completed in place.
		tags = r.Tags
	} else {
		tags = append(arena.alloc(len(r.Tags)+len(labels)+1), r.Tags...)
	}
	// Registry labels win over payload tags of the same key: they are the
	// operator's word, the payload is the device's.
	for _, lb := range labels {
		if i := slices.IndexFunc(tags, func(t telemetry.Tag) bool { return t.Key == lb.Key }); i >= 0 {
			tags[i].Value = lb.Value
		} else {
			tags = append(tags, lb)
		}
	}
	tags = append(tags, telemetry.Tag{Key: telemetry.DeviceIDTag, Value: string(r.Device)})
	sortTags(tags)
	for i := 1; i < len(tags); i++ {
		if tags[i].Key == tags[i-1].Key {
			return reject(CodeInvalidTag, "tag %q appears twice", tags[i].Key)
		}
	}
	r.Tags = tags
	return nil
}

// sortTags sorts tags by key. A reading has a handful of tags, mostly
// sorted already but for device_id: insertion sort with the comparison
// inline is then a few compares, where slices.SortFunc calls a closure for
// each.
func sortTags(tags []telemetry.Tag) {
	if len(tags) > 12 {
		slices.SortFunc(tags, func(a, b telemetry.Tag) int { return strings.Compare(a.Key, b.Key) })
		return
	}
	for i := 1; i < len(tags); i++ {
		t := tags[i]
		j := i
		for ; j > 0 && tags[j-1].Key > t.Key; j-- {
			tags[j] = tags[j-1]
		}
		tags[j] = t
	}
}

// tagArena hands out the tags slices of one frame's readings from one
// allocation, not one per reading. Its memory is never reused: the hub
// keeps published readings, tags included, after Consume returns (and
// copies the tags it remembers for long, so that a retained slice does not
// hold a whole frame's chunk).
type tagArena struct {
	chunk []telemetry.Tag // len: handed out
	rest  int             // readings of the frame still to come, this one included
}

// maxArenaChunk bounds one chunk (in tags, 32 bytes each).
const maxArenaChunk = 512

// alloc returns an empty slice with capacity n. Its capacity is capped, so
// an append beyond it can never write into another reading's tags.
func (a *tagArena) alloc(n int) []telemetry.Tag {
	if cap(a.chunk)-len(a.chunk) < n {
		// Enough for the rest of the frame if its readings are like this one.
		a.chunk = make([]telemetry.Tag, 0, max(n, min(n*a.rest, maxArenaChunk)))
	}
	i := len(a.chunk)
	a.chunk = a.chunk[:i+n]
	return a.chunk[i : i : i+n]
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
