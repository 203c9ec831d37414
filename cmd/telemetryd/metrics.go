package main

import (
	"context"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/telemetryd/telemetryd/authguard"
	"github.com/telemetryd/telemetryd/bridge"
	"github.com/telemetryd/telemetryd/devices"
	"github.com/telemetryd/telemetryd/ingest"
	"github.com/telemetryd/telemetryd/live"
	"github.com/telemetryd/telemetryd/live/relay"
	"github.com/telemetryd/telemetryd/storage"
	"github.com/telemetryd/telemetryd/telemetry"
)

// Prometheus lives only here: the packages keep plain counters behind their
// Stats methods, and this collector turns a snapshot of them into metrics
// at scrape time. Nothing is updated per event on the hot paths for the
// sake of metrics, and no package depends on client_golang.

// metricSources are the components whose Stats the collector reads.
// Any may be nil (MQTT off; tests).
type metricSources struct {
	bridge *bridge.Bridge
	hub    *live.Hub
	dash   *live.Dashboards
	ws     *ingest.WS
	mqtt   *ingest.MQTT
	http   *ingest.HTTP // POST /v1/ingest, /api/v2/write, /write
	// registry: auth failures and sizes.
	registry *devices.Registry
	// incompleteRequests counts HTTP connections closed before a complete
	// request (slow handshakes cut by -read-header-timeout among them).
	incompleteRequests func() uint64
	// durable is the disk spool and dead letters (nil when -spool=false).
	durable *storage.Durable
	// guard: credential-guessing throttle (authguard.go).
	guard *authguard.Guard
	build buildInfo
	// relay is the live fan-out across instances (nil: this process only).
	relay *relay.Relay
}

// metricsHandler serves GET /metrics from a private registry: the
// collector below plus the Go runtime and process collectors.
func metricsHandler(src metricSources, log *slog.Logger) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		newCollector(src),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
	})
}

// metricDef is one metric family: name, help, type and variable labels.
type metricDef struct {
	name, help string
	typ        prometheus.ValueType // ignored for histograms
	labels     []string
}

