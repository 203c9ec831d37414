package bridge

import (
	"go/ast"
	"go/parser"
	"go/token"
	"math"
	"slices"
	"strconv"
	"testing"

	"github.com/telemetryd/telemetryd/telemetry"
)

func TestUnitConversion(t *testing.T) {
	type out struct {
		value any // float64, int64 or string
		unit  string
	}
	tests := []struct {
		name  string
		cfg   UnitConfig
		meas  string
		field telemetry.Field
		want  out
		extra string // value of <field>_unit_original; "" when none is added
	}{
		{"degF to Cel", UnitConfig{}, "m", fld("t", telemetry.Float(212), "degF"), out{100.0, "Cel"}, ""},
		{"°F to Cel", UnitConfig{}, "m", fld("t", telemetry.Float(32), "°F"), out{0.0, "Cel"}, ""},
		{"K to Cel", UnitConfig{}, "m", fld("t", telemetry.Float(273.15), "K"), out{0.0, "Cel"}, ""},
		{"°C is spelled Cel", UnitConfig{}, "m", fld("t", telemetry.Float(21.5), "°C"), out{21.5, "Cel"}, ""},
		{"canonical integer stays integer", UnitConfig{}, "m", fld("p", telemetry.Int(101325), "Pa"), out{int64(101325), "Pa"}, ""},
		{"kPa to Pa", UnitConfig{}, "m", fld("p", telemetry.Float(101.325), "kPa"), out{101325.0, "Pa"}, ""},
		{"hPa to Pa", UnitConfig{}, "m", fld("p", telemetry.Float(1013.25), "hPa"), out{101325.0, "Pa"}, ""},
		{"bar to Pa", UnitConfig{}, "m", fld("p", telemetry.Float(1.5), "bar"), out{150000.0, "Pa"}, ""},
		{"psi to Pa", UnitConfig{}, "m", fld("p", telemetry.Float(1), "psi"), out{6894.757293168361, "Pa"}, ""},
		{"integer mV becomes float V", UnitConfig{}, "m", fld("v", telemetry.Int(3300), "mV"), out{3.3, "V"}, ""},
		{"integer kPa becomes float Pa", UnitConfig{}, "m", fld("p", telemetry.Int(2), "kPa"), out{2000.0, "Pa"}, ""},
		{"kV to V", UnitConfig{}, "m", fld("v", telemetry.Float(0.23), "kV"), out{230.0, "V"}, ""},
		{"mA to A", UnitConfig{}, "m", fld("i", telemetry.Float(250), "mA"), out{0.25, "A"}, ""},
		{"kW to W", UnitConfig{}, "m", fld("w", telemetry.Float(1.5), "kW"), out{1500.0, "W"}, ""},
		{"kWh to Wh", UnitConfig{}, "m", fld("e", telemetry.Float(1.234), "kWh"), out{1234.0, "Wh"}, ""},
		{"J to Wh", UnitConfig{}, "m", fld("e", telemetry.Float(3600), "J"), out{1.0, "Wh"}, ""},
		{"Wh stays Wh and integer", UnitConfig{}, "m", fld("e", telemetry.Int(1234), "Wh"), out{int64(1234), "Wh"}, ""},
		{"km/h to m/s", UnitConfig{}, "m", fld("s", telemetry.Float(36), "km/h"), out{10.0, "m/s"}, ""},
		{"ms to s", UnitConfig{}, "m", fld("d", telemetry.Int(1500), "ms"), out{1.5, "s"}, ""},
		{"g to kg", UnitConfig{}, "m", fld("w", telemetry.Float(500), "g"), out{0.5, "kg"}, ""},
		{"unknown unit untouched", UnitConfig{}, "m", fld("x", telemetry.Int(7), "furlong"), out{int64(7), "furlong"}, ""},
		{"no unit untouched", UnitConfig{}, "m", fld("x", telemetry.Float(7), ""), out{7.0, ""}, ""},
		{"SenML %RH untouched", UnitConfig{}, "m", fld("h", telemetry.Float(40), "%RH"), out{40.0, "%RH"}, ""},
		{"string with a unit untouched", UnitConfig{}, "m", fld("x", telemetry.String("hot"), "degF"), out{"hot", "degF"}, ""},
		{"keep original unit", UnitConfig{KeepOriginal: true}, "m", fld("t", telemetry.Float(212), "degF"), out{100.0, "Cel"}, "degF"},
		{"keep original: nothing added without a conversion", UnitConfig{KeepOriginal: true}, "m", fld("t", telemetry.Float(21), "Cel"), out{21.0, "Cel"}, ""},
		{"disabled", UnitConfig{Disabled: true}, "m", fld("t", telemetry.Float(212), "degF"), out{212.0, "degF"}, ""},
		{"rule off for a field", UnitConfig{Rules: []UnitRule{{Field: "t", Off: true}}}, "m", fld("t", telemetry.Float(212), "degF"), out{212.0, "degF"}, ""},
		{"rule off elsewhere", UnitConfig{Rules: []UnitRule{{Measurement: "other", Field: "t", Off: true}}}, "m", fld("t", telemetry.Float(212), "degF"), out{100.0, "Cel"}, ""},
		{"rule enables when disabled", UnitConfig{Disabled: true, Rules: []UnitRule{{Measurement: "m"}}}, "m", fld("t", telemetry.Float(212), "degF"), out{100.0, "Cel"}, ""},
		{"target unit", UnitConfig{Rules: []UnitRule{{Measurement: "m", Field: "t", Target: "degF"}}}, "m", fld("t", telemetry.Float(100), "Cel"), out{212.0, "degF"}, ""},
		{"target from another unit", UnitConfig{Rules: []UnitRule{{Field: "t", Target: "K"}}}, "m", fld("t", telemetry.Float(32), "degF"), out{273.15, "K"}, ""},
		{"target in another dimension ignored", UnitConfig{Rules: []UnitRule{{Field: "t", Target: "Pa"}}}, "m", fld("t", telemetry.Float(212), "degF"), out{212.0, "degF"}, ""},
		{"exact rule beats field rule", UnitConfig{Rules: []UnitRule{{Field: "t", Off: true}, {Measurement: "m", Field: "t"}}}, "m", fld("t", telemetry.Float(212), "degF"), out{100.0, "Cel"}, ""},
		{"wildcards", UnitConfig{Rules: []UnitRule{{Measurement: "*", Field: "*", Off: true}}}, "m", fld("t", telemetry.Float(212), "degF"), out{212.0, "degF"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			r := telemetry.Reading{Measurement: tt.meas, Fields: []telemetry.Field{tt.field}}
			n, rej := newUnitRules(tt.cfg).convert(&r, 128)
			if rej != nil {
				t.Fatalf("rejected: %v", rej)
			}
			got := r.Fields[0]
			if got.Unit != tt.want.unit {
				t.Errorf("unit %q, want %q", got.Unit, tt.want.unit)
			}
			switch w := tt.want.value.(type) {
			case float64:
				if got.Value.Kind() != telemetry.KindFloat || math.Abs(got.Value.AsFloat()-w) > 1e-9*math.Max(1, math.Abs(w)) {
					t.Errorf("value %v (%s), want float %v", got.Value, got.Value.Kind(), w)
				}
			case int64:
				if got.Value.Kind() != telemetry.KindInt || got.Value.AsInt() != w {
					t.Errorf("value %v (%s), want integer %v", got.Value, got.Value.Kind(), w)
				}
			case string:
				if got.Value.AsString() != w {
					t.Errorf("value %v, want %q", got.Value, w)
				}
			}
			if wantN := btoi(got.Unit != tt.field.Unit && tt.field.Unit != "°C"); n != wantN {
				t.Errorf("converted %d, want %d", n, wantN)
			}
			switch {
			case tt.extra == "" && len(r.Fields) != 1:
				t.Errorf("fields %v: want no original-unit field", r.Fields)
			case tt.extra != "" && (len(r.Fields) != 2 || r.Fields[1].Name != got.Name+OriginalUnitSuffix || r.Fields[1].Value.AsString() != tt.extra):
				t.Errorf("fields %v: want %s%s=%q", r.Fields, got.Name, OriginalUnitSuffix, tt.extra)
			}
		})
	}
}

