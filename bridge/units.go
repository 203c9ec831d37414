package bridge

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/telemetryd/telemetryd/telemetry"
)

// Unit normalization. A device declares a field's unit ({"value":70,"unit":
// "degF"} or SenML "u"/"bu"); the bridge converts values in a known unit to
// the canonical unit of its dimension, so that one InfluxDB field holds one
// unit whatever the devices send:
//
//	temperature  Cel    (degF, °F, K, degC, °C)
//	pressure     Pa     (hPa, kPa, MPa, mbar, bar, psi, mmHg, inHg, atm)
//	voltage      V      (uV, mV, kV)
//	current      A      (uA, mA, kA)
//	power        W      (mW, kW, MW)
//	energy       Wh     (kWh, MWh, J, kJ, MJ)
//	speed        m/s    (km/h, mph, kn)
//	length       m      (mm, cm, km, in, ft, mi)
//	mass         kg     (mg, g, t, lb, oz)
//	time         s      (us, ms, min, h, d)
//	frequency    Hz     (kHz, MHz, GHz, 1/min)
//
// Canonical names are SenML's (RFC 8428 §12.1, RFC 8798), except energy:
// SenML's base is J, but meters, tariffs and dashboards speak Wh and a
// reading in J of a household meter is an unreadable 10-digit number.
//
// Decisions (see docs/configuration.md):
//   - A converted value is always a float, even from an integer: a unit
//     change is a real-valued operation (3300 mV is 3.3 V). The field-type
//     guard then stores it as the field's established type.
//   - A value already in the canonical unit, or in a unit the table does not
//     know, is left alone, unit and kind included.
//   - The converted field's Unit becomes the canonical unit (dashboards see
//     it on /v1/live). When UnitConfig.KeepOriginal is set, the device's unit
//     is stored in a string field "<field>_unit_original" next to it: a
//     field, not a tag, because a tag would create a new series per unit
//     spelling and a field costs no index (cardinality) at all.

// OriginalUnitSuffix names the string field that keeps a converted field's
// declared unit ("temperature" → "temperature_unit_original").
const OriginalUnitSuffix = "_unit_original"

// UnitConfig configures unit normalization. The zero value converts every
// known unit to its canonical unit and does not keep the original unit.
type UnitConfig struct {
	// Disabled turns conversion off for every field no rule matches.
	Disabled bool
	// KeepOriginal adds "<field>_unit_original" to converted readings.
	KeepOriginal bool
	// Rules override the default for matching measurement/field pairs. The
	// most specific rule wins: measurement and field, then field only, then
	// measurement only.
	Rules []UnitRule
}

// UnitRule is a per measurement/field override. Empty or "*" matches all.
// A matching rule converts its fields (even when UnitConfig.Disabled is
// set) unless Off is set.
type UnitRule struct {
	Measurement, Field string
	// Off leaves matching fields as the device sent them.
	Off bool
	// Target replaces the canonical unit as the unit to convert to. It must
	// be a known unit; values in another dimension are left alone.
	Target string
}

// unitDef converts a unit to its dimension's canonical unit:
// canonical = (v + pre) * num / den + post. The rational form keeps common
// conversions exact (212 degF → 100 Cel, 3300 mV → 3.3 V).
type unitDef struct {
	dim            string // canonical unit of the dimension
	pre, num, den  float64
	post           float64
	canonicalAlias bool // another spelling of the canonical unit
}

func scale(dim string, num, den float64) unitDef { return unitDef{dim: dim, num: num, den: den} }
func alias(dim string) unitDef                   { return unitDef{dim: dim, num: 1, den: 1, canonicalAlias: true} }

