// Package mqtttest starts a real Mosquitto 2 broker for tests.
//
// The mosquitto binary is found through the TELEMETRY_MOSQUITTO environment
// variable, else /usr/sbin/mosquitto, else $PATH. Without it tests are
// skipped, or fail when CI=true.
//
// Each broker listens on its own free loopback port with persistence in its
// own temporary directory, so it never touches a system-wide Mosquitto.
// Methods taking a testing.TB must be called from the test's goroutine.
package mqtttest
