package devices

import (
	"context"
	"fmt"
	"testing"

	"github.com/telemetryd/telemetryd/telemetry"
)

// The hot-path lookups, with 10,000 registered devices: what every
// WebSocket upgrade (AuthenticateDevice), MQTT message and WebSocket frame
// (Active) and reading (Labels, MayReportFor) costs.
func benchRegistry(b *testing.B) (*testReg, []telemetry.DeviceID, []string) {
	b.Helper()
	r := openTestRegistry(b, b.TempDir()+"/registry.db", Config{})
	b.Cleanup(func() { r.Close() })
	ctx := context.Background()
	gw, _, err := r.CreateDevice(ctx, DeviceSpec{Name: "gw", Kind: KindGateway})
	if err != nil {
		b.Fatal(err)
	}
	var ids []telemetry.DeviceID
	var toks []string
	for i := range 10000 {
		d, tok, err := r.CreateDevice(ctx, DeviceSpec{Name: fmt.Sprint("d", i), Gateway: gw.ID,
			Labels: map[string]string{"site": fmt.Sprint("plant-", i%10), "model": "m1"}})
		if err != nil {
			b.Fatal(err)
		}
		ids, toks = append(ids, d.ID), append(toks, tok)
	}
	ids = append(ids, gw.ID)
	return r, ids, toks
}

func BenchmarkRegistryHotPath(b *testing.B) {
	r, ids, toks := benchRegistry(b)
	gw := ids[len(ids)-1]
	ctx := context.Background()
	b.Run("AuthenticateDevice", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				if _, err := r.AuthenticateDevice(ctx, toks[i%len(toks)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	})
	b.Run("AuthenticateDevice/unknown", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = r.AuthenticateDevice(ctx, "tdv_unknown0000000000000000000000000000000000")
		}
	})
	b.Run("Active", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				r.Active(ids[i%len(ids)])
				i++
			}
		})
	})
	b.Run("Labels+MayReportFor", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				id := ids[i%(len(ids)-1)]
				if len(r.Labels(id)) != 2 || !r.MayReportFor(gw, id) {
					b.Fatal("wrong answer")
				}
				i++
			}
		})
	})
}

// BenchmarkCreateDevice: provisioning cost (token, PBKDF2 hash for the
// broker, one SQLite transaction with fsync).
func BenchmarkCreateDevice(b *testing.B) {
	r := openTestRegistry(b, b.TempDir()+"/registry.db", Config{})
	b.Cleanup(func() { r.Close() })
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := r.CreateDevice(ctx, DeviceSpec{Name: "d", Labels: map[string]string{"site": "p"}}); err != nil {
			b.Fatal(err)
		}
	}
}
