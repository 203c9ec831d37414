package telemetry

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestClipMessage(t *testing.T) {
	long := strings.Repeat("a", 14000)
	multi := strings.Repeat("é", 400) // 800 bytes, 2 per rune
	tests := []struct {
		name, in string
		clipped  bool
	}{
		{"empty", "", false},
		{"short", "bad value", false},
		{"exact", strings.Repeat("x", MaxMessageLen), false},
		{"one over", strings.Repeat("x", MaxMessageLen+1), true},
		{"long", long, true},
		{"multibyte", multi, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ClipMessage(tt.in)
			if len(got) > MaxMessageLen {
				t.Fatalf("len %d > %d", len(got), MaxMessageLen)
			}
			if !utf8.ValidString(got) {
				t.Fatalf("invalid UTF-8: %q", got)
			}
			if tt.clipped != strings.HasSuffix(got, "…") || (!tt.clipped && got != tt.in) {
				t.Fatalf("ClipMessage(%d bytes) = %d bytes %q", len(tt.in), len(got), got[max(0, len(got)-10):])
			}
			if tt.clipped && !strings.HasPrefix(tt.in, strings.TrimSuffix(got, "…")) {
				t.Fatal("clipped message is not a prefix")
			}
		})
	}
	rs := ClipRejections([]Rejection{{Message: long}, {Message: "ok"}})
	if len(rs[0].Message) > MaxMessageLen || rs[1].Message != "ok" {
		t.Fatalf("ClipRejections: %d, %q", len(rs[0].Message), rs[1].Message)
	}
}
