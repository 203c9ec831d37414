// Package pgtest starts a private PostgreSQL server for tests: a fresh
// cluster (initdb) in a temporary directory, listening on a free loopback
// port, stopped and removed when the test ends. Tests may stop and start it
// again (same port, same data) to exercise outages.
//
// PostgreSQL refuses to run as root: when the test runs as root the server
// runs as the "postgres" user (runuser), and the directory is given to it.
// The binaries are found through TELEMETRY_PG_BINDIR, then
// /usr/lib/postgresql/<version>/bin (15 first), then PATH. A missing binary
// skips the test, and fails it under CI=true.
package pgtest
