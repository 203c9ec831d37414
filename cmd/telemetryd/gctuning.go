package main

import (
	"log/slog"
	"runtime/debug"
)

// defaultGCPercent is -gc-percent's default: Go's own. Most of what
// telemetryd allocates dies within a frame's trip (decoded readings,
// encoded lines, request bodies), so a higher value saves a good part of
// the collector's CPU, but the runtime then keeps a larger heap resident,
// idle sockets included: a trade for the operator to make (figures,
// bench P3, P6 and P9 at 100, 200 and 300: docs/performance.md).
const defaultGCPercent = 100

// tuneGC applies -gc-percent unless the GOGC variable is set (the runtime
// has applied it then), and returns what restores the previous setting:
// the setting is the process's, and tests run the service several times
// in one process.
func tuneGC(percent int, lookupEnv func(string) (string, bool), log *slog.Logger) (restore func()) {
	if v, ok := lookupEnv("GOGC"); ok && v != "" {
		log.Debug("GOGC set; -gc-percent ignored", "GOGC", v)
		return func() {}
	}
	old := debug.SetGCPercent(percent)
	return func() { debug.SetGCPercent(old) }
}
