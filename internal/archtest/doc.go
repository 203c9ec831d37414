// Package archtest holds the architecture test: it reads the module's
// import graph with `go list` and fails when an edge breaks the house
// rules — the adapters (ingest, bridge, live, storage, devices, web) import
// only the leaf package telemetry of this module and their own
// sub-packages, only cmd/ wires them together, simulator and bench stay
// apart, and each third-party client library stays in its adapter.
//
// It has no code outside its test: the rules are in rules_test.go.
package archtest
