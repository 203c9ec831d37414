package testsupport

import "github.com/telemetryd/telemetryd/telemetry"

// BenchReading is the benchmark harness's reading shape (bench/payload.go):
// one payload tag, five fields, a device time. Micro-benchmarks of every
// stage use it, so their figures describe the same work.
func BenchReading(dev string, ts int64) telemetry.Reading {
	return telemetry.Reading{
		Device:      telemetry.DeviceID(dev),
		Measurement: "environment",
		Tags:        []telemetry.Tag{{Key: "site", Value: "plant-3"}},
		Fields: []telemetry.Field{
			{Name: "temperature", Value: telemetry.Float(21.4)}, {Name: "humidity", Value: telemetry.Float(40.1)},
			{Name: "voltage", Value: telemetry.Float(3.3)}, {Name: "rssi", Value: telemetry.Float(-67)},
			{Name: "door_open", Value: telemetry.Bool(false)},
		},
		Time: ts,
	}
}