// metricDefs lists the metric families. Names follow Prometheus
// conventions: _total for counters, base units (seconds), no unit for counts.
func metricDefs() []metricDef {
	c, g := prometheus.CounterValue, prometheus.GaugeValue
	return []metricDef{
		{"telemetryd_build_info", "Build of the running binary (always 1).", g, []string{"version", "revision", "goversion"}},
		{"telemetryd_auth_throttled_total", "Requests answered 429 because their address failed authentication too often.", c, nil},
		{"telemetryd_auth_tracked_addresses", "Client addresses the guessing throttle tracks (bounded).", g, nil},
		{"telemetryd_auth_tracking_evicted_total", "Tracked addresses forgotten to keep the throttle's table bounded.", c, nil},
		// Transports.
		{"telemetryd_ws_connections", "Open device WebSocket connections.", g, nil},
		{"telemetryd_mqtt_refused_total", "MQTT refusals by device and reason: messages too_big, rate_limited or invalid_payload (acked and dropped), readings by rejection code; device \"\" beyond 1024 devices.", c, []string{"device", "reason"}},
		{"telemetryd_ws_upgrades_total", "Device WebSocket connections accepted.", c, nil},
		{"telemetryd_ws_resent_frames_total", "Device frames recognised as resends of accepted frames (same device, seq and bytes) and acked without being stored again.", c, nil},
		{"telemetryd_ws_handshakes_rejected_total", "Device WebSocket upgrades refused, by reason (unauthorized, origin, too_many_connections, server_busy).", c, []string{"reason"}},
		{"telemetryd_ws_policy_closes_total", "Device WebSockets closed by a limit or policy, by reason (frame_too_big 1009, rate_limited 1013, inactive_device 1008, not_reading: aborted, its answers queue full).", c, []string{"reason"}},
		{"telemetryd_auth_failures_total", "Credentials refused by the registry, by kind (device, viewer, admin).", c, []string{"kind"}},
		{"telemetryd_http_incomplete_requests_total", "HTTP connections closed before sending a complete request (slow handshakes cut by -read-header-timeout among them).", c, nil},
		{"telemetryd_registry_devices", "Devices and gateways in the registry, revoked ones included.", g, nil},
		{"telemetryd_registry_viewers", "Dashboard viewers in the registry, revoked ones included.", g, nil},
		{"telemetryd_frames_received_total", "Frames (WebSocket messages, MQTT publishes, HTTP ingest requests) received from devices, by transport (ws, mqtt, http).", c, []string{"transport"}},
		{"telemetryd_frames_rejected_total", "Whole frames refused, by transport and reason (invalid_payload, overloaded, rate_limited, unknown_device; HTTP also unauthorized, too_large, not_stored).", c, []string{"transport", "reason"}},
		{"telemetryd_readings_accepted_total", "Readings accepted into the pipeline, by transport.", c, []string{"transport"}},
		{"telemetryd_readings_rejected_total", "Readings rejected, by rejection code (decoder, validation, type guard and storage alike).", c, []string{"reason"}},
		{"telemetryd_http_readings_rejected_total", "Readings of HTTP ingest requests named in a refusal (decoder, validation, type guard or storage), all codes together.", c, nil},
		{"telemetryd_acks_sent_total", "Acknowledgements sent to devices (WebSocket acks, MQTT PUBACKs, HTTP 200/204 answers), by transport.", c, []string{"transport"}},
		{"telemetryd_mqtt_connected", "MQTT client connections up and subscribed.", g, nil},
		{"telemetryd_mqtt_client_messages_total", "MQTT messages the broker delivered, per client connection: in a share group, this instance's share (client_id is <mqtt-client-id>-<instance-id>-<n>).", c, []string{"client_id"}},
		{"telemetryd_mqtt_unacked_messages", "MQTT messages received and not yet acknowledged to the broker.", g, nil},
		{"telemetryd_mqtt_redelivered_total", "MQTT messages the broker sent again (DUP flag): duplicates of messages not acknowledged before a reconnect or restart.", c, nil},
		// Bridge and storage.
		{"telemetryd_bridge_frames_accepted_total", "Frames with at least one accepted reading queued for storage.", c, nil},
		{"telemetryd_bridge_queue_frames", "Frames waiting in the bridge's write queue.", g, nil},
		{"telemetryd_bridge_queue_capacity_frames", "Bound of the bridge's write queue; when full, devices are slowed down.", g, nil},
		{"telemetryd_bridge_queue_oldest_age_seconds", "Age of the oldest accepted frame not yet written to storage (0 when none).", g, nil},
		{"telemetryd_readings_written_total", "Readings durably written to storage.", c, nil},
		{"telemetryd_influx_write_batches_total", "Storage write requests, retries and isolation writes included.", c, nil},
		{"telemetryd_influx_write_errors_total", "Storage write requests that failed transiently (and were retried or given up).", c, nil},
		{"telemetryd_influx_write_retries_total", "Storage write retries after a transient failure.", c, nil},
		{"telemetryd_influx_write_duration_seconds", "Duration of each storage write request.", 0, nil},
		{"telemetryd_storage_direct_writes_total", "Batches written straight to InfluxDB.", c, nil},
		{"telemetryd_storage_spooled_writes_total", "Batches appended (fsynced) to the disk spool because InfluxDB was slow, down or answering with a retryable status.", c, nil},
		{"telemetryd_spool_records", "Batches waiting in the disk spool for replay to InfluxDB.", g, nil},
		{"telemetryd_spool_bytes", "Bytes of the disk spool.", g, nil},
		{"telemetryd_spool_max_bytes", "Size limit of the disk spool; when reached, devices are no longer acknowledged.", g, nil},
		{"telemetryd_spool_oldest_age_seconds", "Age of the oldest batch waiting in the spool (0 when empty).", g, nil},
		{"telemetryd_spool_replayed_total", "Spooled batches replayed to InfluxDB.", c, nil},
		{"telemetryd_spool_full_total", "Spool appends refused because the spool was full.", c, nil},
		{"telemetryd_spool_replay_errors_total", "Failed replay attempts (retried with backoff).", c, nil},
		{"telemetryd_spool_corrupt_records_total", "Damaged spool records skipped at start-up (torn or corrupt tail).", c, nil},
		{"telemetryd_dead_letters_total", "Lines InfluxDB refused for good, recorded in the dead-letter file.", c, nil},
		{"telemetryd_dead_letters_dropped_total", "Lines InfluxDB refused for good and NOT recorded: the dead-letter file was at -dead-letter-max-bytes.", c, nil},
		{"telemetryd_units_converted_total", "Field values converted to their canonical (or configured) unit.", c, nil},
		{"telemetryd_typeguard_fields", "Measurement/field types remembered by the field-type guard.", g, nil},
		{"telemetryd_typeguard_coerced_total", "Values converted to their field's stored type (integer to float, integral float to integer).", c, nil},
		{"telemetryd_typeguard_untracked_total", "Fields not remembered because the type guard was full.", c, nil},
		// Live side.
		{"telemetryd_live_connections", "Open dashboard WebSocket connections.", g, nil},
		{"telemetryd_live_subscribers", "Dashboard clients with at least one subscription.", g, nil},
		{"telemetryd_live_subscriptions", "Dashboard subscriptions.", g, nil},
		{"telemetryd_live_series", "Series in the last-value cache used for snapshots.", g, nil},
		{"telemetryd_live_published_batches_total", "Batches of readings handed to the live fan-out.", c, nil},
		{"telemetryd_live_inbox_full_batches_total", "Batches that found the live fan-out's inbox full: merged to the latest value per series, the dashboards told (they are stored as usual).", c, nil},
		{"telemetryd_live_conflated_readings_total", "Readings merged away to the latest value per series, by stage (inbox: the fan-out was behind; dashboard: a slow dashboard's queue was full); the dashboards are told.", c, []string{"stage"}},
		{"telemetryd_live_gap_readings_total", "Readings not shown live even merged (a bound was reached); the dashboards get a gap message.", c, nil},
		{"telemetryd_live_backlogged_clients", "Dashboard clients the fan-out holds data back for (a snapshot in chunks, conflated values).", g, nil},
		{"telemetryd_live_snapshot_chunks_total", "Snapshot messages (chunks) sent to dashboards.", c, nil},
		{"telemetryd_live_deliveries_total", "Frames delivered to dashboard clients.", c, nil},
		{"telemetryd_live_slow_clients_dropped_total", "Dashboard clients disconnected for falling behind (-live-slow-policy=disconnect).", c, nil},
		{"telemetryd_live_series_not_remembered_total", "Series not cached for snapshots because the cache was full.", c, nil},
		// Live relay (cluster mode only).
		{"telemetryd_live_relay_connected", "1 when connected to NATS with the fleet's last values loaded; 0 while dashboards are told they may miss other instances' readings.", g, nil},
		{"telemetryd_live_relay_outages_total", "Times the live relay went degraded (NATS lost, or last values not loadable).", c, nil},
		{"telemetryd_live_relay_published_messages_total", "NATS messages of readings sent to the other instances.", c, nil},
		{"telemetryd_live_relay_published_readings_total", "Readings sent to the other instances.", c, nil},
		{"telemetryd_live_relay_received_messages_total", "NATS messages of readings received from the other instances.", c, nil},
		{"telemetryd_live_relay_received_readings_total", "Readings received from the other instances.", c, nil},
		{"telemetryd_live_relay_dropped_batches_total", "Batches not sent to the other instances because the relay's publish buffer was full (shown here and stored all the same).", c, nil},
		{"telemetryd_live_relay_unsent_readings_total", "Readings not sent to the other instances because NATS was unreachable or refused them.", c, nil},
		{"telemetryd_live_relay_dropped_messages_total", "Messages from the other instances not taken, by reason (receive_overflow: NATS dropped them for this slow receiver; corrupt: they did not decode).", c, []string{"reason"}},
		{"telemetryd_live_relay_last_values_written_total", "Series last values written to the JetStream last-value stream.", c, nil},
		{"telemetryd_live_relay_last_value_errors_total", "Last-value writes that failed (retried next flush).", c, nil},
		{"telemetryd_live_relay_last_values_loaded_total", "Last values loaded from the stream into the hub (at start and after each reconnect).", c, nil},
		{"telemetryd_live_relay_catchup_readings_total", "Last values sent again on the live subject after an outage.", c, nil},
		{"telemetryd_live_relay_series_not_kept_total", "Readings of series beyond the relay's series bound (relayed live, not written as last values).", c, nil},
	}
}

