package simulator

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func testReadings(n int, device string) []reading {
	src := &source{id: "dev-1"}
	rs := make([]reading, n)
	for i := range rs {
		rs[i] = reading{
			src: src, simSeq: uint32(i + 1), ts: 1763820000123456789 + int64(i), measurement: "environment", device: device,
			fields: []field{
				floatField("temperature", 21.456, 2, "Cel"),
				floatField("humidity", 40.25, 1, ""),
				intField("energy", 1234, "Wh"),
				boolField("door_open", false),
				stringField("state", `ok "quoted"`),
			},
		}
	}
	return rs
}

func TestEncodeFrame(t *testing.T) {
	for _, tc := range []struct {
		name   string
		n      int
		device string
		batch  bool
	}{
		{"single", 1, "", false},
		{"batch", 3, "", false},
		{"gateway", 2, "child-7", true},
		{"gateway one child", 1, "child-7", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			payload, body := encodeFrame(42, testReadings(tc.n, tc.device), "run-1", 0, tc.batch)
			if !bytes.HasPrefix(payload, []byte(`{"seq":42,`)) || body != len(`{"seq":42,`) {
				t.Fatalf("prefix: %s (body %d)", payload, body)
			}
			var m map[string]any
			if err := json.Unmarshal(payload, &m); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, payload)
			}
			var readings []any
			if rs, ok := m["readings"].([]any); ok {
				readings = rs
			} else {
				readings = []any{m}
			}
			if len(readings) != tc.n || (tc.n == 1 && !tc.batch) != (m["readings"] == nil) {
				t.Fatalf("%d readings, want %d: %s", len(readings), tc.n, payload)
			}
			for i, r := range readings {
				r := r.(map[string]any)
				metrics := r["metrics"].(map[string]any)
				seq := metrics[SeqField].(map[string]any)
				if seq["type"] != "int" || seq["value"] != float64(i+1) {
					t.Errorf("sim_seq = %v", seq)
				}
				if r["tags"].(map[string]any)[RunTag] != "run-1" || r["measurement"] != "environment" {
					t.Errorf("reading %d: %v", i, r)
				}
				if tc.device != "" && r["device"] != tc.device || tc.device == "" && r["device"] != nil {
					t.Errorf("device = %v", r["device"])
				}
				if metrics["temperature"].(map[string]any)["unit"] != "Cel" || metrics["humidity"] != 40.2 && metrics["humidity"] != 40.3 {
					t.Errorf("metrics = %v", metrics)
				}
				if metrics["state"] != `ok "quoted"` || metrics["door_open"] != false {
					t.Errorf("metrics = %v", metrics)
				}
			}
			// The timestamp keeps every nanosecond digit (no float rounding).
			if !bytes.Contains(payload, []byte(`"ts":1763820000123456789`)) {
				t.Errorf("ts lost precision: %s", payload)
			}
			// Renumbering keeps the body.
			dup, db := withSeq(payload, body, 1000)
			if !bytes.Equal(dup[db:], payload[body:]) || !bytes.HasPrefix(dup, []byte(`{"seq":1000,`)) {
				t.Errorf("withSeq: %s", dup)
			}
		})
	}
}

func TestInvalidValuesAreNotValidMetrics(t *testing.T) {
	for v := range invalidValues {
		rs := testReadings(1, "")
		rs[0].fault = FaultInvalid
		payload, _ := encodeFrame(1, rs, "r", v, false)
		if !bytes.Contains(payload, []byte(`"temperature":`+invalidValues[v])) {
			t.Fatalf("variant %d not in %s", v, payload)
		}
		// The frame stays well-formed JSON (only the reading is bad),
		// except for NaN, which the service's decoder still reads as a
		// number literal and refuses per reading.
		if strictJSON := invalidValues[v] != "NaN"; strictJSON != json.Valid(payload) {
			t.Fatalf("variant %d (%s): valid JSON %v", v, invalidValues[v], json.Valid(payload))
		}
	}
}

func TestTruncateKeepsSeqAndBreaksJSON(t *testing.T) {
	payload, body := encodeFrame(12345, testReadings(2, ""), "r", 0, false)
	for _, u := range []float64{0, 0.001, 0.3, 0.5, 0.999, 0.999999} {
		cut := truncate(payload, body, u)
		if len(cut) >= len(payload) || !bytes.HasPrefix(cut, []byte(`{"seq":12345,`)) {
			t.Fatalf("u=%v: %q", u, cut)
		}
		if json.Valid(cut) {
			t.Fatalf("u=%v: still valid JSON: %s", u, cut)
		}
	}
}

func TestOversizeFrame(t *testing.T) {
	b := oversizeFrame(9, "r", 1000)
	if len(b) <= 1000 || !json.Valid(b) || !bytes.HasPrefix(b, []byte(`{"seq":9,`)) {
		t.Fatalf("oversize frame of %d bytes, valid %v", len(b), json.Valid(b))
	}
}

func TestParseServerMessage(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
	}{
		{`{"ack":17}`, "ack 17"},
		{`{"ack":18446744073709551615}`, "ack 18446744073709551615"},
		{`{"ack": 5}`, "ack 5"},
		{`{"error":{"seq":3,"code":"rejected","message":"1 reading(s) rejected","rejected":[{"index":1,"code":"invalid_value","message":"x"}]}}`, "error 3 rejected [1 invalid_value]"},
		{`{"error":{"code":"invalid_payload","message":"m"}}`, "error - invalid_payload []"},
		{`{"error":{"seq":4,"code":"overloaded","message":"m","retry_after_ms":1000}}`, "error 4 overloaded [] 1000"},
	} {
		m, err := parseServerMessage([]byte(tc.in))
		if err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		var got string
		switch {
		case m.Ack != nil:
			got = "ack " + jsonString(*m.Ack)
		case m.Error != nil:
			seq := "-"
			if m.Error.Seq != nil {
				seq = jsonString(*m.Error.Seq)
			}
			var rj []string
			for _, r := range m.Error.Rejected {
				rj = append(rj, jsonString(r.Index)+" "+r.Code)
			}
			got = "error " + seq + " " + m.Error.Code + " [" + strings.Join(rj, ",") + "]"
			if m.Error.RetryAfterMS > 0 {
				got += " " + jsonString(m.Error.RetryAfterMS)
			}
		}
		if got != tc.want {
			t.Errorf("%s → %q, want %q", tc.in, got, tc.want)
		}
	}
	if _, err := parseServerMessage([]byte(`{"ack":`)); err == nil {
		t.Error("truncated message parsed")
	}
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
