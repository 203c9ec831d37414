package telemetry

import "unicode/utf8"

// MaxMessageLen bounds every human-readable error message the service
// sends (rejections, device error frames, HTTP error bodies), in bytes.
// Parser errors can repeat their input (a deeply nested payload names every
// level); an answer must never grow with what a client sent.
const MaxMessageLen = 512

// ellipsis marks a clipped message.
const ellipsis = "…"

// ClipMessage returns s cut to at most MaxMessageLen bytes, ending in an
// ellipsis when it was cut. It never splits a UTF-8 sequence.
func ClipMessage(s string) string {
	if len(s) <= MaxMessageLen {
		return s
	}
	cut := MaxMessageLen - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ellipsis
}

// ClipRejections clips the message of every rejection in place and
// returns rs.
func ClipRejections(rs []Rejection) []Rejection {
	for i := range rs {
		rs[i].Message = ClipMessage(rs[i].Message)
	}
	return rs
}
