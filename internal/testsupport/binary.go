package testsupport

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Binary returns the path of an executable the test needs. It tries, in
// order: the environment variable envVar (when it is set it must name an
// executable, or the test fails), each candidate — an absolute or
// module-root-relative path (".tools/bin/influxd") or a bare name looked up
// in PATH. When none is found it skips the test with hint, or fails it
// under CI=true.
func Binary(t testing.TB, envVar, hint string, candidates ...string) string {
	t.Helper()
	if envVar != "" {
		if p := os.Getenv(envVar); p != "" {
			if err := executable(p); err != nil {
				t.Fatalf("%s=%s: %v", envVar, p, err)
			}
			return p
		}
	}
	if p, ok := find(candidates); ok {
		return p
	}
	name := "a binary"
	if len(candidates) > 0 {
		name = filepath.Base(candidates[len(candidates)-1])
	}
	Missing(t, name+" not found: "+hint)
	return ""
}

// Missing skips the test with msg, or fails it under CI=true: the CI rule
// for a prerequisite that is not installed.
func Missing(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true: a missing prerequisite is a failure)")
	}
	t.Skip(msg)
}

func find(candidates []string) (string, bool) {
	root, rootErr := ModuleRoot()
	for _, c := range candidates {
		switch {
		case c == "":
		case filepath.IsAbs(c):
			if executable(c) == nil {
				return c, true
			}
		case filepath.Base(c) != c: // module-relative path
			if rootErr == nil {
				if p := filepath.Join(root, c); executable(p) == nil {
					return p, true
				}
			}
		default:
			if p, err := exec.LookPath(c); err == nil {
				return p, true
			}
		}
	}
	return "", false
}

func executable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return errors.New("not an executable file")
	}
	return nil
}

// ModuleRoot walks up from the working directory (a test runs in its
// package's directory) to the directory holding go.mod.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}
