package storage

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// TestDeadLettersBound: the file never passes its bound; records beyond
// are refused and counted, and the oldest are kept.
func TestDeadLettersBound(t *testing.T) {
	path := filepath.Join(t.TempDir(), "deadletters.jsonl")
	dl := NewDeadLetters(path, 1024)
	line := "m,device_id=d v=1i " + strings.Repeat("1", 19)
	var recorded, refused int
	for range 50 {
		err := dl.Record([]byte(line), "conflict")
		switch {
		case err == nil:
			recorded++
		case errors.Is(err, ErrDeadLettersFull):
			refused++
		default:
			t.Fatal(err)
		}
	}
	if recorded == 0 || refused == 0 || recorded+refused != 50 {
		t.Fatalf("recorded %d, refused %d", recorded, refused)
	}
	if dl.Count() != uint64(recorded) || dl.Dropped() != uint64(refused) {
		t.Fatalf("Count %d Dropped %d, want %d %d", dl.Count(), dl.Dropped(), recorded, refused)
	}
	letters, err := ReadDeadLetters(path)
	if err != nil || len(letters) != recorded {
		t.Fatalf("read %d letters (%v), want %d", len(letters), err, recorded)
	}
	if NewDeadLetters(path, 0).maxBytes != DefaultDeadLetterMaxBytes {
		t.Fatal("default bound not applied")
	}
}
