package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"text/tabwriter"

	"github.com/telemetryd/telemetryd/storage"
)

// deadlettersCommand is `telemetryd deadletters list|replay`: it shows the
// lines InfluxDB refused for good and, once the operator fixed the cause,
// writes them again.
func deadlettersCommand(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "list" && args[0] != "replay") {
		fmt.Fprintln(stderr, "usage: telemetryd deadletters list|replay [flags]\n\n  list    print the dead letters (-json for JSON lines)\n  replay  write them to InfluxDB again; lines refused again stay")
		return flag.ErrHelp
	}
	verb, rest := args[0], args[1:]
	asJSON := false
	if i := slices.Index(rest, "-json"); i >= 0 {
		asJSON, rest = true, slices.Delete(rest, i, i+1)
	}
	// The service's own flags, so -data-dir and -influx-* mean the same here.
	cfg, err := parseConfig(rest, lookupEnv, stderr)
	if err != nil {
		return err
	}
	path := deadLetterPath(cfg)
	switch verb {
	case "list":
		letters, err := storage.ReadDeadLetters(path)
		if err != nil {
			return err
		}
		if asJSON {
			enc := json.NewEncoder(stdout)
			for _, l := range letters {
				if err := enc.Encode(l); err != nil {
					return err
				}
			}
			return nil
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TIME\tERROR\tLINE")
		for _, l := range letters {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", l.Time.Format("2006-01-02T15:04:05Z"), l.Error, l.Line)
		}
		fmt.Fprintf(tw, "\n%d dead letter(s) in %s\n", len(letters), path)
		return tw.Flush()
	default:
		log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		scfg, err := storageConfig(cfg)
		if err != nil {
			return err
		}
		store, err := storage.Open(ctx, scfg, log)
		if err != nil {
			return err
		}
		defer store.Close()
		res, err := storage.ReplayDeadLetters(ctx, newDeadLetters(cfg), store)
		fmt.Fprintf(stdout, "replayed %d, still rejected %d (kept in %s)\n", res.Replayed, res.StillRejected, path)
		if err == nil && res.StillRejected > 0 {
			err = errors.New("some lines are still rejected")
		}
		return err
	}
}

func deadLetterPath(cfg config) string { return filepath.Join(cfg.DataDir, "deadletters.jsonl") }

// newDeadLetters is the dead-letter file with its bound, as the service
// and the subcommand both use it.
func newDeadLetters(cfg config) *storage.DeadLetters {
	return storage.NewDeadLetters(deadLetterPath(cfg), int64(cfg.DeadLetterMaxBytes))
}

// storageConfig is how the service reaches InfluxDB — URL, token, org,
// bucket, timeout, gzip and TLS (-influx-ca) — the one definition that
// the service and `deadletters replay` share.
func storageConfig(cfg config) (storage.Config, error) {
	tlsConf, err := influxTLS(cfg.Sec) // clienttls.go: -influx-ca
	if err != nil {
		return storage.Config{}, err
	}
	return storage.Config{
		URL: cfg.InfluxURL, Token: cfg.InfluxToken, Org: cfg.InfluxOrg, Bucket: cfg.InfluxBucket,
		Timeout: cfg.InfluxTimeout, Gzip: mustGzip(cfg), TLS: tlsConf,
	}, nil
}