// lookupUnit returns the definition of a declared unit. It is a switch, not
// a map, so that the table is immutable and a lookup never allocates.
func lookupUnit(u string) (unitDef, bool) {
	switch u {
	// temperature
	case "Cel", "°C", "degC", "celsius":
		return alias("Cel"), true
	case "K":
		return unitDef{dim: "Cel", num: 1, den: 1, post: -273.15}, true
	case "degF", "°F", "fahrenheit":
		return unitDef{dim: "Cel", pre: -32, num: 5, den: 9}, true
	// pressure
	case "Pa":
		return alias("Pa"), true
	case "hPa", "mbar":
		return scale("Pa", 100, 1), true
	case "kPa":
		return scale("Pa", 1000, 1), true
	case "MPa":
		return scale("Pa", 1e6, 1), true
	case "bar":
		return scale("Pa", 1e5, 1), true
	case "psi":
		return scale("Pa", 6894.757293168361, 1), true
	case "mmHg":
		return scale("Pa", 133.322387415, 1), true
	case "inHg":
		return scale("Pa", 3386.389, 1), true
	case "atm":
		return scale("Pa", 101325, 1), true
	// voltage
	case "V":
		return alias("V"), true
	case "uV", "µV":
		return scale("V", 1, 1e6), true
	case "mV":
		return scale("V", 1, 1000), true
	case "kV":
		return scale("V", 1000, 1), true
	// current
	case "A":
		return alias("A"), true
	case "uA", "µA":
		return scale("A", 1, 1e6), true
	case "mA":
		return scale("A", 1, 1000), true
	case "kA":
		return scale("A", 1000, 1), true
	// power
	case "W":
		return alias("W"), true
	case "mW":
		return scale("W", 1, 1000), true
	case "kW":
		return scale("W", 1000, 1), true
	case "MW":
		return scale("W", 1e6, 1), true
	// energy
	case "Wh":
		return alias("Wh"), true
	case "kWh":
		return scale("Wh", 1000, 1), true
	case "MWh":
		return scale("Wh", 1e6, 1), true
	case "J":
		return scale("Wh", 1, 3600), true
	case "kJ":
		return scale("Wh", 1000, 3600), true
	case "MJ":
		return scale("Wh", 1e6, 3600), true
	// speed
	case "m/s":
		return alias("m/s"), true
	case "km/h":
		return scale("m/s", 1000, 3600), true
	case "mph":
		return scale("m/s", 1609.344, 3600), true
	case "kn":
		return scale("m/s", 1852, 3600), true
	// length
	case "m":
		return alias("m"), true
	case "mm":
		return scale("m", 1, 1000), true
	case "cm":
		return scale("m", 1, 100), true
	case "km":
		return scale("m", 1000, 1), true
	case "in":
		return scale("m", 0.0254, 1), true
	case "ft":
		return scale("m", 0.3048, 1), true
	case "mi":
		return scale("m", 1609.344, 1), true
	// mass
	case "kg":
		return alias("kg"), true
	case "mg":
		return scale("kg", 1, 1e6), true
	case "g":
		return scale("kg", 1, 1000), true
	case "t":
		return scale("kg", 1000, 1), true
	case "lb":
		return scale("kg", 0.45359237, 1), true
	case "oz":
		return scale("kg", 0.028349523125, 1), true
	// time
	case "s":
		return alias("s"), true
	case "us", "µs":
		return scale("s", 1, 1e6), true
	case "ms":
		return scale("s", 1, 1000), true
	case "min":
		return scale("s", 60, 1), true
	case "h":
		return scale("s", 3600, 1), true
	case "d":
		return scale("s", 86400, 1), true
	// frequency
	case "Hz", "1/s":
		return alias("Hz"), true
	case "kHz":
		return scale("Hz", 1000, 1), true
	case "MHz":
		return scale("Hz", 1e6, 1), true
	case "GHz":
		return scale("Hz", 1e9, 1), true
	case "1/min":
		return scale("Hz", 1, 60), true
	}
	return unitDef{}, false
}

func (d unitDef) toCanonical(v float64) float64   { return (v+d.pre)*d.num/d.den + d.post }
func (d unitDef) fromCanonical(c float64) float64 { return (c-d.post)*d.den/d.num - d.pre }

// canonicalName is the name a canonical alias is stored under ("°C" → "Cel").
func (d unitDef) name(declared string) string {
	if d.canonicalAlias {
		return d.dim
	}
	return declared
}

// unitRules is a compiled UnitConfig; immutable after newUnitRules.
type unitRules struct {
	disabled     bool
	keepOriginal bool
	exact        map[[2]string]UnitRule // measurement, field
	byField      map[string]UnitRule
	byMeas       map[string]UnitRule
	any          *UnitRule
}

// Validate reports the first rule whose target is not a known unit.
// (The bridge ignores such a rule's target: it cannot convert to it.)
func (c UnitConfig) Validate() error {
	for i, r := range c.Rules {
		if r.Target != "" {
			if _, ok := lookupUnit(r.Target); !ok {
				return fmt.Errorf("unit rule %d (measurement %q, field %q): unknown target unit %q", i+1, r.Measurement, r.Field, r.Target)
			}
		}
	}
	return nil
}

// KnownUnit reports whether the unit table knows u, and u's canonical unit.
func KnownUnit(u string) (canonical string, ok bool) {
	d, ok := lookupUnit(u)
	return d.dim, ok
}

func newUnitRules(c UnitConfig) *unitRules {
	u := &unitRules{disabled: c.Disabled, keepOriginal: c.KeepOriginal,
		exact: map[[2]string]UnitRule{}, byField: map[string]UnitRule{}, byMeas: map[string]UnitRule{}}
	for _, r := range c.Rules {
		m, f := wildcard(r.Measurement), wildcard(r.Field)
		switch {
		case m != "" && f != "":
			u.exact[[2]string{m, f}] = r
		case f != "":
			u.byField[f] = r
		case m != "":
			u.byMeas[m] = r
		default:
			u.any = &r
		}
	}
	return u
}

func wildcard(s string) string {
	if s = strings.TrimSpace(s); s == "*" {
		return ""
	}
	return s
}