func fld(name string, v telemetry.Value, unit string) telemetry.Field {
	return telemetry.Field{Name: name, Value: v, Unit: unit}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestUnitConversionEdgeCases(t *testing.T) {
	u := newUnitRules(UnitConfig{KeepOriginal: true})

	// Overflow is a rejection, not an infinity sent to InfluxDB.
	r := telemetry.Reading{Measurement: "m", Fields: []telemetry.Field{fld("p", telemetry.Float(math.MaxFloat64), "MPa")}}
	if _, rej := u.convert(&r, 128); rej == nil || rej.code != CodeInvalidValue {
		t.Fatalf("overflow: %v", rej)
	}

	// A device field of the same name wins over the original-unit field.
	r = telemetry.Reading{Measurement: "m", Fields: []telemetry.Field{
		fld("t", telemetry.Float(212), "degF"), fld("t_unit_original", telemetry.String("mine"), "")}}
	if _, rej := u.convert(&r, 128); rej != nil || len(r.Fields) != 2 || r.Fields[1].Value.AsString() != "mine" {
		t.Fatalf("collision: %v %v", rej, r.Fields)
	}

	// A name that would exceed the limit is not added.
	r = telemetry.Reading{Measurement: "m", Fields: []telemetry.Field{fld("temperature", telemetry.Float(212), "degF")}}
	if _, rej := u.convert(&r, 20); rej != nil || len(r.Fields) != 1 {
		t.Fatalf("long name: %v %v", rej, r.Fields)
	}

	// Appending never writes into spare capacity of the caller's array.
	backing := make([]telemetry.Field, 2, 4)
	backing[0] = fld("t", telemetry.Float(212), "degF")
	backing[1] = fld("next", telemetry.Int(1), "")
	r = telemetry.Reading{Measurement: "m", Fields: backing[:1]}
	spare := backing[:3]
	spare[2] = fld("sentinel", telemetry.Int(9), "")
	if _, rej := u.convert(&r, 128); rej != nil || len(r.Fields) != 2 {
		t.Fatalf("append: %v %v", rej, r.Fields)
	}
	if backing[1].Name != "next" || spare[2].Name != "sentinel" {
		t.Fatalf("conversion wrote into the caller's spare capacity: %v", spare)
	}

	if err := (UnitConfig{Rules: []UnitRule{{Field: "x", Target: "furlong"}}}).Validate(); err == nil {
		t.Fatal("unknown target accepted")
	}
	if c, ok := KnownUnit("degF"); !ok || c != "Cel" {
		t.Fatalf("KnownUnit(degF) = %q %v", c, ok)
	}
}

// TestUnitTableRoundTrips checks every unit of the table converts to its
// canonical unit and back, and that UnitNames lists exactly the units
// lookupUnit's switch knows (parsed from the source).
func TestUnitTableRoundTrips(t *testing.T) {
	names := UnitNames()
	for _, u := range names {
		d, ok := lookupUnit(u)
		if !ok {
			t.Errorf("%s unknown", u)
			continue
		}
		if canon, ok := lookupUnit(d.dim); !ok || !canon.canonicalAlias || canon.dim != d.dim {
			t.Errorf("%s: canonical unit %q is not in the table as itself", u, d.dim)
		}
		for _, v := range []float64{-40, 0, 1, 123.456} {
			if back := d.fromCanonical(d.toCanonical(v)); math.Abs(back-v) > 1e-9*math.Max(1, math.Abs(v)) {
				t.Errorf("%s: %v round-trips to %v", u, v, back)
			}
		}
	}

	file, err := parser.ParseFile(token.NewFileSet(), "units.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var cases []string
	ast.Inspect(file, func(n ast.Node) bool {
		if fn, ok := n.(*ast.FuncDecl); ok && fn.Name.Name != "lookupUnit" {
			return false
		}
		if cc, ok := n.(*ast.CaseClause); ok {
			for _, e := range cc.List {
				s, err := strconv.Unquote(e.(*ast.BasicLit).Value)
				if err != nil {
					t.Fatal(err)
				}
				cases = append(cases, s)
			}
		}
		return true
	})
	if !slices.Equal(cases, names) {
		t.Fatalf("UnitNames() = %v\nlookupUnit knows %v", names, cases)
	}
}

func TestUnitFormula(t *testing.T) {
	for _, tt := range []struct{ unit, canonical, formula string }{
		{"Cel", "Cel", ""}, {"kPa", "Pa", "x × 1000"}, {"mV", "V", "x ÷ 1000"}, {"km/h", "m/s", "x × 1000/3600"},
		{"degF", "Cel", "(x − 32) × 5/9"}, {"K", "Cel", "x − 273.15"},
	} {
		c, f, ok := UnitFormula(tt.unit)
		if !ok || c != tt.canonical || f != tt.formula {
			t.Errorf("UnitFormula(%s) = %q %q %v, want %q %q", tt.unit, c, f, ok, tt.canonical, tt.formula)
		}
	}
}

func BenchmarkConvertNoUnits(b *testing.B) {
	u := newUnitRules(UnitConfig{})
	r := telemetry.Reading{Measurement: "m", Fields: []telemetry.Field{fld("a", telemetry.Float(1), ""), fld("b", telemetry.Float(2), "%RH")}}
	b.ReportAllocs()
	for b.Loop() {
		_, _ = u.convert(&r, 128)
	}
}

func BenchmarkConvertDegF(b *testing.B) {
	u := newUnitRules(UnitConfig{})
	b.ReportAllocs()
	for b.Loop() {
		r := telemetry.Reading{Measurement: "m", Fields: []telemetry.Field{fld("t", telemetry.Float(70), "degF")}}
		_, _ = u.convert(&r, 128)
	}
}
