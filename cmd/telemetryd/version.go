package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// version and revision are set at link time by the Makefile and the
// Dockerfile: -ldflags "-X main.version=v1.2.3 -X main.revision=<sha>".
// They are the only package variables of the command, because -X can set
// nothing else; nothing writes them at run time.
var (
	version  string
	revision string
)

// buildInfo describes the running binary.
type buildInfo struct {
	Version, Revision, GoVersion string
	Modified                     bool // built from a work tree with uncommitted changes
}

// currentBuild combines the link-time values with what the Go toolchain
// recorded (the VCS revision when built inside a git checkout without
// -buildvcs=false, and the main module's version for `go install m@v`).
func currentBuild() buildInfo {
	b := buildInfo{Version: version, Revision: revision, GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if b.Revision == "" {
					b.Revision = s.Value
				}
			case "vcs.modified":
				b.Modified = s.Value == "true"
			}
		}
		if b.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			b.Version = bi.Main.Version
		}
	}
	if b.Version == "" {
		b.Version = "dev"
	}
	if b.Revision == "" {
		b.Revision = "unknown"
	}
	return b
}

func (b buildInfo) String() string {
	s := fmt.Sprintf("telemetryd %s (revision %s", b.Version, b.Revision)
	if b.Modified {
		s += ", modified"
	}
	return s + ", " + b.GoVersion + ")"
}

// versionCommand is `telemetryd version`.
func versionCommand(_ context.Context, args []string, _ func(string) (string, bool), stdout, _ io.Writer) error {
	if len(args) > 0 {
		return fmt.Errorf("unexpected arguments: %v", args)
	}
	_, err := fmt.Fprintln(stdout, currentBuild())
	return err
}
