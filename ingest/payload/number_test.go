package payload

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
)

func TestParseDecimalGrammar(t *testing.T) {
	good := []string{"0", "-0", "1", "-1", "10", "1.5", "0.001", "1e5", "1E+5", "1e-5", "-1.25e-3", "123456789012345678901234567890"}
	bad := []string{"", "-", "01", "-01", "+1", ".5", "1.", "1e", "1e+", "1.2.3", "--1", "inf", "NaN", "1x", "0x10", " 1"}
	for _, s := range good {
		if _, ok := parseDecimal([]byte(s)); !ok {
			t.Errorf("parseDecimal(%q) rejected", s)
		}
	}
	for _, s := range bad {
		if _, ok := parseDecimal([]byte(s)); ok {
			t.Errorf("parseDecimal(%q) accepted", s)
		}
	}
}

func TestDecimalScaled(t *testing.T) {
	tests := []struct {
		in        string
		shift     int
		want      int64
		exact, ok bool
	}{
		{"0", 9, 0, true, true},
		{"1", 9, 1e9, true, true},
		{"1.5", 0, 1, false, true},
		{"-1.5", 0, -1, false, true},
		{"1.50", 1, 15, true, true},
		{"1234e-2", 2, 1234, true, true},
		{"0.000000001", 9, 1, true, true},
		{"0.0000000015", 9, 1, false, true},
		{"9223372036854775807", 0, math.MaxInt64, true, true},
		{"9223372036854775808", 0, 0, false, false},
		{"-9223372036854775808", 0, math.MinInt64, true, true},
		{"-9223372036854775809", 0, 0, false, false},
		{"9.223372036854775807e18", 0, math.MaxInt64, true, true},
		{"1e19", 0, 0, false, false},
		{"0e999999999999", 0, 0, true, true},
		{"1e999999999999", 0, 0, false, false},
		{"1e-999999999999", 9, 0, false, true},
	}
	for _, tt := range tests {
		x, ok := parseDecimal([]byte(tt.in))
		if !ok {
			t.Fatalf("%s: parse failed", tt.in)
		}
		got, exact, ok := x.scaled(tt.shift)
		if got != tt.want || exact != tt.exact || ok != tt.ok {
			t.Errorf("%s scaled(%d) = %d, %v, %v; want %d, %v, %v", tt.in, tt.shift, got, exact, ok, tt.want, tt.exact, tt.ok)
		}
	}
}

func TestDecimalIntDigits(t *testing.T) {
	tests := map[string]int{
		"0": 0, "0.5": 0, "1": 1, "9.99": 1, "10": 2, "99999999999": 11, "100000000000": 12,
		"1e11": 12, "99999999999.999": 11, "0.001e3": 1, "12345e-2": 3, "0.000e5": 0, "0.00012e5": 2, "1e-3": 0,
	}
	for in, want := range tests {
		x, ok := parseDecimal([]byte(in))
		if !ok {
			t.Fatalf("%s: parse failed", in)
		}
		if got := x.intDigits(); got != want {
			t.Errorf("intDigits(%s) = %d, want %d", in, got, want)
		}
	}
}

func TestParseUintLiteral(t *testing.T) {
	for in, want := range map[string]uint64{"0": 0, "7": 7, "18446744073709551615": math.MaxUint64} {
		if got, ok := parseUintLiteral([]byte(in)); !ok || got != want {
			t.Errorf("parseUintLiteral(%s) = %d, %v", in, got, ok)
		}
	}
	for _, in := range []string{"", "-1", "01", "1.0", "1e3", "18446744073709551616", "+1"} {
		if _, ok := parseUintLiteral([]byte(in)); ok {
			t.Errorf("parseUintLiteral(%s) accepted", in)
		}
	}
}

func TestScanSeq(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
		ok   bool
	}{
		{`{"seq":5,`, 5, true},
		{` { "seq" : 5 }`, 5, true},
		{`{"a":"x\"y","b":[{"c":"]"}],"c":null,"seq":9,"d":`, 9, true},
		{`{"a":tru,"seq":9,`, 9, true},
		{`{"seq":5`, 0, false},
		{`{"seq":"5",`, 0, false},
		{`{"seq":-5,`, 0, false},
		{`{"seq":5.0,`, 0, false},
		{`{"a":"unterminated,"seq":5,`, 0, false},
		{`{"a" "b","seq":5,`, 0, false},
		{`{"a":[1,2,"seq":5,`, 0, false},
		{`["seq",5]`, 0, false},
		{`{"seq":1,"seq":2,x`, 1, true},
		{``, 0, false},
		{`{`, 0, false},
		{`{"a":1`, 0, false},
	}
	for _, tt := range tests {
		got, ok := scanSeq([]byte(tt.in))
		if got != tt.want || ok != tt.ok {
			t.Errorf("scanSeq(%s) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// TestFloatLiteralMatchesParseFloat: the exact fast path must give
// strconv.ParseFloat's bits for every literal, sign of zero included.
func TestFloatLiteralMatchesParseFloat(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	digits := func(n int, lead bool) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte('0' + rng.IntN(10))
		}
		if lead && n > 1 && b[0] == '0' {
			b[0] = '1'
		}
		return string(b)
	}
	lits := []string{"0", "-0", "0.0", "-0.0", "1", "-67", "21.4", "3.3", "40.1", "1e22", "1e23", "123456789012345", "1234567890123456",
		"0.000000000000000000001", "9007199254740993", "1.7976931348623157e308", "5e-324", "4.9e-324", "2.2250738585072014e-308"}
	for range 200000 {
		lit := ""
		if rng.IntN(4) == 0 {
			lit = "-"
		}
		lit += digits(1+rng.IntN(17), true)
		if rng.IntN(2) == 0 {
			lit += "." + digits(1+rng.IntN(10), false)
		}
		if rng.IntN(3) == 0 {
			lit += "e" + strconv.Itoa(rng.IntN(61)-30)
		}
		lits = append(lits, lit)
	}
	for _, lit := range lits {
		want, err := strconv.ParseFloat(lit, 64)
		if err != nil {
			continue // out of range: floatLiteral rejects those (tested elsewhere)
		}
		got, why := floatLiteral([]byte(lit))
		if why != "" || math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("floatLiteral(%s) = %v (%q), ParseFloat = %v", lit, got, why, want)
		}
		if got, ok := fastFloat([]byte(lit)); !ok || math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("fastFloat(%s) = %v, %v; ParseFloat = %v", lit, got, ok, want)
		}
	}
}

