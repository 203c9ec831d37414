package simulator

import (
	"bytes"
	"encoding/json"
	"strconv"

	"github.com/telemetryd/telemetryd/telemetry"
)

// The simulator writes the device wire format itself (it talks to the
// service only over the network, like any device):
//
//	single reading  {"seq":17,"ts":…,"measurement":"environment","metrics":{…},"tags":{…}}
//	batch           {"seq":18,"readings":[{…},{…}]}   (a gateway adds "device":"<child id>")
//
// Every reading carries the tag sim_run=<run id> and the integer metric
// sim_seq (a per-device sequence number), so that each one can be found
// in storage and on the dashboard. "ts" is in nanoseconds and strictly
// increasing per device: resends keep it, which makes them idempotent.

// Names the simulator adds to every reading.
const (
	RunTag      = "sim_run"
	SeqField    = "sim_seq"
	deviceIDTag = "device_id"
)

// reading is one generated reading, ready to encode.
type reading struct {
	src         *source
	simSeq      uint32
	ts          int64
	fault       FaultKind // FaultInvalid or FaultSkew for a bad reading; FaultMalformed for one in a malformed frame
	measurement string
	device      string // child id in gateway frames
	fields      []field
}

// invalidValues are metric values the service must refuse with
// invalid_value: not a number JSON allows, a type that does not match the
// declared one, a value out of range, a structure.
var invalidValues = []string{
	`NaN`,
	`{"value":"n/a","type":"float"}`,
	`{"value":1.5,"type":"int"}`,
	`1e400`,
	`[1,2]`,
}

// appendReading appends r as a JSON object; a FaultInvalid reading has the
// value of its first metric replaced by invalidValues[variant].
func appendReading(dst []byte, r *reading, runID string, variant int) []byte {
	dst = append(dst, `{"ts":`...)
	dst = strconv.AppendInt(dst, r.ts, 10)
	dst = append(dst, `,"measurement":`...)
	dst = telemetry.AppendJSONString(dst, r.measurement)
	if r.device != "" {
		dst = append(dst, `,"device":`...)
		dst = telemetry.AppendJSONString(dst, r.device)
	}
	dst = append(dst, `,"metrics":{"`+SeqField+`":{"value":`...)
	dst = strconv.AppendUint(dst, uint64(r.simSeq), 10)
	dst = append(dst, `,"type":"int"}`...)
	for i := range r.fields {
		f := &r.fields[i]
		dst = append(dst, ',')
		dst = telemetry.AppendJSONString(dst, f.name)
		dst = append(dst, ':')
		if i == 0 && r.fault == FaultInvalid {
			dst = append(dst, invalidValues[variant%len(invalidValues)]...)
			continue
		}
		dst = appendFieldValue(dst, f)
	}
	dst = append(dst, `},"tags":{"`+RunTag+`":`...)
	dst = telemetry.AppendJSONString(dst, runID)
	return append(dst, "}}"...)
}

func appendFieldValue(dst []byte, f *field) []byte {
	explicit := f.unit != "" || f.kind == kindInt
	if explicit {
		dst = append(dst, `{"value":`...)
	}
	typ := ""
	switch f.kind {
	case kindFloat:
		dst = strconv.AppendFloat(dst, f.f, 'f', f.prec, 64)
		typ = "float"
	case kindInt:
		dst = strconv.AppendInt(dst, f.i, 10)
		typ = "int"
	case kindBool:
		dst = strconv.AppendBool(dst, f.b)
		typ = "bool"
	case kindString:
		dst = telemetry.AppendJSONString(dst, f.s)
		typ = "string"
	}
	if !explicit {
		return dst
	}
	dst = append(dst, `,"type":"`...)
	dst = append(dst, typ...)
	dst = append(dst, '"')
	if f.unit != "" {
		dst = append(dst, `,"unit":`...)
		dst = telemetry.AppendJSONString(dst, f.unit)
	}
	return append(dst, '}')
}

// seqPrefix appends `{"seq":N,`.
func seqPrefix(dst []byte, seq uint64) []byte {
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	return append(dst, ',')
}

// encodeFrame encodes readings as one frame with sequence number seq: the
// single form for one reading of the sender itself, the batch form
// otherwise. body is where the part after the seq prefix starts, so that
// the frame can be re-numbered (withSeq) without re-encoding.
func encodeFrame(seq uint64, rs []reading, runID string, variant int, batch bool) (payload []byte, body int) {
	size := 32
	for i := range rs {
		size += 96 + 48*len(rs[i].fields)
	}
	b := make([]byte, 0, size)
	b = seqPrefix(b, seq)
	body = len(b)
	if len(rs) == 1 && !batch {
		var tmp [1024]byte
		r := appendReading(tmp[:0], &rs[0], runID, variant)
		return append(b, r[1:]...), body // drop the reading's '{'
	}
	b = append(b, `"readings":[`...)
	for i := range rs {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendReading(b, &rs[i], runID, variant)
	}
	return append(b, "]}"...), body
}

// withSeq returns payload (encoded by encodeFrame) renumbered to seq.
func withSeq(payload []byte, body int, seq uint64) ([]byte, int) {
	b := make([]byte, 0, len(payload)+8)
	b = seqPrefix(b, seq)
	nb := len(b)
	return append(b, payload[body:]...), nb
}

// truncate makes a malformed frame: a strict prefix of the object, cut
// somewhere after the seq prefix (so the service can still name the frame
// in its error) and before the final brace. Any strict prefix of a JSON
// object is invalid JSON.
func truncate(payload []byte, body int, u float64) []byte {
	lo, hi := body+1, len(payload)-1
	if hi <= lo {
		return payload[:body]
	}
	return payload[:lo+int(u*float64(hi-lo))]
}

// oversizeFrame returns a well-formed frame larger than limit bytes.
func oversizeFrame(seq uint64, runID string, limit int) []byte {
	b := seqPrefix(make([]byte, 0, limit+1200), seq)
	b = append(b, `"measurement":"sim_oversize","metrics":{"pad":"`...)
	b = append(b, bytes.Repeat([]byte("x"), limit+1024)...)
	b = append(b, `"},"tags":{"`+RunTag+`":`...)
	b = telemetry.AppendJSONString(b, runID)
	return append(b, "}}"...)
}

// serverMessage is what the service sends on a device socket.
type serverMessage struct {
	Ack   *uint64      `json:"ack"`
	Error *serverError `json:"error"`
}

type serverError struct {
	Seq          *uint64     `json:"seq"`
	Code         string      `json:"code"`
	Message      string      `json:"message"`
	RetryAfterMS int64       `json:"retry_after_ms"`
	Rejected     []rejection `json:"rejected"`
}

type rejection struct {
	Index   int    `json:"index"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// parseServerMessage decodes an ack (fast path) or an error frame.
func parseServerMessage(b []byte) (serverMessage, error) {
	const ackPrefix = `{"ack":`
	if bytes.HasPrefix(b, []byte(ackPrefix)) && len(b) > len(ackPrefix)+1 && b[len(b)-1] == '}' {
		if n, err := strconv.ParseUint(string(b[len(ackPrefix):len(b)-1]), 10, 64); err == nil {
			return serverMessage{Ack: &n}, nil
		}
	}
	var m serverMessage
	err := json.Unmarshal(b, &m)
	return m, err
}
