// Package devices is the source of device identity: it answers "which
// device does this credential belong to" for the transports, and "may this
// gateway report for that device" and "which labels does it carry" for the
// bridge — always from memory, never a query per frame.
package devices
