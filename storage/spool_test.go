package storage

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func openTestSpool(t *testing.T, dir string, cfg SpoolConfig) (*Spool, RecoveryReport) {
	t.Helper()
	s, rep, err := OpenSpool(dir, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, rep
}

func drain(t *testing.T, s *Spool) []string {
	t.Helper()
	var out []string
	for {
		p, ok, err := s.Peek(nil)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return out
		}
		out = append(out, string(p))
		if err := s.Commit(len(p)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSpoolFIFOAcrossSegmentsAndReopen(t *testing.T) {
	dir := t.TempDir()
	s, _ := openTestSpool(t, dir, SpoolConfig{SegmentBytes: 100})
	var want []string
	for i := range 20 {
		rec := fmt.Sprintf("m,device_id=d v=%d %d\n", i, i)
		want = append(want, rec)
		if err := s.Append([]byte(rec)); err != nil {
			t.Fatal(err)
		}
	}
	// Consume a few, then "restart": the rest must come back in order.
	got := []string{}
	for range 5 {
		p, _, _ := s.Peek(nil)
		got = append(got, string(p))
		_ = s.Commit(len(p))
	}
	if st := s.Stats(); st.Records != 15 || st.Appended != 20 || st.Replayed != 5 {
		t.Fatalf("stats = %+v", st)
	}
	_ = s.Close()
	s2, rep := openTestSpool(t, dir, SpoolConfig{SegmentBytes: 100})
	// Records of a partly consumed segment are replayed again after a
	// restart (at-least-once; the writes are idempotent).
	if rep.CorruptRecords != 0 || rep.Records < 15 {
		t.Fatalf("recovery = %+v", rep)
	}
	rest := drain(t, s2)
	all := append(got, rest...)
	seen := map[string]bool{}
	for _, r := range all {
		seen[r] = true
	}
	for _, w := range want {
		if !seen[w] {
			t.Fatalf("record %q lost", w)
		}
	}
	for i := 1; i < len(rest); i++ {
		if rest[i] < rest[i-1] && len(rest[i]) == len(rest[i-1]) {
			t.Fatalf("out of order: %q after %q", rest[i], rest[i-1])
		}
	}
	if st := s2.Stats(); st.Records != 0 || st.Bytes != 0 {
		t.Fatalf("after drain: %+v", st)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "spool-*.log"))
	if len(files) != 1 {
		t.Fatalf("replayed segments not deleted: %v", files)
	}
}

func TestSpoolFull(t *testing.T) {
	s, _ := openTestSpool(t, t.TempDir(), SpoolConfig{MaxBytes: 100})
	if err := s.Append(make([]byte, 60)); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(make([]byte, 60)); !errors.Is(err, ErrSpoolFull) {
		t.Fatalf("err = %v, want ErrSpoolFull", err)
	}
	drain(t, s)
	if err := s.Append(make([]byte, 60)); err != nil {
		t.Fatalf("after space freed: %v", err)
	}
	if s.Stats().Full != 1 {
		t.Fatal("full not counted")
	}
}

func TestSpoolRecoversFromDamage(t *testing.T) {
	tests := []struct {
		name        string
		damage      func(t *testing.T, newest string)
		wantRecords int
	}{
		{"torn tail: half a record", func(t *testing.T, p string) {
			appendBytes(t, p, appendRecord(nil, []byte("x,a=b v=1 1\n"), time.Now())[:9])
		}, 3},
		{"torn tail: header only", func(t *testing.T, p string) { appendBytes(t, p, make([]byte, 7)) }, 3},
		{"flipped bit in the last record", func(t *testing.T, p string) { flipLastByte(t, p) }, 2},
		{"garbage length", func(t *testing.T, p string) {
			appendBytes(t, p, []byte{0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
		}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s, _ := openTestSpool(t, dir, SpoolConfig{})
			for i := range 3 {
				if err := s.Append(fmt.Appendf(nil, "m v=%d %d\n", i, i)); err != nil {
					t.Fatal(err)
				}
			}
			_ = s.Close()
			files, _ := filepath.Glob(filepath.Join(dir, "spool-*.log"))
			tt.damage(t, files[len(files)-1])
			s2, rep := openTestSpool(t, dir, SpoolConfig{})
			if rep.CorruptRecords != 1 || rep.CorruptBytes == 0 || rep.Records != tt.wantRecords {
				t.Fatalf("report = %+v, want %d records and the damage counted", rep, tt.wantRecords)
			}
			got := drain(t, s2)
			if len(got) != tt.wantRecords || got[0] != "m v=0 0\n" {
				t.Fatalf("recovered %q", got)
			}
			// The spool keeps working after the repair.
			if err := s2.Append([]byte("m v=9 9\n")); err != nil {
				t.Fatal(err)
			}
			if got := drain(t, s2); len(got) != 1 {
				t.Fatalf("after repair: %q", got)
			}
		})
	}
}

func appendBytes(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}

func flipLastByte(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-2] ^= 0x40
	if err := os.WriteFile(path, b, 0o640); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkSpoolAppend(b *testing.B) {
	s, _, err := OpenSpool(b.TempDir(), SpoolConfig{MaxBytes: 1 << 40}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	batch := make([]byte, 500<<10) // ~5000 lines
	b.SetBytes(int64(len(batch)))
	for b.Loop() {
		if err := s.Append(batch); err != nil {
			b.Fatal(err)
		}
	}
}
