package bridge

import (
	"fmt"
	"time"

	"github.com/influxdata/line-protocol/v2/lineprotocol"

	"github.com/telemetryd/telemetryd/telemetry"
)

// appendLine encodes one normalized reading as a line of InfluxDB line
// protocol (ns precision). The encoder validates names, escapes every
// delimiter and refuses control characters, so no device-supplied string can
// inject a second point. On error the encoder's buffer is left unchanged.
func appendLine(enc *lineprotocol.Encoder, r *telemetry.Reading) error {
	start := len(enc.Bytes())
	enc.StartLine(r.Measurement)
	for _, t := range r.Tags {
		enc.AddTag(t.Key, t.Value)
	}
	for _, f := range r.Fields {
		var v lineprotocol.Value
		ok := true
		switch f.Value.Kind() {
		case telemetry.KindFloat:
			v, ok = lineprotocol.FloatValue(f.Value.AsFloat())
		case telemetry.KindInt:
			v = lineprotocol.IntValue(f.Value.AsInt())
		case telemetry.KindBool:
			v = lineprotocol.BoolValue(f.Value.AsBool())
		case telemetry.KindString:
			v, ok = lineprotocol.StringValue(f.Value.AsString())
		default:
			ok = false
		}
		if !ok {
			enc.SetBuffer(enc.Bytes()[:start]) // drop the half-written line
			return fmt.Errorf("field %q: value cannot be encoded", f.Name)
		}
		enc.AddField(f.Name, v)
	}
	enc.EndLine(time.Unix(0, r.Time))
	if err := enc.Err(); err != nil {
		enc.SetBuffer(enc.Bytes()[:start])
		return err
	}
	return nil
}
