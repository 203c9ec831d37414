package live

import (
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/internal/testsupport"
	"github.com/telemetryd/telemetryd/telemetry"
)

func tg(k, v string) telemetry.Tag { return telemetry.Tag{Key: k, Value: v} }

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testsupport.Eventually(t, 30*time.Second, what, cond) // generous: a loaded CI machine runs these under -race
}
