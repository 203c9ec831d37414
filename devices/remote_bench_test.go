package devices

import (
	"fmt"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/telemetry"
)

// BenchmarkSyncFullReload: comparing a full reload with an unchanged
// registry (what every change-feed reconnection costs once the store has
// answered; authentication does not wait for it, only for what changed).
func BenchmarkSyncFullReload(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			r := openTestRegistry(b, b.TempDir()+"/registry.db", Config{})
			defer r.Close()
			created := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
			var st State
			for i := range n {
				id := telemetry.DeviceID(fmt.Sprintf("01900000-0000-7000-8000-%012d", i))
				st.Devices = append(st.Devices, Device{ID: id, Name: "d", Kind: KindDevice, Labels: map[string]string{"site": "s"}, CreatedAt: created})
				st.Credentials = append(st.Credentials, Credential{Hash: HashToken(fmt.Sprint("tdv_", i)), Owner: string(id), CreatedAt: created})
			}
			r.wmu.Lock()
			defer r.wmu.Unlock()
			r.syncLocked(st, Changes{All: true})
			b.ResetTimer()
			for b.Loop() {
				if ev := r.syncLocked(st, Changes{All: true}); len(ev) != 0 {
					b.Fatalf("%d events for an unchanged registry", len(ev))
				}
			}
		})
	}
}
