package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemetryd/telemetryd/live"
	"github.com/telemetryd/telemetryd/storage"
	"github.com/telemetryd/telemetryd/telemetry"
)

var _ live.HistorySource = liveHistory{}

// liveConfig is the settings of the live stream's protocol additions.
type liveConfig struct {
	Compression    bool
	ResumeWindow   int
	ResumeTimeline int
}

func registerLiveFlags(e *envFlags, c *liveConfig) {
	e.bool(&c.Compression, "live-compression", "TELEMETRY_LIVE_COMPRESSION", true, "permessage-deflate on /v1/live for dashboards that offer it (each shared frame is compressed once)")
	e.int(&c.ResumeWindow, "live-resume-window", "TELEMETRY_LIVE_RESUME_WINDOW", 16384, "latest readings kept in memory for dashboards that resume after a reconnect")
	e.int(&c.ResumeTimeline, "live-resume-timeline", "TELEMETRY_LIVE_RESUME_TIMELINE", 262144, "latest positions remembered (device, measurement, time) so that a resuming dashboard's older missed readings are read back from InfluxDB")
}

// resumeConfig wires the live hub's resume to storage's history.
func (c liveConfig) resumeConfig(store *storage.Influx) live.ResumeConfig {
	return live.ResumeConfig{Window: c.ResumeWindow, Timeline: c.ResumeTimeline, History: liveHistory{store}}
}

// liveHistory reads a device's stored readings back for a resuming
// dashboard: the fields it has in the range, each read raw, merged into
// readings by measurement and time.
type liveHistory struct{ s *storage.Influx }

func (h liveHistory) Readings(ctx context.Context, q live.HistoryRequest) ([]telemetry.Reading, error) {
	start, stop := time.Unix(0, q.From), time.Unix(0, q.To+1)
	if stop.Sub(start) > storage.RawHistoryRange {
		return nil, fmt.Errorf("live history: %s is wider than raw history (%s)", stop.Sub(start), storage.RawHistoryRange)
	}
	series, err := h.s.Series(ctx, telemetry.SeriesQuery{Device: q.Device, Start: start, Stop: stop, Tags: q.Tags})
	if err != nil {
		return nil, fmt.Errorf("live history: %w", err)
	}
	type key struct {
		measurement string
		ts          int64
	}
	at := map[key]int{}
	var out []telemetry.Reading
	for _, sr := range series {
		hist, err := h.s.History(ctx, telemetry.HistoryQuery{
			Device: q.Device, Measurement: sr.Measurement, Field: sr.Field,
			Start: start, Stop: stop, Tags: q.Tags, MaxPoints: storage.MaxHistoryPoints,
		})
		if err != nil {
			return nil, fmt.Errorf("live history: %w", err)
		}
		if hist.Every != 0 || hist.Truncated {
			return nil, errors.New("live history: more points than one raw read returns")
		}
		for _, p := range hist.Points {
			k := key{sr.Measurement, p.Time}
			i, ok := at[k]
			if !ok {
				i = len(out)
				at[k] = i
				out = append(out, telemetry.Reading{Device: telemetry.DeviceID(q.Device), Measurement: sr.Measurement, Time: p.Time})
			}
			out[i].Fields = append(out[i].Fields, telemetry.Field{Name: sr.Field, Value: p.Value})
		}
	}
	slices.SortStableFunc(out, func(a, b telemetry.Reading) int {
		switch {
		case a.Time < b.Time:
			return -1
		case a.Time > b.Time:
			return 1
		}
		return 0
	})
	return out, nil
}

// liveProtocolMetricDefs are the metrics of compression, resume and the
// persisted watermark.
func liveProtocolMetricDefs() []metricDef {
	c := prometheus.CounterValue
	return []metricDef{
		{"telemetryd_live_compressed_frames_total", "Distinct frames compressed for dashboards with permessage-deflate (each once, however many sockets it went to).", c, nil},
		{"telemetryd_live_resumes_total", "Subscriptions that asked to resume from a position.", c, nil},
		{"telemetryd_live_resume_resets_total", "Resumes answered with a reset and a snapshot (position unknown or too old, history unavailable).", c, nil},
		{"telemetryd_live_readings_replayed_total", "Readings replayed to resuming subscriptions, from memory and from InfluxDB.", c, nil},
		{"telemetryd_live_readings_replayed_from_history_total", "Readings replayed to resuming subscriptions that were read back from InfluxDB.", c, nil},
		{"telemetryd_live_durable_dropped_total", "Storage completions not applied to the persisted watermark because the hub was behind.", c, nil},
	}
}

func emitLiveProtocol(emit func(name string, v float64, labels ...string), hub *live.Hub, dash *live.Dashboards) {
	if dash != nil {
		emit("telemetryd_live_compressed_frames_total", float64(dash.CompressedFrames()))
	}
	if hub == nil {
		return
	}
	s := hub.ResumeStats()
	emit("telemetryd_live_resumes_total", float64(s.Resumes))
	emit("telemetryd_live_resume_resets_total", float64(s.ResumeResets))
	emit("telemetryd_live_readings_replayed_total", float64(s.ReadingsReplayed))
	emit("telemetryd_live_readings_replayed_from_history_total", float64(s.ReadingsFromHistory))
	emit("telemetryd_live_durable_dropped_total", float64(s.DurableDropped))
}
