package live

import (
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/telemetry"
)

func tg(k, v string) telemetry.Tag { return telemetry.Tag{Key: k, Value: v} }

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
