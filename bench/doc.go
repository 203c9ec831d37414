// Command bench is telemetryd's benchmark harness (`make bench`, issue 8).
//
// It starts the real stack — InfluxDB 1.8, Mosquitto and a telemetryd
// child process — on free loopback ports in a temporary directory, plus a
// "raw" server (this binary re-executed with TELEMETRY_BENCH_ROLE=rawserver)
// that does with bare gws what the service does with its pipeline. Every
// scenario measures the service and its raw baseline in the same run, on
// the same machine, with the same client code, and reports the ratio: on
// shared machines absolute numbers drift, ratios much less.
//
// Scenarios (see docs/performance.md for what each one measures and why):
//
//	P1 readings/s acked, WebSocket gateways sending 100-reading batches
//	   vs a bulk loader writing pre-built 5 000-line gzip batches to InfluxDB
//	P2 MQTT messages/s consumed, stored and acked (QoS 1)
//	   vs a bare paho subscriber that counts and acks (its own process)
//	P2d the same consumers draining a backlog queued in the broker for
//	   their offline persistent sessions
//	P3 WebSocket single-reading frames/s acked vs a raw gws counter
//	   (P2, P2d and P3 are judged by CPU per message or frame against the
//	   baseline's own process, the rate ratio is information)
//	P4 dashboard deliveries/s to 1 000 subscribers vs a gws Broadcaster loop
//	P4z the same fan-out with permessage-deflate vs without, in the same run
//	   (deliveries/s, wire bytes and telemetryd CPU per delivery)
//	P4r resume cost: readings/s replayed to a reconnecting dashboard
//	P5 device→dashboard latency at half the P2 rate
//	   vs bare MQTT pub→sub latency plus a gws echo round trip
//	P6 RSS per idle device WebSocket vs a raw gws server
//	P7 CPU per reading decode+normalize+encode (in process)
//	   vs encoding/json into a map + influxdb-client-go write.Point
//	P8 2× overload: RSS bounded, drops counted, latency recovery
//	P9 readings/s acked, HTTP line protocol (/api/v2/write) vs InfluxDB's /write
//	PC cluster mode: three instances (MQTT share group, NATS fan-out) vs
//	   one on the same load: CPU per reading per instance and
//	   cross-instance device→dashboard p99
//
// The harness writes bench/out/results.json (and results.md), a CPU and a
// heap profile of telemetryd per scenario (bench/out/P*.cpu.pprof,
// P*.heap.pprof, with a `go tool pprof -top` summary), and the logs of
// every process. Nothing is asserted about timing except in the table's
// pass/fail column; -smoke runs every scenario for a second or so with tiny
// counts, which CI uses so that the harness cannot rot.
//
// Ownership: the harness owns its children and kills them on exit (also
// through Pdeathsig if it dies). Every client goroutine ends with its
// scenario's context.
package main