// TestFastEpochMatchesEpochLiteral: the fast path's epoch conversion agrees
// with the general one on every literal, failures included.
func TestFastEpochMatchesEpochLiteral(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	lits := []string{"0", "-0", "0.0", "1", "-1", "1763820000", "1763820000123", "1763820000123456", "1763820000123456789",
		"9223372036854775807", "9223372036854775808", "99999999999", "9999999999999999999", "99999999999999999999",
		"1763820000.5", "1.76382e9", "01", "1.", ""}
	for range 100000 {
		n := 1 + rng.IntN(20)
		b := make([]byte, n)
		for i := range b {
			b[i] = byte('0' + rng.IntN(10))
		}
		if b[0] == '0' && n > 1 {
			b[0] = '1'
		}
		lits = append(lits, string(b))
	}
	for _, lit := range lits {
		want, p := epochLiteral([]byte(lit))
		got, ok := fastEpoch([]byte(lit))
		if ok != p.ok() || (ok && got != want) {
			t.Fatalf("fastEpoch(%q) = %d, %v; epochLiteral = %d, %+v", lit, got, ok, want, p)
		}
	}
}

// TestEightDigits checks the SWAR digit test and value against a byte loop,
// on bytes next to the digits (the edges of the nibble tricks) as well.
func TestEightDigits(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	alphabet := []byte("0123456789/:.-+eE \x00\xb0\xb9\xf0\xff\x29\x3a\x40\x20")
	for n := range 300000 {
		var b [8]byte
		for i := range b {
			if n%2 == 0 || rng.IntN(8) != 0 { // half all digits
				b[i] = byte('0' + rng.IntN(10))
			} else {
				b[i] = alphabet[rng.IntN(len(alphabet))]
			}
		}
		want, all := uint64(0), true
		for _, c := range b {
			all = all && isDigit(c)
			want = want*10 + uint64(c-'0')
		}
		v := binary.LittleEndian.Uint64(b[:])
		if got := eightDigits(v); got != all {
			t.Fatalf("eightDigits(%q) = %v", b, got)
		}
		if all && eightDigitsValue(v) != want {
			t.Fatalf("eightDigitsValue(%q) = %d, want %d", b, eightDigitsValue(v), want)
		}
	}
}

// TestPlainNumberScan: reading and parsing in one pass gives what reading
// the literal (number) and then parsing it (parsePlainNumber) gives.
func TestPlainNumberScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	lits := []string{"", "-", "0", "-0", "01", "1.", "1.5", "-67", "1e5", "1E-2", "1.5e3", "12345678", "123456789",
		"1763820000123456789", "17638200001234567890", "99999999999999999999999", "0.000001", "1-2", "1+2", "--1", ".5", "1..2"}
	for range 20000 {
		n := 1 + rng.IntN(24)
		b := make([]byte, n)
		for i := range b {
			if rng.IntN(10) < 8 {
				b[i] = byte('0' + rng.IntN(10))
			} else {
				b[i] = ".-+eE"[rng.IntN(5)]
			}
		}
		lits = append(lits, string(b))
	}
	for _, lit := range lits {
		for _, after := range []string{"", ",", "}", " ,", "x", "]"} {
			in := []byte(" " + lit + after)
			p := fastScanner{s: in}
			raw, x, plain := p.plainNumber()
			q := fastScanner{s: in}
			wantRaw := q.number()
			wantX, wantPlain := parsePlainNumber(wantRaw)
			if string(raw) != string(wantRaw) || p.i != q.i || plain != wantPlain || (plain && x != wantX) {
				t.Fatalf("plainNumber(%q) = %q %+v %v at %d; number+parsePlainNumber = %q %+v %v at %d",
					in, raw, x, plain, p.i, wantRaw, wantX, wantPlain, q.i)
			}
		}
	}
}
