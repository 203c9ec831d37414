package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"

	"github.com/telemetryd/telemetryd/storage"
)

// spoolReplayCommand is `telemetryd spool-replay -data-dir DIR [flags]`:
// it writes to InfluxDB what an instance left in its disk spool — one that
// died and is not coming back — from any host that can read DIR, and
// returns once the spool is empty. It takes the data dir's lock, so it
// cannot run against a live instance's spool (nor two of it at once); and
// it takes the service's own flags, so -influx-* mean what they mean to the
// service. Lines InfluxDB refuses for good go to DIR's dead letters, as
// the service's own replay would put them. Interrupted (Ctrl-C, InfluxDB
// down), it leaves what it did not write in the spool; run it again.
func spoolReplayCommand(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) error {
	if slices.Contains(args, "-h") || slices.Contains(args, "-help") || slices.Contains(args, "--help") {
		fmt.Fprintln(stderr, "usage: telemetryd spool-replay -data-dir DIR [-influx-url U -influx-bucket B -influx-token T ...]\n\nReplays the disk spool under DIR (an instance's -data-dir) to InfluxDB and\nreturns once it is empty. DIR must not be in use by a running telemetryd.\nEvery service flag is accepted; the -influx-* ones are used.")
		return flag.ErrHelp
	}
	cfg, err := parseConfig(args, lookupEnv, stderr)
	if err != nil {
		return err
	}
	dir := spoolPath(cfg)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("no spool in %s (is -data-dir the instance's data directory?)", cfg.DataDir)
	}
	lock, err := storage.LockDir(cfg.DataDir) // never beside a live instance
	if err != nil {
		return err
	}
	defer lock.Unlock()

	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	sp, rep, err := storage.OpenSpool(dir, storage.SpoolConfig{MaxBytes: int64(cfg.SpoolMaxBytes)}, log)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	defer sp.Close()
	fmt.Fprintf(stdout, "spool %s: %d batches, %d bytes", dir, rep.Records, rep.Bytes)
	if rep.CorruptRecords > 0 {
		fmt.Fprintf(stdout, " (%d damaged records, %d bytes, skipped)", rep.CorruptRecords, rep.CorruptBytes)
	}
	fmt.Fprintln(stdout)
	if rep.Records == 0 {
		fmt.Fprintln(stdout, "nothing to replay")
		return nil
	}
	scfg, err := storageConfig(cfg) // deadletters.go: the service's InfluxDB settings
	if err != nil {
		return err
	}
	store, err := storage.Open(ctx, scfg, log)
	if err != nil {
		return err
	}
	defer store.Close()
	dead := newDeadLetters(cfg)
	d := storage.NewDurable(store, sp, dead, storage.DurableConfig{}, log)
	res, err := d.Drain(ctx)
	fmt.Fprintf(stdout, "replayed %d batches (%d bytes) to %s, bucket %s; %d left in the spool\n",
		res.Batches, res.Bytes, cfg.InfluxURL, cfg.InfluxBucket, sp.Len())
	if err != nil {
		return fmt.Errorf("replay stopped, run it again to go on: %w", err)
	}
	if n := dead.Count(); n > 0 {
		return fmt.Errorf("%d lines refused for good by InfluxDB, kept in %s (telemetryd deadletters list -data-dir %s)", n, dead.Path(), cfg.DataDir)
	}
	return nil
}

// spoolPath is the disk spool's directory under the data dir.
func spoolPath(cfg config) string { return filepath.Join(cfg.DataDir, "spool") }
