package main

import (
	"context"
	"time"

	"github.com/telemetryd/telemetryd/authguard"
)

// The public listener's handler is wrapped by an authguard.Guard (main.go):
// every endpoint that answers 401 — the device upgrade, the admin API, the
// dashboard's /v1/live and its API — counts failures per client address,
// and a blocked address gets 429 with Retry-After on all of them.

// sweepGuard forgets expired guard entries every minute until ctx is done.
func sweepGuard(ctx context.Context, g *authguard.Guard) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			g.Sweep()
		case <-ctx.Done():
			return
		}
	}
}
