// Package authguard throttles credential guessing: a client address whose
// requests fail authentication (401) too often within a window is answered
// 429 with Retry-After, without running the handler, until a block time has
// passed. Only requests that carry a credential (an Authorization header
// or a ?token= parameter) are counted or refused, so health probes and page
// loads from the same address are never slowed, and clients at other
// addresses are never affected.
//
// Bound and policy: at most MaxTracked addresses are tracked. When the
// table is full, a new address evicts the entry with the fewest failures
// among a few sampled ones (a blocked address is evicted last), and the
// eviction is counted. IPv6 clients are tracked per /64, the block a single
// host usually controls.
//
// The guard sees the address of the TCP peer (http.Request.RemoteAddr):
// behind a reverse proxy every client shares the proxy's address, so put
// the throttle in the proxy there.
//
// It imports only the standard library and telemetry.
package authguard
