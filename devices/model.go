package devices

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/telemetryd/telemetryd/telemetry"
)

// Errors returned by Registry operations; the admin API maps each to a
// stable error code.
var (
	ErrNotFound = errors.New("not found")           // not_found, 404
	ErrInvalid  = errors.New("invalid request")     // invalid_request, 400
	ErrConflict = errors.New("conflicting request") // conflict, 409
)

// Kind tells a plain device from a gateway.
type Kind string

const (
	// KindDevice reports its own readings and, optionally, is assigned to a
	// gateway that may report for it.
	KindDevice Kind = "device"
	// KindGateway may also report for the devices assigned to it.
	KindGateway Kind = "gateway"
)

// Device is a registered device or gateway.
type Device struct {
	ID   telemetry.DeviceID
	Name string
	Kind Kind
	// Labels are stored as tags on every reading of the device.
	Labels map[string]string
	// Gateway, for a KindDevice, is the gateway that may report for it ("" for none).
	Gateway    telemetry.DeviceID
	CreatedAt  time.Time
	LastSeenAt time.Time // zero: never seen
	Revoked    bool
}

// Viewer is a registered dashboard user: the identity every dashboard
// endpoint sees (ID, Name, Scope), with the registry's own metadata.
type Viewer struct {
	telemetry.Viewer
	CreatedAt time.Time
	Revoked   bool
}

// Credential is a stored token: its SHA-256, never the token.
type Credential struct {
	Hash  TokenHash
	Owner string // device or viewer id
	// MosquittoHash is the token hashed for a Mosquitto password file ("" for viewers).
	MosquittoHash string
	CreatedAt     time.Time
	ExpiresAt     time.Time // zero: until revoked or rotated
}

func (c *Credential) expired(now time.Time) bool {
	return !c.ExpiresAt.IsZero() && !now.Before(c.ExpiresAt)
}

func cloneDevice(d Device) Device {
	d.Labels = maps.Clone(d.Labels)
	if d.Labels == nil {
		d.Labels = map[string]string{}
	}
	return d
}

func cloneViewer(v Viewer) Viewer {
	v.Scope = maps.Clone(v.Scope)
	if v.Scope == nil {
		v.Scope = map[string]string{}
	}
	return v
}

// The rules below are those the bridge applies to tags, so that a label can
// never be refused later (or escape its place in line protocol).

// validLabelKey: [A-Za-z0-9_.:/-]{1,128}, not starting with '_', not "time"
// and not the tag the bridge reserves for the device id.
func validLabelKey(s string) bool {
	if s == "" || len(s) > 128 || s[0] == '_' || s == "time" || s == "device_id" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '_', c == '.', c == ':', c == '/', c == '-':
		default:
			return false
		}
	}
	return true
}

// validLabelValue: printable UTF-8 of 1 to maxLen bytes, no trailing
// backslash (line protocol cannot represent one).
func validLabelValue(s string, maxLen int) bool {
	return s != "" && len(s) <= maxLen && s[len(s)-1] != '\\' && printable(s)
}

// validName: a human name, 1 to 128 bytes of printable UTF-8.
func validName(s string) bool { return s != "" && len(s) <= 128 && printable(s) }

// printable: valid UTF-8 without control characters (C0, DEL, C1) or line
// separators, so that it stays on one line wherever it is written.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == 0x2028 || r == 0x2029 {
			return false
		}
	}
	return true
}

// checkLabels validates a label set (allowDeviceID: viewer scopes may
// select on the device_id tag).
func checkLabels(what string, m map[string]string, maxCount, maxValueLen int, allowDeviceID bool) error {
	if len(m) > maxCount {
		return fmt.Errorf("%w: at most %d %s", ErrInvalid, maxCount, what)
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if !validLabelKey(k) && !(allowDeviceID && k == "device_id") {
			return fmt.Errorf("%w: %s key %q: want 1 to 128 of [A-Za-z0-9_.:/-], not starting with '_', not time or device_id", ErrInvalid, what, clip(k))
		}
		if !validLabelValue(m[k], maxValueLen) {
			return fmt.Errorf("%w: %s %q: value must be 1 to %d bytes of printable UTF-8 without a trailing backslash", ErrInvalid, what, k, maxValueLen)
		}
	}
	return nil
}

// clip shortens what an error quotes back.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
