// Package relay joins the live hubs of several telemetryd instances through
// NATS, so that a dashboard on any instance sees every reading any instance
// ingested, and a snapshot holds the whole fleet.
//
// What travels: the bridge hands the Relay (as its Publisher) each frame's
// readings; the Relay passes them to the local Hub at once and queues them
// for NATS. A writer goroutine coalesces what is queued and publishes it as
// a few messages on <prefix>.live, in a compact binary form (codec.go), with
// the instance id in a header. Every instance subscribes to <prefix>.live
// and feeds the other instances' readings into its own Hub through Publish,
// exactly like its own: filters, viewer scopes, the last values and
// presence are each instance's own Hub's work, unchanged. Own messages
// never come back (no-echo, and the header is checked).
//
// Last values (lastvalues.go): each instance writes the series it ingested,
// coalesced (one write per changed series per FlushInterval), to a
// JetStream stream that keeps one message per series subject. At start and
// after every reconnect the Relay loads that stream into the Hub (Hub.Seed),
// so a restarted instance's snapshots are whole.
//
// Cost: an instance decodes every reading of the fleet once and hands it to
// its Hub, whose work for a reading no dashboard wants is a last-value
// update, a presence update and a filter test per subscription shape, the
// same as for its own readings. Nothing is encoded for dashboards that do
// not match.
//
// Blocking: Publish never blocks, whatever NATS does. Its queue is bounded
// (Config.PublishBuffer batches); when full, the newest batch is not relayed
// (it is still shown locally and stored) and is counted. While NATS is
// unreachable nothing is buffered: live readings are not relayed (counted),
// and the changed series wait, one value each, until they can be written.
//
// Outages: when the connection is lost, or the last values cannot be
// loaded, every dashboard of the instance receives
//
//	{"type":"relay","state":"degraded","reason":"nats_disconnected"|"last_values_unavailable","instance":…,"at":<ns>}
//
// and so does every dashboard that connects while it lasts (ahead of its
// first snapshot). Once NATS is back (nats.go reconnects by itself) and the last
// values are loaded again, they receive
//
//	{"type":"relay","state":"recovered","instance":…,"at":<ns>}
//
// and live readings flow again. The first write of last values after an
// outage is also sent on the live subject as catch-up: the other instances
// merge it like a load and show the values newer than theirs, so dashboards
// that stayed connected elsewhere get what they missed, latest value per
// series.
//
// Third-party types stay inside: the Config and Stats are plain values, the
// Hub an interface declared here.
package relay
