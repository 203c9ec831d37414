// Command simulator generates realistic device load against telemetryd over
// WebSocket and MQTT and, with -verify, proves the whole path: every
// acknowledged reading must be in InfluxDB and on the live dashboard, and
// every injected fault must be refused exactly as the protocol says.
//
// It only parses flags and the environment and prints; the work is in
// package simulator. Exit status: 0 run OK, 1 losses or unexpected
// answers (see the report), 2 the run could not take place.
package main
