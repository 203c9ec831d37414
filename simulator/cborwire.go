package simulator

import (
	"encoding/binary"
	"errors"
	"math"
	"strconv"
)

// Format is the payload encoding the simulated devices send.
type Format string

const (
	// FormatJSON: the native JSON schema (the default).
	FormatJSON Format = "json"
	// FormatCBOR: the same native schema in CBOR (RFC 8949), in WebSocket
	// binary frames, MQTT payloads or HTTP bodies.
	FormatCBOR Format = "cbor"
	// FormatSenML: SenML JSON envelopes {"seq":N,"measurement":…,"senml":[…]},
	// one record per metric (see formats.go).
	FormatSenML Format = "senml"
	// FormatSenMLCBOR: the same envelopes in CBOR, records with RFC 8428
	// §6's integer labels.
	FormatSenMLCBOR Format = "senml-cbor"
	// FormatLP: InfluxDB line protocol, one line per reading (HTTP: POST
	// /api/v2/write, the 204 the ack; MQTT: the payload, PUBACK the ack).
	FormatLP Format = "lp"
)

// formats lists every Format, for validation and help texts.
var formats = []Format{FormatJSON, FormatSenML, FormatCBOR, FormatSenMLCBOR, FormatLP}

// binary reports whether f travels in WebSocket binary frames.
func (f Format) binary() bool { return f == FormatCBOR || f == FormatSenMLCBOR }

// senml reports whether f is a SenML encoding: no tags, so no sim_run tag.
func (f Format) senml() bool { return f == FormatSenML || f == FormatSenMLCBOR }

// tagged reports whether the readings carry the sim_run tag.
func (f Format) tagged() bool { return !f.senml() }

// The simulator builds every frame as JSON (faults, renumbering and
// resends work on that text) and, for FormatCBOR, transcodes the finished
// frame. The transcoder is written here rather than taken from a CBOR
// library because the frames it must carry include what no JSON decoder
// accepts — the invalid-value fault's NaN and 1e400 — which become CBOR's
// NaN and infinity, refused by the service like their JSON spellings.

// toCBOR transcodes a frame to CBOR. A frame that is not JSON (the
// malformed fault's truncated text) becomes {"seq":N,"truncated":"<text>"}:
// well-formed CBOR that the service refuses as a whole (invalid_payload),
// naming seq N, as it does the truncated JSON.
func toCBOR(frame []byte) []byte { return toCBORLabels(frame, false) }

// toCBORLabels is toCBOR; with senml, the keys of the records in the
// envelope's "senml" array become RFC 8428 §6's integer labels.
func toCBORLabels(frame []byte, senml bool) []byte {
	mode := labelsNone
	if senml {
		mode = labelsEnvelope
	}
	out, rest, err := cborValue(nil, frame, mode)
	if err == nil && len(skipSpace(rest)) == 0 {
		return out
	}
	seq, _ := seqOf(frame)
	b := []byte{0xa2}
	b = cborText(b, "seq")
	b = cborHead(b, 0, seq)
	b = cborText(b, "truncated")
	return cborText(b, string(frame))
}

// seqOf reads N from a frame's `{"seq":N,` prefix.
func seqOf(frame []byte) (uint64, bool) {
	const p = `{"seq":`
	if len(frame) < len(p) || string(frame[:len(p)]) != p {
		return 0, false
	}
	i := len(p)
	for i < len(frame) && frame[i] >= '0' && frame[i] <= '9' {
		i++
	}
	n, err := strconv.ParseUint(string(frame[len(p):i]), 10, 64)
	return n, err == nil
}

var errNotJSON = errors.New("not JSON")

func skipSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\n' || b[0] == '\r' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}

// cborHead appends a CBOR head: major type and argument.
func cborHead(dst []byte, major byte, n uint64) []byte {
	m := major << 5
	switch {
	case n < 24:
		return append(dst, m|byte(n))
	case n <= math.MaxUint8:
		return append(dst, m|24, byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(dst, m|25), uint16(n))
	case n <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(dst, m|26), uint32(n))
	}
	return binary.BigEndian.AppendUint64(append(dst, m|27), n)
}

func cborText(dst []byte, s string) []byte { return append(cborHead(dst, 3, uint64(len(s))), s...) }

// labels says which map keys become SenML integer labels: none, none
// here but those of the records in this envelope's "senml" array, or
// those of this map (a record).
type labels int

const (
	labelsNone labels = iota
	labelsEnvelope
	labelsRecords // the "senml" array: its maps are records
	labelsRecord
)

