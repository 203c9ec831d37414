package simulator

import (
	"strconv"
	"strings"

	"github.com/telemetryd/telemetryd/telemetry"
)

// SenML and line protocol cannot say everything the native frames say, so
// the simulator writes them from the readings themselves, each in the form
// the service reads back into the same readings:
//
// SenML: one record per metric, sim_seq first, the reading's time as bt
// (whole seconds) plus each record's t (the fraction, which a float64
// holds to the nanosecond: readings of a device may be 1 ns apart) and,
// from a gateway, its child as bn "<child>/". SenML has no tags, so
// there is no sim_run tag: a SenML run is found in storage by its devices
// and its time window, and on the dashboard by its devices (Format.tagged).
// A pack names one measurement, the frame's first reading's. The
// invalid-value fault goes on the sim_seq record: the service rejects that
// record alone, the reading's other metrics are stored without a sim_seq,
// which the verification does not count. A reading's records share its
// ref (frame.recRef), so one rejected record rejects the reading.
//
// Line protocol: one line per reading, measurement, device_id (a gateway's
// child) and sim_run tags, sim_seq as an integer, the time in nanoseconds.
// It has no seq, so over HTTP each frame is one POST to /api/v2/write whose
// 204 is the ack; over MQTT the PUBACK is; a WebSocket would give no ack at
// all, so -format lp is refused with -transport ws (Config.validate). Line
// protocol has no units (they are left out) and no value a float metric
// could be refused for, so the invalid-value fault is an unsigned integer
// above 2^63−1, refused with invalid_value; the malformed fault is a frame
// of one line that does not parse, which the HTTP link reports as the
// frame's invalid_payload.

// encodeSenML encodes readings as one SenML envelope and says which
// reading each record belongs to.
func encodeSenML(seq uint64, rs []reading, variant int) (payload []byte, body int, recRef []int) {
	size := 64
	for i := range rs {
		size += 64 + 40*len(rs[i].fields)
	}
	b := seqPrefix(make([]byte, 0, size), seq)
	body = len(b)
	b = append(b, `"measurement":`...)
	b = telemetry.AppendJSONString(b, rs[0].measurement)
	b = append(b, `,"senml":[`...)
	for i := range rs {
		r := &rs[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '{')
		if r.device != "" {
			b = append(b, `"bn":`...)
			b = telemetry.AppendJSONString(b, r.device+"/")
			b = append(b, ',')
		}
		b = append(b, `"bt":`...)
		b = strconv.AppendInt(b, r.ts/1e9, 10)
		t := appendFraction(nil, r.ts)
		b = append(append(append(b, `,"t":`...), t...), `,"n":"`+SeqField+`",`...)
		if r.fault == FaultInvalid {
			b = append(b, invalidSenML[variant%len(invalidSenML)]...)
		} else {
			b = append(b, `"v":`...)
			b = strconv.AppendUint(b, uint64(r.simSeq), 10)
		}
		b = append(b, '}')
		recRef = append(recRef, i)
		for j := range r.fields {
			b = appendSenMLRecord(append(b, ','), &r.fields[j], t)
			recRef = append(recRef, i)
		}
	}
	return append(b, "]}"...), body, recRef
}

// invalidSenML are the invalid-value fault's records, one per invalidValues
// variant: NaN, a string as a number, 1.5 as a boolean, 1e400, an array.
var invalidSenML = []string{`"v":NaN`, `"v":"n/a"`, `"vb":1.5`, `"v":1e400`, `"v":[1,2]`}

func appendSenMLRecord(b []byte, f *field, t []byte) []byte {
	b = append(b, `{"t":`...)
	b = append(b, t...)
	b = append(b, `,"n":`...)
	b = telemetry.AppendJSONString(b, f.name)
	switch f.kind {
	case kindFloat:
		b = append(b, `,"v":`...)
		b = strconv.AppendFloat(b, f.f, 'f', f.prec, 64)
	case kindInt:
		b = append(b, `,"v":`...)
		b = strconv.AppendInt(b, f.i, 10)
	case kindBool:
		b = append(b, `,"vb":`...)
		b = strconv.AppendBool(b, f.b)
	case kindString:
		b = append(b, `,"vs":`...)
		b = telemetry.AppendJSONString(b, f.s)
	}
	if f.unit != "" {
		b = append(b, `,"u":`...)
		b = telemetry.AppendJSONString(b, f.unit)
	}
	return append(b, '}')
}

// appendFraction writes the sub-second part of Unix nanoseconds as
// decimal seconds, 0.nnnnnnnnn: small enough that a float64 (CBOR) keeps
// every nanosecond, which 10-digit seconds with nine decimals would not.
func appendFraction(b []byte, ns int64) []byte {
	frac := strconv.FormatInt(ns%1e9+1e9, 10) // 1 and nine digits
	return append(append(b, "0."...), frac[1:]...)
}

// encodeLP encodes readings as line protocol, one line each.
func encodeLP(rs []reading, runID string) []byte {
	var b []byte
	for i := range rs {
		r := &rs[i]
		b = append(b, lpMeasurement.Replace(r.measurement)...)
		if r.device != "" {
			b = append(b, ","+deviceIDTag+"="...)
			b = append(b, lpKey.Replace(r.device)...)
		}
		b = append(b, ","+RunTag+"="...)
		b = append(b, lpKey.Replace(runID)...)
		b = append(b, " "+SeqField+"="...)
		b = strconv.AppendUint(b, uint64(r.simSeq), 10)
		b = append(b, 'i')
		for j := range r.fields {
			f := &r.fields[j]
			b = append(b, ',')
			b = append(b, lpKey.Replace(f.name)...)
			b = append(b, '=')
			if j == 0 && r.fault == FaultInvalid {
				b = append(b, "18446744073709551615u"...)
				continue
			}
			switch f.kind {
			case kindFloat:
				b = strconv.AppendFloat(b, f.f, 'f', max(f.prec, 1), 64) // "21" would still be a float; "21.0" says so
			case kindInt:
				b = append(strconv.AppendInt(b, f.i, 10), 'i')
			case kindBool:
				b = strconv.AppendBool(b, f.b)
			case kindString:
				b = append(append(append(b, '"'), lpString.Replace(f.s)...), '"')
			}
		}
		b = append(b, ' ')
		b = strconv.AppendInt(b, r.ts, 10)
		b = append(b, '\n')
	}
	return b
}

// malformedLP is the malformed fault's line-protocol frame: a line with a
// field and no value, which no line-protocol parser accepts.
func malformedLP(runID string) []byte {
	return []byte("sim_malformed," + RunTag + "=" + lpKey.Replace(runID) + " " + SeqField + "=\n")
}

// Line protocol's escaping rules (measurement; tag keys, values and field
// keys; string field values).
var (
	lpMeasurement = strings.NewReplacer(",", `\,`, " ", `\ `)
	lpKey         = strings.NewReplacer(",", `\,`, "=", `\=`, " ", `\ `)
	lpString      = strings.NewReplacer(`\`, `\\`, `"`, `\"`)
)
