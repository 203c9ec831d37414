package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"

	"github.com/telemetryd/telemetryd/devices"
)

// The registry's store is chosen here, once: -registry-url (a postgres://
// URL) selects the PostgreSQL registry shared by a cluster of instances;
// empty keeps the embedded SQLite file under -data-dir.

// openRegistryStore opens the store cfg selects and says where it is (for
// logs: a URL without its password).
func openRegistryStore(ctx context.Context, cfg config, log *slog.Logger) (devices.Store, string, error) {
	if cfg.RegistryURL == "" {
		s, err := devices.OpenSQLite(ctx, registryPath(cfg))
		return s, registryPath(cfg), err
	}
	where, err := registryURLForLog(cfg.RegistryURL)
	if err != nil {
		return nil, "", err
	}
	s, err := devices.OpenPostgres(ctx, cfg.RegistryURL, log)
	if err != nil {
		return nil, "", fmt.Errorf("registry %s: %w", where, err)
	}
	return s, where, nil
}

// registryURLForLog checks a -registry-url and returns it without its
// password.
func registryURLForLog(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Host == "" {
		return "", errors.New("-registry-url (TELEMETRY_REGISTRY_URL) must be a postgres://user:password@host:port/database URL, or empty for the SQLite registry under -data-dir")
	}
	return u.Redacted(), nil
}

// registryMigrateCommand is `telemetryd registry-migrate`: it moves a SQLite
// registry into PostgreSQL.
func registryMigrateCommand(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("telemetryd registry-migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir, _ := lookupEnv("TELEMETRY_DATA_DIR")
	if dataDir == "" {
		dataDir = "./data"
	}
	from := fs.String("from", registryPath(config{DataDir: dataDir}), "SQLite registry file to read (default: registry.db under TELEMETRY_DATA_DIR)")
	toDef, _ := lookupEnv("TELEMETRY_REGISTRY_URL")
	to := fs.String("to", toDef, "PostgreSQL URL to write (default: TELEMETRY_REGISTRY_URL)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, `usage: telemetryd registry-migrate [-from data/registry.db] -to postgres://user:password@host/db

Copies every device (labels, gateway assignments, revocations, last-seen
times), viewer (scopes) and token hash of a SQLite registry into an empty
PostgreSQL registry, in one transaction; tokens keep working. A target that
already holds exactly the same registry is left as it is (a re-run); any
other non-empty target is refused. Stop the SQLite instance first, so that
nothing changes during the copy.

flags:`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 || *to == "" {
		fs.Usage()
		return flag.ErrHelp
	}
	where, err := registryURLForLog(*to)
	if err != nil {
		return err
	}
	// OpenSQLite creates a missing file: a typo must not copy an empty registry.
	if _, err := os.Stat(*from); err != nil {
		return fmt.Errorf("source registry: %w", err)
	}
	src, err := devices.OpenSQLite(ctx, *from)
	if err != nil {
		return err
	}
	defer src.Close()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	dst, err := devices.OpenPostgres(ctx, *to, log)
	if err != nil {
		return fmt.Errorf("target registry %s: %w", where, err)
	}
	defer dst.Close()
	res, err := devices.CopyStore(ctx, dst, src)
	if err != nil {
		return err
	}
	verb := "copied"
	if res.AlreadyCopied {
		verb = "already present, nothing written:"
	}
	fmt.Fprintf(stdout, "%s %d devices, %d viewers, %d credentials from %s to %s\n",
		verb, res.Devices, res.Viewers, res.Credentials, *from, where)
	return nil
}
