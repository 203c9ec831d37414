// Package influxtest starts a real InfluxDB OSS 1.8 server for tests.
//
// The influxd binary is found through the TELEMETRY_INFLUXD environment
// variable, else .tools/bin/influxd in the module root (`make tools`
// installs it there), else $PATH. Without it tests are skipped, or fail
// when CI=true.
//
// Every server gets its own temporary directory and free loopback ports, so
// tests may run in parallel and never touch a system-wide InfluxDB.
// Methods taking a testing.TB must be called from the test's goroutine.
package influxtest
