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
// InboxBatches); when the fan-out is that far behind, readings are merged
// to the latest value per series (at most MaxSeries) until it catches up,
// and the subscriptions concerned are told: a "conflated" message with the
// count merged away, a "gap" message for what even that could not hold.
// Subscribe, Unsubscribe, Detach and Stats wait at most for their ctx.
//
// Slow consumers: every dashboard has a bounded queue of its own
// (DashboardConfig.MaxPending frames and MaxPendingBytes bytes, socket and
// SSE stream alike), never waited for. When a frame does not fit, the
// Hub's SlowPolicy applies: SlowConflate (default) holds, per
// subscription, the set of series that changed and sends their latest
// values, after a "conflated" message, once the queue is at most half full
// (Client.Room); SlowDisconnect closes the socket with 1013 (try later) or
// ends the SSE stream, and the snapshot of a new subscription brings the
// dashboard up to date. Snapshots are sent in chunks, only while the queue
// has room, so no snapshot is too large for a queue. A slow dashboard
// slows nothing but itself; what is held back for it is bounded by its
// subscriptions (64) times the last-value cache (MaxSeries).
//
// Viewers and scopes: with a ViewerAuthenticator configured, every feed
// (and the dashboard page's API, through Dashboards.Authenticate) needs a
// viewer token. A viewer's Scope is added by the server to each of its
// subscriptions and enforced like a tag filter, on readings and presence
// alike; a client cannot widen it. Disconnect closes a revoked viewer's
// sockets (1008) and streams.
//
// Several instances: live/relay feeds other instances' readings in through
// Publish, their last values through Seed (snapshot cache only, never
// presence), and tells dashboards about itself through Notice (remote.go).
//
// Presence is derived from readings alone (presence.go): a device is online
// from a reading until a silence longer than its offline timeout, and the
// transitions are announced to subscriptions that ask for them.
//
// Positions, resume and the watermark (resume.go, persisted.go): every
// reading fanned out gets a position; a subscription that gives the last
// one it received gets what it missed — from a bounded in-memory window,
// then from a HistorySource (storage, wired in cmd) — before live frames,
// or a reset and a snapshot. A message carries a position only when its
// subscriber has everything up to it (the last snapshot chunk, the message
// emptying a conflated backlog; notices carry the one before what they
// announce), so a position is always safe to resume from; a resume is paced
// by Room like a snapshot. The bridge reports completions through
// Hub.Durable (its DurableNotifier), which never blocks; subscriptions that
// ask get per-device "persisted" watermarks and storage's refusals.
// WebSockets that offer permessage-deflate get it, each shared frame
// compressed once (deflate.go).
package live
