package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/telemetryd/telemetryd/bridge"
	"github.com/telemetryd/telemetryd/ingest/payload"
	"github.com/telemetryd/telemetryd/telemetry"
)

// rulesFile is the optional TOML file (-config, TELEMETRY_CONFIG) for the
// settings that do not fit in one environment variable. Its `doc` tags are
// printed by `telemetryd config-reference`, so the reference cannot drift.
type rulesFile struct {
	Limits limitsSection `toml:"limits" doc:"Bounds on what one reading may contain. 0 or absent: the default."`
	Units  unitsSection  `toml:"units" doc:"Unit normalization: values in a known unit are converted to the canonical unit of their dimension."`
	Types  typesSection  `toml:"types" doc:"Field-type guard: one type per measurement and field, as InfluxDB requires."`
}

type limitsSection struct {
	MaxTags        int `toml:"max_tags" doc:"tags per reading, payload tags and registry labels together (default 32)"`
	MaxTagValueLen int `toml:"max_tag_value_len" doc:"bytes in a tag value (default 256)"`
	MaxNameLen     int `toml:"max_name_len" doc:"bytes in a measurement, field or tag name (default 128)"`
	MaxStringLen   int `toml:"max_string_len" doc:"bytes in a string field value (default 65535, InfluxDB's limit)"`
	MaxFields      int `toml:"max_fields" doc:"fields (metrics) in one reading (default 256)"`
}

type unitsSection struct {
	Disabled     bool       `toml:"disabled" doc:"convert nothing unless a rule says so (default false)"`
	KeepOriginal *bool      `toml:"keep_original" doc:"store a converted field's declared unit in the string field <field>_unit_original (default true)"`
	Rules        []unitRule `toml:"rule" doc:"per measurement/field overrides ([[units.rule]] tables); the most specific match wins: measurement+field, field, measurement, neither"`
}

type unitRule struct {
	Measurement string `toml:"measurement" doc:"measurement the rule applies to; empty or \"*\": all"`
	Field       string `toml:"field" doc:"field the rule applies to; empty or \"*\": all"`
	Off         bool   `toml:"off" doc:"leave matching fields as sent (default false: convert)"`
	Target      string `toml:"target" doc:"unit to convert to instead of the canonical one, e.g. \"degF\" or \"kPa\""`
}

type typesSection struct {
	Disabled  bool                         `toml:"disabled" doc:"turn the guard off (conflicting lines are then refused by InfluxDB one by one)"`
	MaxFields int                          `toml:"max_fields" doc:"measurement/field pairs remembered (default 100000); beyond it new fields are not guarded"`
	Fields    map[string]map[string]string `toml:"fields" doc:"declared types, [types.fields.<measurement>] <field> = \"float\" | \"integer\" | \"boolean\" | \"string\"; measurement \"*\" applies to all. InfluxDB's existing type wins over a declaration"`
}

// rules is a parsed rules file, ready for the packages.
type rules struct {
	units  bridge.UnitConfig
	types  bridge.TypeGuardConfig
	limits limitsSection
}

// loadRules reads the rules file at path ("" means none: the defaults).
// Unknown keys are errors, so that a typo does not silently do nothing.
func loadRules(path string) (rules, error) {
	var f rulesFile
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return rules{}, fmt.Errorf("config file: %w", err)
		}
		md, err := toml.Decode(string(data), &f)
		if err != nil {
			return rules{}, fmt.Errorf("config file %s: %w", path, err)
		}
		if und := md.Undecoded(); len(und) > 0 {
			keys := make([]string, len(und))
			for i, k := range und {
				keys[i] = k.String()
			}
			return rules{}, fmt.Errorf("config file %s: unknown keys: %s", path, strings.Join(keys, ", "))
		}
	}
	return f.compile(path)
}

func (f rulesFile) compile(path string) (rules, error) {
	r := rules{limits: f.Limits}
	r.units = bridge.UnitConfig{Disabled: f.Units.Disabled, KeepOriginal: f.Units.KeepOriginal == nil || *f.Units.KeepOriginal}
	for _, u := range f.Units.Rules {
		r.units.Rules = append(r.units.Rules, bridge.UnitRule{Measurement: u.Measurement, Field: u.Field, Off: u.Off, Target: u.Target})
	}
	var errs []error
	if err := r.units.Validate(); err != nil {
		errs = append(errs, err)
	}
	r.types = bridge.TypeGuardConfig{Disabled: f.Types.Disabled, MaxFields: f.Types.MaxFields}
	for _, meas := range slices.Sorted(maps.Keys(f.Types.Fields)) {
		for _, field := range slices.Sorted(maps.Keys(f.Types.Fields[meas])) {
			k, ok := parseKind(f.Types.Fields[meas][field])
			if !ok {
				errs = append(errs, fmt.Errorf("types.fields.%s.%s: type %q: want float, integer, boolean or string", meas, field, f.Types.Fields[meas][field]))
				continue
			}
			if r.types.Declared == nil {
				r.types.Declared = map[string]map[string]telemetry.Kind{}
			}
			if r.types.Declared[meas] == nil {
				r.types.Declared[meas] = map[string]telemetry.Kind{}
			}
			r.types.Declared[meas][field] = k
		}
	}
	for name, v := range map[string]int{"max_tags": f.Limits.MaxTags, "max_tag_value_len": f.Limits.MaxTagValueLen,
		"max_name_len": f.Limits.MaxNameLen, "max_string_len": f.Limits.MaxStringLen, "max_fields": f.Limits.MaxFields, "types.max_fields": f.Types.MaxFields} {
		if v < 0 {
			errs = append(errs, fmt.Errorf("%s: %d is negative", name, v))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return rules{}, fmt.Errorf("config file %s: %w", path, err)
	}
	return r, nil
}

func parseKind(s string) (telemetry.Kind, bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "float":
		return telemetry.KindFloat, true
	case "integer", "int":
		return telemetry.KindInt, true
	case "boolean", "bool":
		return telemetry.KindBool, true
	case "string":
		return telemetry.KindString, true
	}
	return telemetry.KindInvalid, false
}

// applyBridge puts the rules into the bridge's configuration.
func (r rules) applyBridge(c *bridge.Config) {
	c.Units, c.Types = r.units, r.types
	c.Limits.MaxTags = r.limits.MaxTags
	c.Limits.MaxTagValueLen = r.limits.MaxTagValueLen
	c.Limits.MaxNameLen = r.limits.MaxNameLen
	c.Limits.MaxStringLen = r.limits.MaxStringLen
}

// applyPayload puts the rules into the decoder's limits.
func (r rules) applyPayload(l *payload.Limits) {
	l.MaxFields = r.limits.MaxFields
}

// seedFieldTypes loads InfluxDB's field types into the bridge's type guard
// before traffic flows. A failure is logged, not fatal: the guard then
// learns types from traffic, and a conflict with a type it did not know is
// still refused by InfluxDB line by line (storage_rejected).
func seedFieldTypes(ctx context.Context, br *bridge.Bridge, src bridge.FieldTypeSource, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := br.SeedFieldTypes(ctx, src); err != nil {
		log.Warn("field types not loaded from InfluxDB; the type guard learns them from traffic", "error", err)
	}
}
