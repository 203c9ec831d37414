package bridge

import (
	"math"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/influxdata/line-protocol/v2/lineprotocol"
)

// TestAppendFloatMatchesStrconv holds appendFloat to strconv's shortest 'g'
// text byte for byte, checks that the text parses back to the same bits,
// and that InfluxDB's parser reads it as a float field (no 'i' suffix).
func TestAppendFloatMatchesStrconv(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 7))
	sign := func(x float64) float64 {
		if rng.IntN(2) == 0 {
			return -x
		}
		return x
	}
	tests := []struct {
		name string
		n    int                 // how many values gen yields
		gen  func(i int) float64 // the i-th value
		fast bool                // every value must take the fast path
	}{
		{"zero", 1, func(int) float64 { return 0 }, true},
		{"negative zero", 1, func(int) float64 { return math.Copysign(0, -1) }, true},
		{"bench values", 5, func(i int) float64 { return []float64{21.4, 40.1, 3.3, -67, 20.3}[i] }, true},
		{"edges in fast range", 8, func(i int) float64 {
			return []float64{0.0001, -0.0001, 999999.999999, -999999.999999, 123456.5, 1, -1, 0.5}[i]
		}, true},
		{"edges outside", 10, func(i int) float64 {
			return []float64{
				1e6, -1e6, 1234567, 0.00001, 0.000099, 0.0000001, 1e21, 1e-300,
				math.MaxFloat64, math.SmallestNonzeroFloat64,
			}[i]
		}, false},
		{"just off short decimals", 1000, func(int) float64 {
			x := float64(rng.Int64N(1e9)) / 1e3
			return sign(math.Nextafter(x, math.Inf(rng.IntN(2)*2-1)))
		}, false},
		{"sums with rounding error", 3, func(i int) float64 {
			a := []float64{0.1, 0.7, 1.1}[i]
			return a + 0.2
		}, false},
		{"integral up to 1e6", 2000, func(int) float64 { return sign(float64(rng.Int64N(1e6))) }, true},
		{"integral beyond", 2000, func(int) float64 { return sign(float64(rng.Int64N(1 << 62))) }, false},
		{"short decimals", 20000, func(int) float64 {
			k := rng.IntN(7)
			return sign(float64(rng.Int64N(1e6*int64(math.Pow10(k)))) / math.Pow10(k))
		}, false}, // below 1e-4 some take strconv's e notation
		{"short decimals 1e-4..1e6", 20000, func(int) float64 {
			k := rng.IntN(7)
			for {
				if x := float64(rng.Int64N(1e6*int64(math.Pow10(k)))) / math.Pow10(k); x >= 1e-4 {
					return sign(x)
				}
			}
		}, true},
		{"seven and more decimals", 5000, func(int) float64 {
			k := 7 + rng.IntN(10)
			return sign(float64(rng.Int64N(1<<53)) / math.Pow10(k))
		}, false},
		{"float32 sensor values", 5000, func(int) float64 {
			return float64(float32(sign(rng.Float64() * 100)))
		}, false},
		{"uniform [0,1e6)", 5000, func(int) float64 { return sign(rng.Float64() * 1e6) }, false},
		{"random bits", 20000, func(int) float64 {
			for {
				if x := math.Float64frombits(rng.Uint64()); !math.IsNaN(x) && !math.IsInf(x, 0) {
					return x
				}
			}
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fastN := 0
			for i := range tt.n {
				x := tt.gen(i)
				got := string(appendFloat([]byte("v="), x))[2:]
				if want := strconv.FormatFloat(x, 'g', -1, 64); got != want {
					t.Fatalf("appendFloat(%b) = %q, strconv %q", x, got, want)
				}
				if back, err := strconv.ParseFloat(got, 64); err != nil || math.Float64bits(back) != math.Float64bits(x) {
					t.Fatalf("%q parses back as %v (%v), want the bits of %b", got, back, err, x)
				}
				if _, ok := appendShortDecimal(nil, x); ok {
					fastN++
				} else if tt.fast {
					t.Fatalf("%q (%b) took the slow path", got, x)
				}
				dec := lineprotocol.NewDecoderWithBytes([]byte("m v=" + got + " 1\n"))
				if !dec.Next() {
					t.Fatalf("%q: no point", got)
				}
				if _, v, err := dec.NextField(); err != nil || v.Kind() != lineprotocol.Float || math.Float64bits(v.FloatV()) != math.Float64bits(x) {
					t.Fatalf("InfluxDB's parser reads %q as %v (%v)", got, v, err)
				}
			}
			t.Logf("%d of %d on the fast path", fastN, tt.n)
		})
	}
}

func TestAppendEscaped(t *testing.T) {
	tests := []struct {
		in, tag, str string
	}{
		{"", "", ""},
		{"plant-3", "plant-3", "plant-3"},
		{"a b,c=d", `a\ b\,c\=d`, "a b,c=d"},
		{",,", `\,\,`, ",,"},
		{`say "hi" \ bye`, `say\ "hi"\ \\ bye`, `say \"hi\" \\ bye`},
		{`"`, `"`, `\"`},
		{"ünï cödé=1", `ünï\ cödé\=1`, "ünï cödé=1"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := string(appendEscaped([]byte("x"), tt.in, tagValueEscapes)); got != "x"+tt.tag {
				t.Errorf("tag value: %q, want %q", got, "x"+tt.tag)
			}
			if got := string(appendEscaped([]byte("x"), tt.in, stringFieldEscapes)); got != "x"+tt.str {
				t.Errorf("string field: %q, want %q", got, "x"+tt.str)
			}
		})
	}
}

func BenchmarkAppendFloat(b *testing.B) {
	for _, x := range []float64{21.4, -67, 999999.999999, 0.30000000000000004, 21.399999618530273, 1.234567e+06} {
		b.Run(strconv.FormatFloat(x, 'g', -1, 64), func(b *testing.B) {
			buf := make([]byte, 0, 64)
			for b.Loop() {
				buf = appendFloat(buf[:0], x)
			}
		})
	}
}

func TestAppendIntMatchesStrconv(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	values := []int64{0, 1, -1, 9, 10, 99, 100, 101, 999, 1000, math.MaxInt64, math.MinInt64, math.MaxInt64 - 1, math.MinInt64 + 1}
	for p := int64(1); p <= 1e18; p *= 10 {
		values = append(values, p-1, p, p+1, -p)
	}
	for range 100000 {
		v := rng.Int64() >> rng.IntN(63)
		if rng.IntN(2) == 0 {
			v = -v
		}
		values = append(values, v)
	}
	for _, v := range values {
		if got, want := string(appendInt([]byte("t="), v)), "t="+strconv.FormatInt(v, 10); got != want {
			t.Fatalf("appendInt(%d) = %q, want %q", v, got, want)
		}
	}
	for _, u := range []uint64{math.MaxUint64, 1e19, 1e19 - 1} {
		if got, want := string(appendUint(nil, u)), strconv.FormatUint(u, 10); got != want {
			t.Fatalf("appendUint(%d) = %q, want %q", u, got, want)
		}
	}
}
