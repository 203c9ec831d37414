package telemetry

import "fmt"

// MaxDeviceIDLen bounds a device id. Ids are UUIDs minted by the registry
// (36 characters); the bound leaves room for ids brought from elsewhere.
const MaxDeviceIDLen = 128

// ValidDeviceID reports whether s has the form of a device id: 1 to
// MaxDeviceIDLen characters of [A-Za-z0-9_.:-]. There is no '/', so an id
// is always exactly one MQTT topic level, and nothing that needs escaping
// in a URL path, a line-protocol tag or a query.
func ValidDeviceID(s string) bool {
	if s == "" || len(s) > MaxDeviceIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

// ParseDeviceID returns s as a DeviceID, or an error wrapping ErrInvalidID
// when s does not have the form ValidDeviceID accepts.
func ParseDeviceID(s string) (DeviceID, error) {
	if !ValidDeviceID(s) {
		return "", fmt.Errorf("%w: want 1 to %d of [A-Za-z0-9_.:-]", ErrInvalidID, MaxDeviceIDLen)
	}
	return DeviceID(s), nil
}