// rule returns the rule for a measurement/field pair, if any. Lookups with
// a [2]string key of existing strings do not allocate.
func (u *unitRules) rule(meas, field string) (UnitRule, bool) {
	if len(u.exact) > 0 {
		if r, ok := u.exact[[2]string{meas, field}]; ok {
			return r, true
		}
	}
	if r, ok := u.byField[field]; ok {
		return r, true
	}
	if r, ok := u.byMeas[meas]; ok {
		return r, true
	}
	if u.any != nil {
		return *u.any, true
	}
	return UnitRule{}, false
}

// convert normalizes the units of r's fields in place. It reports how many
// fields it converted, or a rejection when a converted value overflows.
// Only numeric fields with a declared, known unit are touched.
func (u *unitRules) convert(r *telemetry.Reading, maxNameLen int) (int, *rejectError) {
	converted := 0
	n := len(r.Fields) // fields appended below (original units) are not converted
	// Capped: an append must never write into spare capacity someone else owns.
	r.Fields = r.Fields[:n:n]
	for i := range n {
		f := &r.Fields[i]
		if f.Unit == "" {
			continue
		}
		k := f.Value.Kind()
		if k != telemetry.KindFloat && k != telemetry.KindInt {
			continue
		}
		from, ok := lookupUnit(f.Unit)
		if !ok {
			continue
		}
		enabled, target := !u.disabled, from.dim
		if rule, ok := u.rule(r.Measurement, f.Name); ok {
			enabled = !rule.Off
			if rule.Target != "" {
				target = rule.Target
			}
		}
		if !enabled {
			continue
		}
		to, ok := lookupUnit(target)
		if !ok || to.dim != from.dim {
			continue // a target in another dimension: leave the value alone
		}
		if f.Unit == target || (from.canonicalAlias && to.canonicalAlias) {
			f.Unit = to.name(target) // same unit, maybe another spelling
			continue
		}
		v := to.fromCanonical(from.toCanonical(f.Value.AsFloat()))
		if math.IsInf(v, 0) || math.IsNaN(v) {
			return converted, reject(CodeInvalidValue, "field %q: %v %s is out of range in %s", f.Name, f.Value, f.Unit, target)
		}
		original := f.Unit
		f.Value = telemetry.Float(v)
		f.Unit = to.name(target)
		converted++
		if u.keepOriginal {
			name := f.Name + OriginalUnitSuffix
			if len(name) <= maxNameLen && !hasField(r.Fields, name) {
				r.Fields = append(r.Fields, telemetry.Field{Name: name, Value: telemetry.String(original)})
			}
		}
	}
	return converted, nil
}

func hasField(fs []telemetry.Field, name string) bool {
	for i := range fs {
		if fs[i].Name == name {
			return true
		}
	}
	return false
}

// UnitNames lists every unit the conversion table knows, in table order
// (for documentation; a test checks it matches lookupUnit).
func UnitNames() []string {
	return []string{
		"Cel", "°C", "degC", "celsius", "K", "degF", "°F", "fahrenheit",
		"Pa", "hPa", "mbar", "kPa", "MPa", "bar", "psi", "mmHg", "inHg", "atm",
		"V", "uV", "µV", "mV", "kV",
		"A", "uA", "µA", "mA", "kA",
		"W", "mW", "kW", "MW",
		"Wh", "kWh", "MWh", "J", "kJ", "MJ",
		"m/s", "km/h", "mph", "kn",
		"m", "mm", "cm", "km", "in", "ft", "mi",
		"kg", "mg", "g", "t", "lb", "oz",
		"s", "us", "µs", "ms", "min", "h", "d",
		"Hz", "1/s", "kHz", "MHz", "GHz", "1/min",
	}
}

// UnitFormula describes how unit u converts to its canonical unit, for
// documentation: "× 1000", "(x − 32) × 5/9", "− 273.15", "" for the
// canonical unit itself.
func UnitFormula(u string) (canonical, formula string, ok bool) {
	d, ok := lookupUnit(u)
	if !ok {
		return "", "", false
	}
	if d.canonicalAlias {
		return d.dim, "", true
	}
	factor := ""
	switch {
	case d.num == 1 && d.den == 1:
	case d.den == 1:
		factor = "× " + num(d.num)
	case d.num == 1:
		factor = "÷ " + num(d.den)
	default:
		factor = "× " + num(d.num) + "/" + num(d.den)
	}
	switch {
	case d.pre != 0:
		formula = "(x " + signed(d.pre) + ") " + factor
	case factor != "":
		formula = "x " + factor
	default:
		formula = "x"
	}
	if d.post != 0 {
		formula += " " + signed(d.post)
	}
	return d.dim, formula, true
}

func num(x float64) string { return strconv.FormatFloat(x, 'f', -1, 64) }

func signed(x float64) string {
	if x < 0 {
		return "− " + num(-x)
	}
	return "+ " + num(x)
}
