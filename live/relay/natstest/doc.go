// Package natstest starts a real NATS server with JetStream for tests:
// either in this process (github.com/nats-io/nats-server/v2, always
// available) or the nats-server binary (Debian's 2.9.10, what `make
// run-cluster` runs), found through TELEMETRY_NATS_SERVER, else $PATH;
// without it StartBinary skips the test, or fails it when CI=true.
//
// Each server listens on its own free loopback port with its JetStream
// store in its own temporary directory. Stop and Restart (same port, same
// store) let tests take NATS away and bring it back. Methods taking a
// testing.TB must be called from the test's goroutine.
package natstest
