package telemetry

import (
	"errors"
	"strings"
	"testing"
)

func TestParseDeviceID(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"0190a8f2-7c1e-7d3a-9b1e-2f6c0e9d4a11", true},
		{"plant-1.line:3_x", true},
		{strings.Repeat("a", MaxDeviceIDLen), true},
		{strings.Repeat("a", MaxDeviceIDLen+1), false},
		{"", false},
		{"a/b", false},
		{"a b", false},
		{"a+", false},
		{"a#", false},
		{"dévice", false},
	}
	for _, tt := range tests {
		id, err := ParseDeviceID(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("ParseDeviceID(%q) error = %v, want ok=%v", tt.in, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidID) {
			t.Errorf("ParseDeviceID(%q) error %v does not wrap ErrInvalidID", tt.in, err)
		}
		if err == nil && string(id) != tt.in {
			t.Errorf("ParseDeviceID(%q) = %q", tt.in, id)
		}
		if ValidDeviceID(tt.in) != tt.ok {
			t.Errorf("ValidDeviceID(%q) != %v", tt.in, tt.ok)
		}
	}
}
