package payload

import (
	"fmt"
	"strings"
	"testing"
)

const benchNative = `{"seq":17,"ts":1763820000123,"measurement":"environment","metrics":{"temperature":21.4,"humidity":40.1,"door_open":false,"status":"ok"},"tags":{"site":"plant-3"}}`

func benchBatch(n int) string {
	var b strings.Builder
	b.WriteString(`{"seq":18,"readings":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"ts":%d,"measurement":"environment","metrics":{"temperature":%d.4,"humidity":40.1,"door_open":false,"status":"ok"},"tags":{"site":"plant-3"}}`,
			1763820000123+int64(i), 20+i%5)
	}
	b.WriteString(`]}`)
	return b.String()
}

const benchSenML = `[{"bn":"gw-child-1/","bt":1763820000,"bu":"Cel","n":"temperature","v":21.4},` +
	`{"n":"humidity","u":"%RH","v":40.1},{"n":"door_open","vb":false},{"n":"status","vs":"ok"},` +
	`{"n":"temperature","t":10,"v":21.5},{"n":"humidity","u":"%RH","t":10,"v":40.3}]`

func benchDecode(b *testing.B, payload string) {
	d := NewDecoder(Limits{})
	data := []byte(payload)
	if m, err := d.Decode(data, now); err != nil || len(m.Invalid) != 0 {
		b.Fatalf("%v %+v", err, m.Invalid)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.Decode(data, now); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeNative(b *testing.B) { benchDecode(b, benchNative) }

// BenchmarkDecodeNativeFastPath is DecodeNative without the template: a
// device's first payload, or one whose layout changed.
func BenchmarkDecodeNativeFastPath(b *testing.B) {
	d := NewDecoder(Limits{})
	data := []byte(benchNative)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		d.forget()
		if _, err := d.Decode(data, now); err != nil {
			b.Fatal(err)
		}
	}
}
func BenchmarkDecodeBatch100(b *testing.B) { benchDecode(b, benchBatch(100)) }
func BenchmarkDecodeSenML(b *testing.B)    { benchDecode(b, benchSenML) }
