package simulator

import (
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/ingest/payload"
	"github.com/telemetryd/telemetryd/telemetry"
)

// The SenML and line-protocol frames, decoded by the service's own
// decoder, are the readings the simulator means: same device, time to the
// nanosecond, sim_seq and metrics, run tag where the format has tags, and
// the invalid-value fault refused for the record or line it is in.
func TestFormatsDecodeAsMeant(t *testing.T) {
	rs := []reading{
		{simSeq: 7, ts: 1796413099172419096, measurement: "environment", fields: []field{
			{name: "temperature", kind: kindFloat, f: 21.5, prec: 1, unit: "Cel"},
			{name: "door_open", kind: kindBool, b: true},
			{name: "state", kind: kindString, s: `idle "q"`},
			{name: "count", kind: kindInt, i: 42},
		}},
		{simSeq: 8, ts: 1796413099172419097, measurement: "environment", device: "child-1", fault: FaultInvalid,
			fields: []field{{name: "temperature", kind: kindFloat, f: 22, prec: 1}}},
	}
	now := time.Now()
	fieldOf := func(r telemetry.Reading, name string) (telemetry.Value, bool) {
		for _, f := range r.Fields {
			if f.Name == name {
				return f.Value, true
			}
		}
		return telemetry.Value{}, false
	}
	for _, f := range []Format{FormatSenML, FormatSenMLCBOR} {
		r := &runner{cfg: Config{Format: f}, runID: "run-1"}
		for variant := range invalidSenML {
			b, _, recRef := r.encode(3, rs, variant, true)
			m, err := payload.NewDecoder(payload.Limits{}).Decode(r.wire(b), now)
			if err != nil || !m.HasSeq || m.Seq != 3 || len(m.Readings) != len(recRef) || len(recRef) != 7 {
				t.Fatalf("%s: %v seq %d, %d records for %v", f, err, m.Seq, len(m.Readings), recRef)
			}
			if len(m.Invalid) != 1 || m.Invalid[0].Code != "invalid_value" || recRef[m.Invalid[0].Index] != 1 {
				t.Fatalf("%s variant %d: rejections %+v", f, variant, m.Invalid)
			}
			for i, rd := range m.Readings {
				if i == m.Invalid[0].Index {
					continue
				}
				want := rs[recRef[i]]
				if rd.Time != want.ts || string(rd.Device) != want.device || rd.Measurement != "environment" || len(rd.Fields) != 1 {
					t.Errorf("%s record %d: %+v, want ts %d device %q", f, i, rd, want.ts, want.device)
				}
			}
			if v, ok := fieldOf(m.Readings[0], SeqField); !ok || v != telemetry.Float(7) {
				t.Errorf("%s: sim_seq %v", f, m.Readings[0])
			}
			if v, ok := fieldOf(m.Readings[3], "state"); !ok || v != telemetry.String(`idle "q"`) {
				t.Errorf("%s: state %v", f, m.Readings[3])
			}
		}
	}

	r := &runner{cfg: Config{Format: FormatLP}, runID: "run 1"}
	b, body, recRef := r.encode(3, rs, 0, true)
	if body != 0 || recRef != nil {
		t.Fatalf("lp: body %d recRef %v", body, recRef)
	}
	m, err := payload.NewDecoder(payload.Limits{}).DecodeLineProtocol(b, time.Nanosecond)
	if err != nil || len(m.Readings) != 2 || len(m.Invalid) != 1 || m.Invalid[0].Index != 1 || m.Invalid[0].Code != "invalid_value" {
		t.Fatalf("lp: %v %s", err, b)
	}
	rd := m.Readings[0]
	if rd.Time != rs[0].ts || len(rd.Tags) != 1 || rd.Tags[0] != (telemetry.Tag{Key: RunTag, Value: "run 1"}) || len(rd.Fields) != 5 {
		t.Fatalf("lp reading %+v", rd)
	}
	if v, _ := fieldOf(rd, SeqField); v != telemetry.Int(7) {
		t.Errorf("lp sim_seq %v", v)
	}
	if v, _ := fieldOf(rd, "count"); v != telemetry.Int(42) {
		t.Errorf("lp count %v", v)
	}
	if _, err := payload.NewDecoder(payload.Limits{}).DecodeLineProtocol(malformedLP("run 1"), time.Nanosecond); err != nil {
		t.Fatal(err)
	}
	if m, _ := payload.NewDecoder(payload.Limits{}).DecodeLineProtocol(malformedLP("run 1"), time.Nanosecond); len(m.Invalid) != 1 || m.Invalid[0].Code != "invalid_reading" {
		t.Fatalf("malformed lp: %+v", m)
	}
}

func TestFormatLPNeedsAnAck(t *testing.T) {
	for _, c := range []struct {
		tr Transport
		ok bool
	}{{TransportHTTP, true}, {TransportMQTT, true}, {TransportWS, false}, {TransportMixed, false}, {TransportGateway, false}} {
		cfg := Config{ServiceURL: "http://127.0.0.1:1", AdminToken: "x", Transport: c.tr, Format: FormatLP, Gateways: 1}.withDefaults()
		if err := cfg.validate(); (err == nil) != c.ok {
			t.Errorf("%s: %v", c.tr, err)
		}
	}
}