// senmlLabels are RFC 8428 §6's integer labels (the service's table is
// its own; the simulator talks to it only over the wire).
var senmlLabels = map[string]int64{
	"bver": -1, "bn": -2, "bt": -3, "bu": -4, "bv": -5, "bs": -6,
	"n": 0, "u": 1, "v": 2, "vs": 3, "vb": 4, "s": 5, "t": 6, "ut": 7, "vd": 8,
}

func cborInt(dst []byte, n int64) []byte {
	if n < 0 {
		return cborHead(dst, 1, uint64(-(n + 1)))
	}
	return cborHead(dst, 0, uint64(n))
}

// cborValue transcodes the JSON value at the start of in.
func cborValue(dst, in []byte, mode labels) ([]byte, []byte, error) {
	in = skipSpace(in)
	if len(in) == 0 {
		return dst, in, errNotJSON
	}
	switch c := in[0]; {
	case c == '{' || c == '[':
		return cborContainer(dst, in, mode)
	case c == '"':
		s, rest, err := jsonText(in)
		if err != nil {
			return dst, in, err
		}
		return cborText(dst, s), rest, nil
	case hasWord(in, "true"):
		return append(dst, 0xf5), in[4:], nil
	case hasWord(in, "false"):
		return append(dst, 0xf4), in[5:], nil
	case hasWord(in, "null"):
		return append(dst, 0xf6), in[4:], nil
	case hasWord(in, "NaN"):
		return binary.BigEndian.AppendUint64(append(dst, 0xfb), math.Float64bits(math.NaN())), in[3:], nil
	case c == '-' || c >= '0' && c <= '9':
		i := 1
		for i < len(in) && (in[i] >= '0' && in[i] <= '9' || in[i] == '.' || in[i] == 'e' || in[i] == 'E' || in[i] == '+' || in[i] == '-') {
			i++
		}
		lit := string(in[:i])
		if n, err := strconv.ParseInt(lit, 10, 64); err == nil {
			if n < 0 {
				return cborHead(dst, 1, uint64(-(n + 1))), in[i:], nil
			}
			return cborHead(dst, 0, uint64(n)), in[i:], nil
		}
		f, err := strconv.ParseFloat(lit, 64)
		if err != nil && !math.IsInf(f, 0) { // 1e400 is infinity, as the fault means it
			return dst, in, errNotJSON
		}
		return binary.BigEndian.AppendUint64(append(dst, 0xfb), math.Float64bits(f)), in[i:], nil
	}
	return dst, in, errNotJSON
}

func hasWord(in []byte, w string) bool { return len(in) >= len(w) && string(in[:len(w)]) == w }

// cborContainer transcodes an object or array: its items first, then the
// head with their count.
func cborContainer(dst, in []byte, mode labels) ([]byte, []byte, error) {
	obj := in[0] == '{'
	end := byte(']')
	if obj {
		end = '}'
	}
	in = skipSpace(in[1:])
	var items []byte
	n := 0
	for len(in) > 0 && in[0] != end {
		if n > 0 {
			if in[0] != ',' {
				return dst, in, errNotJSON
			}
			in = skipSpace(in[1:])
		}
		var err error
		if obj {
			k, rest, err := jsonText(in)
			if err != nil {
				return dst, in, err
			}
			child := labelsNone
			if l, ok := senmlLabels[k]; ok && mode == labelsRecord {
				items = cborInt(items, l)
			} else {
				items = cborText(items, k)
			}
			if mode == labelsEnvelope && k == "senml" {
				child = labelsRecords
			}
			if rest = skipSpace(rest); len(rest) == 0 || rest[0] != ':' {
				return dst, in, errNotJSON
			}
			in = rest[1:]
			if items, in, err = cborValue(items, in, child); err != nil {
				return dst, in, err
			}
			in = skipSpace(in)
			n++
			continue
		}
		child := labelsNone
		if mode == labelsRecords {
			child = labelsRecord
		}
		if items, in, err = cborValue(items, in, child); err != nil {
			return dst, in, err
		}
		in = skipSpace(in)
		n++
	}
	if len(in) == 0 {
		return dst, in, errNotJSON
	}
	major := byte(4)
	if obj {
		major = 5
	}
	return append(cborHead(dst, major, uint64(n)), items...), in[1:], nil
}

// jsonText reads a JSON string literal.
func jsonText(in []byte) (string, []byte, error) {
	if len(in) == 0 || in[0] != '"' {
		return "", in, errNotJSON
	}
	for i := 1; i < len(in); i++ {
		switch in[i] {
		case '\\':
			i++
		case '"':
			s, err := strconv.Unquote(string(in[:i+1]))
			if err != nil {
				return "", in, errNotJSON
			}
			return s, in[i+1:], nil
		}
	}
	return "", in, errNotJSON
}
