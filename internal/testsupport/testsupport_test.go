package testsupport

import (
	"os"
	"path/filepath"
	"testing"
)

func TestFind(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "tool")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	for _, tc := range []struct {
		name       string
		candidates []string
		want       string
		ok         bool
	}{
		{"absolute", []string{exe}, exe, true},
		{"in PATH", []string{"tool"}, exe, true},
		{"first found wins", []string{"/nonexistent/x", "tool", exe}, exe, true},
		{"not executable", []string{plain, "plain"}, "", false},
		{"module-relative missing", []string{"no/such/bin"}, "", false},
		{"module-relative", []string{"internal/testsupport/doc.go"}, "", false},
		{"none", nil, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := find(tc.candidates)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("find(%q) = %q, %v; want %q, %v", tc.candidates, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestBinaryFromEnv(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "tool")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TESTSUPPORT_TOOL", exe)
	if got := Binary(t, "TESTSUPPORT_TOOL", "hint", "no-such-tool"); got != exe {
		t.Fatalf("Binary = %q, want %q", got, exe)
	}
}

func TestEventually(t *testing.T) {
	n := 0
	Eventually(t, 0, "immediately true", func() bool { return true })
	Eventually(t, 1e9, "third call", func() bool { n++; return n == 3 })
	if n != 3 {
		t.Fatalf("cond called %d times, want 3", n)
	}
}
