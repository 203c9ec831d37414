// Package live rebroadcasts normalized readings to dashboards as they are
// accepted: the Hub fans them out, remembers the last value of every series
// for subscription snapshots and derives device presence from them; the
// Dashboards serve them over WebSocket (/v1/live) and Server-Sent Events
// (/v1/live/sse) to authenticated viewers.
//
// Data flows one way: the bridge hands the Hub each frame's accepted
// readings through Hub.Publish (it implements the bridge's Publisher); the
// Hub's goroutine (Run) owns all its state and writes to clients; nothing
// here calls back into the pipeline or storage.
//
// Blocking: Publish never blocks. Its inbox is bounded (HubConfig.
// InboxBatches); when the fan-out is that far behind, a batch is dropped
// for live delivery only (storage has it) and counted. Subscribe,
// Unsubscribe, Detach and Stats wait at most for their ctx.
//
// Slow consumers: every dashboard has a bounded queue of its own
// (DashboardConfig.MaxPending frames and MaxPendingBytes bytes for a
// socket, MaxPending frames for an SSE stream). A dashboard whose queue is
// full is dropped, never waited for: its socket is closed with 1013 (try
// later), its SSE stream ended. Reconnecting and resubscribing brings it up
// to date, as every subscription starts with a snapshot. So a slow
// dashboard slows nothing but itself.
//
// Viewers and scopes: with a ViewerAuthenticator configured, every feed
// (and the dashboard page's API, through Dashboards.Authenticate) needs a
// viewer token. A viewer's Scope is added by the server to each of its
// subscriptions and enforced like a tag filter, on readings and presence
// alike; a client cannot widen it. Disconnect closes a revoked viewer's
// sockets (1008) and streams.
//
// Presence is derived from readings alone (presence.go): a device is online
// from a reading until a silence longer than its offline timeout, and the
// transitions are announced to subscriptions that ask for them.
//
// Positions, resume and the watermark (resume.go, persisted.go): every
// reading fanned out gets a position; a subscription that gives the last
// one it received gets what it missed — from a bounded in-memory window,
// then from a HistorySource (storage, wired in cmd) — before live frames,
// or a reset and a snapshot. The bridge reports completions through
// Hub.Durable (its DurableNotifier), which never blocks; subscriptions that
// ask get per-device "persisted" watermarks and storage's refusals.
// WebSockets that offer permessage-deflate get it, each shared frame
// compressed once (deflate.go).
package live
