package payload

import "testing"

// The CBOR reference in its cheapest form: fxamacker/cbor unmarshalling
// the same bytes into plain structs that know the schema (metrics stay a
// generic map: their names are the device's). It builds no readings and
// checks no rules; the decoder's cost over it is what the rules cost.

type refCBORReading struct {
	TS          int64             `cbor:"ts"`
	Measurement string            `cbor:"measurement"`
	Metrics     map[string]any    `cbor:"metrics"`
	Tags        map[string]string `cbor:"tags"`
}

type refCBORBatch struct {
	Seq      uint64           `cbor:"seq"`
	Readings []refCBORReading `cbor:"readings"`
}

type refSenMLRecord struct {
	BN string   `cbor:"-2,keyasint,omitempty"`
	BT float64  `cbor:"-3,keyasint,omitempty"`
	BU string   `cbor:"-4,keyasint,omitempty"`
	N  string   `cbor:"0,keyasint,omitempty"`
	V  *float64 `cbor:"2,keyasint,omitempty"`
	T  float64  `cbor:"6,keyasint,omitempty"`
}

func benchCBORStruct[T any](b *testing.B, data []byte, readings int) {
	mode := newCBORMode(Limits{}.withDefaults())
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		var v T
		if err := mode.Unmarshal(data, &v); err != nil {
			b.Fatal(err)
		}
	}
	perReading(b, readings)
}

func BenchmarkCBORBatch100ReferenceStruct(b *testing.B) {
	benchCBORStruct[refCBORBatch](b, benchCBORBatch(b, formatBatch), formatBatch)
}

func BenchmarkSenMLCBOR100ReferenceStruct(b *testing.B) {
	benchCBORStruct[[]refSenMLRecord](b, benchSenMLCBOR(b, formatBatch), formatBatch)
}
