package payload

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/influxdata/line-protocol/v2/lineprotocol"
)

// The new formats' decoding cost per reading, each next to its reference
// library decoding the same bytes alone (P7's idea: what the service adds
// over the library). The reference walks every value and so does as much
// reading of the input as the decoder; it builds no readings.

const formatBatch = 100

func benchLines(n int) []byte {
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, "environment,site=plant-3,room=r%d temperature=%d.4,humidity=40.1,door_open=false,status=\"ok\",count=%di %d\n",
			i%4, 20+i%5, i, 1763820000123000000+int64(i))
	}
	return b.Bytes()
}

func benchCBORBatch(tb testing.TB, n int) []byte {
	rs := make([]any, n)
	for i := range rs {
		rs[i] = map[string]any{"ts": 1763820000123 + int64(i), "measurement": "environment",
			"metrics": map[string]any{"temperature": 20.4 + float64(i%5), "humidity": 40.1, "door_open": false, "status": "ok"},
			"tags":    map[string]any{"site": "plant-3"}}
	}
	b, err := cbor.Marshal(map[string]any{"seq": 18, "readings": rs})
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func benchSenMLCBOR(tb testing.TB, n int) []byte {
	recs := make([]any, 0, n)
	recs = append(recs, map[int]any{-2: "gw-child-1/", -3: 1763820000.0, -4: "Cel", 0: "temperature", 2: 21.4})
	for i := 1; i < n; i++ {
		recs = append(recs, map[int]any{0: "temperature", 6: float64(i), 2: 21.4 + float64(i%3)})
	}
	b, err := cbor.Marshal(recs)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func perReading(b *testing.B, n int) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/reading")
}

func BenchmarkLineProtocol100(b *testing.B) {
	d := NewDecoder(Limits{})
	data := benchLines(formatBatch)
	if m, err := d.DecodeLineProtocol(data, time.Nanosecond); err != nil || len(m.Invalid) != 0 || len(m.Readings) != formatBatch {
		b.Fatalf("%v %+v", err, m.Invalid)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.DecodeLineProtocol(data, time.Nanosecond); err != nil {
			b.Fatal(err)
		}
	}
	perReading(b, formatBatch)
}

// BenchmarkLineProtocolReference100 is line-protocol/v2's Decoder alone on
// the same lines: every tag, field value and timestamp read.
func BenchmarkLineProtocolReference100(b *testing.B) {
	data := benchLines(formatBatch)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		dec := lineprotocol.NewDecoderWithBytes(data)
		n := 0
		for dec.Next() {
			if _, err := dec.Measurement(); err != nil {
				b.Fatal(err)
			}
			for {
				k, _, err := dec.NextTag()
				if err != nil {
					b.Fatal(err)
				}
				if k == nil {
					break
				}
			}
			for {
				k, _, err := dec.NextField()
				if err != nil {
					b.Fatal(err)
				}
				if k == nil {
					break
				}
			}
			if _, err := dec.Time(lineprotocol.Nanosecond, time.Time{}); err != nil {
				b.Fatal(err)
			}
			n++
		}
		if n != formatBatch {
			b.Fatalf("%d lines", n)
		}
	}
	perReading(b, formatBatch)
}

func benchCBORDecode(b *testing.B, data []byte, readings int) {
	d := NewDecoder(Limits{})
	if m, err := d.Decode(data, now); err != nil || len(m.Invalid) != 0 || len(m.Readings) != readings {
		b.Fatalf("%v %+v", err, m.Invalid)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.Decode(data, now); err != nil {
			b.Fatal(err)
		}
	}
	perReading(b, readings)
}

// benchCBORReference is fxamacker/cbor alone, with the decoder's options,
// unmarshalling the same bytes into a generic value.
func benchCBORReference(b *testing.B, data []byte, readings int) {
	mode := newCBORMode(Limits{}.withDefaults())
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		var v any
		if err := mode.Unmarshal(data, &v); err != nil {
			b.Fatal(err)
		}
	}
	perReading(b, readings)
}

func BenchmarkCBORBatch100(b *testing.B) {
	benchCBORDecode(b, benchCBORBatch(b, formatBatch), formatBatch)
}
func BenchmarkCBORBatch100Reference(b *testing.B) {
	benchCBORReference(b, benchCBORBatch(b, formatBatch), formatBatch)
}
func BenchmarkSenMLCBOR100(b *testing.B) {
	benchCBORDecode(b, benchSenMLCBOR(b, formatBatch), formatBatch)
}
func BenchmarkSenMLCBOR100Reference(b *testing.B) {
	benchCBORReference(b, benchSenMLCBOR(b, formatBatch), formatBatch)
}
