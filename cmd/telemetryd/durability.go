package main

import (
	"fmt"
	"log/slog"

	"github.com/telemetryd/telemetryd/bridge"
	"github.com/telemetryd/telemetryd/storage"
)

var _ bridge.Sink = (*storage.Durable)(nil)
var _ bridge.DeadLetterer = (*storage.Durable)(nil)

// openDurable puts the disk spool and the dead letters between the bridge
// and InfluxDB. It reports what recovery found in the spool.
func openDurable(cfg config, store *storage.Influx, log *slog.Logger) (*storage.Durable, func(), error) {
	sp, rep, err := storage.OpenSpool(spoolPath(cfg), storage.SpoolConfig{MaxBytes: int64(cfg.SpoolMaxBytes)}, log)
	if err != nil {
		return nil, nil, fmt.Errorf("spool: %w", err)
	}
	if rep.Records > 0 || rep.CorruptRecords > 0 {
		log.Warn("spool recovered records from the previous run; replaying them",
			"records", rep.Records, "bytes", rep.Bytes, "corrupt_records", rep.CorruptRecords, "corrupt_bytes", rep.CorruptBytes)
	}
	dead := newDeadLetters(cfg) // deadletters.go
	d := storage.NewDurable(store, sp, dead, storage.DurableConfig{DirectTimeout: cfg.SpoolAfter}, log)
	return d, func() { _ = sp.Close() }, nil
}