type collector struct {
	src   metricSources
	descs map[string]*prometheus.Desc
	types map[string]prometheus.ValueType
}

func newCollector(src metricSources) *collector {
	c := &collector{src: src, descs: map[string]*prometheus.Desc{}, types: map[string]prometheus.ValueType{}}
	for _, d := range append(metricDefs(), liveProtocolMetricDefs()...) { // live.go
		c.descs[d.name] = prometheus.NewDesc(d.name, d.help, d.labels, nil)
		c.types[d.name] = d.typ
	}
	return c
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector: one snapshot of every source.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	emit := func(name string, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(c.descs[name], c.types[name], v, labels...)
	}
	b := c.src.build
	emit("telemetryd_build_info", 1, b.Version, b.Revision, b.GoVersion)
	if g := c.src.guard; g != nil {
		s := g.Stats()
		emit("telemetryd_auth_throttled_total", float64(s.Throttled))
		emit("telemetryd_auth_tracked_addresses", float64(s.Tracked))
		emit("telemetryd_auth_tracking_evicted_total", float64(s.Evicted))
	}

	if d := c.src.durable; d != nil {
		s := d.Stats()
		emit("telemetryd_storage_direct_writes_total", float64(s.Direct))
		emit("telemetryd_storage_spooled_writes_total", float64(s.Spooled))
		emit("telemetryd_spool_records", float64(s.Spool.Records))
		emit("telemetryd_spool_bytes", float64(s.Spool.Bytes))
		emit("telemetryd_spool_max_bytes", float64(s.Spool.MaxBytes))
		emit("telemetryd_spool_oldest_age_seconds", s.Spool.OldestAge.Seconds())
		emit("telemetryd_spool_replayed_total", float64(s.Spool.Replayed))
		emit("telemetryd_spool_full_total", float64(s.Spool.Full))
		emit("telemetryd_spool_replay_errors_total", float64(s.ReplayErrors))
		emit("telemetryd_spool_corrupt_records_total", float64(s.Spool.CorruptRecords))
		emit("telemetryd_dead_letters_total", float64(s.DeadLettered))
		emit("telemetryd_dead_letters_dropped_total", float64(s.DeadLettersDropped))
	}

	if ws := c.src.ws; ws != nil {
		s := ws.Stats()
		emit("telemetryd_ws_connections", float64(s.Connections))
		emit("telemetryd_ws_upgrades_total", float64(s.Upgrades))
		emit("telemetryd_ws_resent_frames_total", float64(s.Resent))
		emit("telemetryd_ws_handshakes_rejected_total", float64(s.Unauthorized), "unauthorized")
		emit("telemetryd_ws_handshakes_rejected_total", float64(s.OriginRejected), "origin")
		emit("telemetryd_ws_handshakes_rejected_total", float64(s.DeviceConnLimited), "too_many_connections")
		emit("telemetryd_ws_handshakes_rejected_total", float64(s.TotalConnLimited), "server_busy")
		emit("telemetryd_frames_rejected_total", float64(s.RateLimited), "ws", "rate_limited")
		emit("telemetryd_ws_policy_closes_total", float64(s.TooBig), "frame_too_big")
		emit("telemetryd_ws_policy_closes_total", float64(s.RateLimitClosed), "rate_limited")
		emit("telemetryd_ws_policy_closes_total", float64(s.InactiveClosed), "inactive_device")
		emit("telemetryd_ws_policy_closes_total", float64(s.WriteQueueFull), "not_reading")
		emit("telemetryd_frames_received_total", float64(s.Frames), "ws")
		emit("telemetryd_frames_rejected_total", float64(s.InvalidFrames), "ws", "invalid_payload")
		emit("telemetryd_frames_rejected_total", float64(s.Overloaded), "ws", "overloaded")
		emit("telemetryd_readings_accepted_total", float64(s.ReadingsAccepted), "ws")
		emit("telemetryd_acks_sent_total", float64(s.AcksSent), "ws")
	}
	if mq := c.src.mqtt; mq != nil {
		s := mq.Stats()
		emit("telemetryd_mqtt_connected", float64(s.Connected))
		for _, cl := range mq.Clients() {
			emit("telemetryd_mqtt_client_messages_total", float64(cl.Messages), cl.ClientID)
		}
		emit("telemetryd_mqtt_unacked_messages", float64(s.Unacked))
		emit("telemetryd_mqtt_redelivered_total", float64(s.Redelivered))
		for _, r := range mq.Refused() {
			emit("telemetryd_mqtt_refused_total", float64(r.Count), string(r.Device), r.Reason)
		}
		emit("telemetryd_frames_received_total", float64(s.Messages), "mqtt")
		emit("telemetryd_frames_rejected_total", float64(s.InvalidMessages), "mqtt", "invalid_payload")
		emit("telemetryd_frames_rejected_total", float64(s.UnknownDevice), "mqtt", "unknown_device")
		emit("telemetryd_frames_rejected_total", float64(s.Overflow), "mqtt", "overloaded")
		emit("telemetryd_readings_accepted_total", float64(s.ReadingsAccepted), "mqtt")
		emit("telemetryd_acks_sent_total", float64(s.Acked), "mqtt")
	}
	if h := c.src.http; h != nil {
		s := h.Stats()
		emit("telemetryd_frames_received_total", float64(s.Requests), "http")
		emit("telemetryd_frames_rejected_total", float64(s.Unauthorized), "http", "unauthorized")
		emit("telemetryd_frames_rejected_total", float64(s.TooLarge), "http", "too_large")
		emit("telemetryd_frames_rejected_total", float64(s.Invalid), "http", "invalid_payload")
		emit("telemetryd_frames_rejected_total", float64(s.RateLimited), "http", "rate_limited")
		emit("telemetryd_frames_rejected_total", float64(s.Overloaded), "http", "overloaded")
		emit("telemetryd_frames_rejected_total", float64(s.NotStored), "http", "not_stored")
		emit("telemetryd_readings_accepted_total", float64(s.ReadingsAccepted), "http")
		emit("telemetryd_http_readings_rejected_total", float64(s.ReadingsRejected))
		emit("telemetryd_acks_sent_total", float64(s.Acked), "http")
	}
	if br := c.src.bridge; br != nil {
		s := br.Stats()
		emit("telemetryd_bridge_frames_accepted_total", float64(s.FramesAccepted))
		emit("telemetryd_bridge_queue_frames", float64(s.QueueFrames))
		emit("telemetryd_bridge_queue_capacity_frames", float64(s.QueueCapacity))
		emit("telemetryd_bridge_queue_oldest_age_seconds", s.QueueOldestAge.Seconds())
		emit("telemetryd_readings_written_total", float64(s.ReadingsWritten))
		for _, code := range slices.Sorted(maps.Keys(s.RejectedByCode)) {
			emit("telemetryd_readings_rejected_total", float64(s.RejectedByCode[code]), code)
		}
		emit("telemetryd_influx_write_batches_total", float64(s.WriteBatches))
		emit("telemetryd_influx_write_errors_total", float64(s.WriteErrors))
		emit("telemetryd_influx_write_retries_total", float64(s.WriteRetries))
		ch <- constHistogram(c.descs["telemetryd_influx_write_duration_seconds"], s.WriteLatency)
		emit("telemetryd_units_converted_total", float64(s.UnitsConverted))
		emit("telemetryd_typeguard_fields", float64(s.TypeGuardFields))
		emit("telemetryd_typeguard_coerced_total", float64(s.TypeGuardCoerced))
		emit("telemetryd_typeguard_untracked_total", float64(s.TypeGuardUntracked))
	}
	if f := c.src.incompleteRequests; f != nil {
		emit("telemetryd_http_incomplete_requests_total", float64(f()))
	}
	if r := c.src.registry; r != nil {
		s := r.Stats()
		emit("telemetryd_auth_failures_total", float64(s.DeviceAuthFailures), "device")
		emit("telemetryd_auth_failures_total", float64(s.ViewerAuthFailures), "viewer")
		emit("telemetryd_auth_failures_total", float64(s.AdminAuthFailures), "admin")
		emit("telemetryd_registry_devices", float64(s.Devices))
		emit("telemetryd_registry_viewers", float64(s.Viewers))
	}
	if d := c.src.dash; d != nil {
		emit("telemetryd_live_connections", float64(d.Connections()))
	}
	if r := c.src.relay; r != nil {
		s := r.Stats()
		connected := 0.0
		if s.Connected {
			connected = 1
		}
		emit("telemetryd_live_relay_connected", connected)
		emit("telemetryd_live_relay_outages_total", float64(s.Outages))
		emit("telemetryd_live_relay_published_messages_total", float64(s.PublishedMessages))
		emit("telemetryd_live_relay_published_readings_total", float64(s.PublishedReadings))
		emit("telemetryd_live_relay_received_messages_total", float64(s.ReceivedMessages))
		emit("telemetryd_live_relay_received_readings_total", float64(s.ReceivedReadings))
		emit("telemetryd_live_relay_dropped_batches_total", float64(s.DroppedBatches))
		emit("telemetryd_live_relay_unsent_readings_total", float64(s.UnsentReadings))
		emit("telemetryd_live_relay_dropped_messages_total", float64(s.ReceiveDropped), "receive_overflow")
		emit("telemetryd_live_relay_dropped_messages_total", float64(s.CorruptMessages), "corrupt")
		emit("telemetryd_live_relay_last_values_written_total", float64(s.LastValuesWritten))
		emit("telemetryd_live_relay_last_value_errors_total", float64(s.LastValueErrors))
		emit("telemetryd_live_relay_last_values_loaded_total", float64(s.LastValuesLoaded))
		emit("telemetryd_live_relay_catchup_readings_total", float64(s.CatchupReadings))
		emit("telemetryd_live_relay_series_not_kept_total", float64(s.SeriesNotKept))
	}
	if h := c.src.hub; h != nil {
		// The Hub answers from its own goroutine; a scrape never waits long
		// for it (on timeout Stats returns the atomic counters only).
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		s := h.Stats(ctx)
		cancel()
		emit("telemetryd_live_subscribers", float64(s.Clients))
		emit("telemetryd_live_subscriptions", float64(s.Subscriptions))
		emit("telemetryd_live_series", float64(s.Series))
		emit("telemetryd_live_published_batches_total", float64(s.Published))
		emit("telemetryd_live_inbox_full_batches_total", float64(s.InboxFullBatches))
		emit("telemetryd_live_conflated_readings_total", float64(s.InboxConflated), "inbox")
		emit("telemetryd_live_conflated_readings_total", float64(s.Conflated), "dashboard")
		emit("telemetryd_live_gap_readings_total", float64(s.GapReadings))
		emit("telemetryd_live_backlogged_clients", float64(s.Backlogged))
		emit("telemetryd_live_snapshot_chunks_total", float64(s.SnapshotChunks))
		emit("telemetryd_live_deliveries_total", float64(s.Deliveries))
		emit("telemetryd_live_slow_clients_dropped_total", float64(s.SlowClientsDropped))
		emit("telemetryd_live_series_not_remembered_total", float64(s.SeriesNotRemembered))
	}
	emitLiveProtocol(emit, c.src.hub, c.src.dash) // live.go
}

// constHistogram converts a telemetry histogram (per-bucket counts, in
// durations) to a Prometheus one (cumulative counts, in seconds).
func constHistogram(d *prometheus.Desc, s telemetry.HistogramSnapshot) prometheus.Metric {
	buckets := make(map[float64]uint64, len(s.Bounds))
	var cum uint64
	for i, b := range s.Bounds {
		cum += s.Counts[i]
		buckets[b.Seconds()] = cum
	}
	return prometheus.MustNewConstHistogram(d, s.Count, s.Sum.Seconds(), buckets)
}
