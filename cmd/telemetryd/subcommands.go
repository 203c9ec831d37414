package main

import (
	"context"
	"io"
)

// subcommandFunc runs `telemetryd <name> args...`.
type subcommandFunc func(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) error

// subcommands lists the operator commands besides the service itself
// (`telemetryd [flags]`). Add one entry per command.
func subcommands() map[string]subcommandFunc {
	return map[string]subcommandFunc{
		"deadletters":  deadlettersCommand,
		"spool-replay": spoolReplayCommand, // spoolreplay.go: a dead instance's spool
		// Identity (admin_cli.go).
		"devices":        devicesCommand,
		"viewers":        viewersCommand,
		"mosquitto-auth": mosquittoAuthCommand,
		// Cluster (registrystore.go).
		"registry-migrate": registryMigrateCommand,
		// Operations (version.go, healthcheck.go, configref.go).
		"version":          versionCommand,
		"healthcheck":      healthcheckCommand,
		"config-reference": configReferenceCommand,
	}
}
