package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/ingest/mqtttest"
	"github.com/telemetryd/telemetryd/storage"
	"github.com/telemetryd/telemetryd/storage/influxtest"
)

// Fault tests for durable delivery (issue 4). Each drives WebSocket and
// MQTT devices through a fault and then checks that every acknowledged
// reading is in InfluxDB exactly once. Outages are short by default; set
// TELEMETRY_FAULT_LONG=1 for the full-length versions.

// The MQTT devices are listed too: telemetryd drops messages of unknown devices.
var wsTokens = []string{"ws-a", "tok-a", "ws-b", "tok-b", "ws-c", "tok-c", "poisoner", "tok-p", "mqtt-a", "tok-mqtt-a", "mqtt-b", "tok-mqtt-b"}

func startFleet(t *testing.T, f *fleet, wsURL func() string, brokerURL string) {
	for i := 0; i < 3; i++ {
		f.addWS(wsTokens[2*i], wsTokens[2*i+1], wsURL, 15*time.Millisecond)
	}
	if brokerURL != "" {
		f.addMQTT("mqtt-a", brokerURL, 15*time.Millisecond)
		f.addMQTT("mqtt-b", brokerURL, 15*time.Millisecond)
	}
}

// waitAcks waits until at least n more readings are acknowledged.
func (f *fleet) waitMoreAcks(t *testing.T, n int, within time.Duration) {
	t.Helper()
	start := f.ackedCount()
	eventually(t, within, fmt.Sprintf("%d more acknowledgements", n), func() bool { return f.ackedCount() >= start+n })
}

func TestFaultInfluxKilledAndFrozen(t *testing.T) {
	for _, mode := range []string{"kill", "freeze"} {
		t.Run(mode, func(t *testing.T) {
			influx := influxtest.Start(t)
			broker := mqtttest.Start(t, mqtttest.Options{})
			svc := startService(t, influx, broker, tokensFile(t, wsTokens...), "-spool-after", "300ms", "-influx-timeout", "1s")
			waitReady(t, svc)
			f := newFleet(t)
			startFleet(t, f, func() string { return svc.ws("/v1/ingest") }, broker.URL())
			f.waitMoreAcks(t, 50, 20*time.Second)
			if mode == "kill" {
				influx.Kill(t)
			} else {
				influx.Freeze(t)
			}
			// Devices keep streaming through the outage: acks continue,
			// because batches are fsynced to the spool.
			f.waitMoreAcks(t, 100, 20*time.Second)
			waitMetric(t, svc, "batches spooled", atLeast(1), "telemetryd_storage_spooled_writes_total")
			waitMetric(t, svc, "spool depth reported", atLeast(1), "telemetryd_spool_records")
			time.Sleep(faultDuration(3*time.Second, 20*time.Second)) // the outage itself
			f.waitMoreAcks(t, 50, 20*time.Second)
			if mode == "kill" {
				influx.Restart(t)
			} else {
				influx.Thaw(t)
			}
			f.waitMoreAcks(t, 50, 20*time.Second)
			f.finish()
			f.verify(t, influx, 60*time.Second)
		})
	}
}

// flakyInflux sits in front of InfluxDB: it answers 503/429 with
// Retry-After for a while, and, like InfluxDB 1.8 on a bad line, drops
// every line mentioning "poison" and answers 400 "partial write" after
// storing the rest.
type flakyInflux struct {
	proxy    *httputil.ReverseProxy
	failing  atomic.Bool
	refusals atomic.Int64
}

func (p *flakyInflux) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasSuffix(r.URL.Path, "/write") {
		p.proxy.ServeHTTP(w, r)
		return
	}
	if p.failing.Load() {
		n := p.refusals.Add(1)
		w.Header().Set("Retry-After", "1")
		w.Header().Set("X-Influxdb-Error", "overloaded")
		if n%2 == 0 {
			http.Error(w, `{"error":"too many requests"}`, http.StatusTooManyRequests)
		} else {
			http.Error(w, `{"error":"service unavailable"}`, http.StatusServiceUnavailable)
		}
		return
	}
	body, _ := io.ReadAll(r.Body)
	var keep, dropped [][]byte
	for _, l := range bytes.SplitAfter(body, []byte("\n")) {
		if bytes.Contains(l, []byte("poison=")) {
			dropped = append(dropped, l)
		} else if len(l) > 0 {
			keep = append(keep, l)
		}
	}
	if len(dropped) == 0 {
		r.Body = io.NopCloser(bytes.NewReader(body))
		p.proxy.ServeHTTP(w, r)
		return
	}
	if len(keep) > 0 {
		req, _ := http.NewRequest(http.MethodPost, r.URL.String(), bytes.NewReader(bytes.Join(keep, nil)))
		req.Header = r.Header.Clone()
		rec := httptest.NewRecorder()
		p.proxy.ServeHTTP(rec, req)
		if rec.Code/100 != 2 {
			w.WriteHeader(rec.Code)
			_, _ = w.Write(rec.Body.Bytes())
			return
		}
	}
	msg := fmt.Sprintf("partial write: unable to parse '%s': poisoned dropped=%d", bytes.TrimSpace(dropped[0]), len(dropped))
	w.Header().Set("X-Influxdb-Error", msg)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	fmt.Fprintf(w, `{"error":%q}`, msg)
}

func TestFaultInfluxRetryableStatusesAndBadLines(t *testing.T) {
	influx := influxtest.Start(t)
	broker := mqtttest.Start(t, mqtttest.Options{})
	target, _ := url.Parse(influx.URL())
	flaky := &flakyInflux{proxy: httputil.NewSingleHostReverseProxy(target)}
	front := httptest.NewServer(flaky)
	t.Cleanup(front.Close)
	dataDir := t.TempDir()
	svc := startService(t, influx, broker, tokensFile(t, wsTokens...),
		"-influx-url", front.URL, "-influx-gzip=false", "-data-dir", dataDir, "-spool-after", "500ms")
	waitReady(t, svc)
	f := newFleet(t)
	startFleet(t, f, func() string { return svc.ws("/v1/ingest") }, broker.URL())

	// A device whose readings InfluxDB refuses for good.
	poisoner := mustDialWS(t, svc.ws("/v1/ingest"), bearer("tok-p"))
	sendPoison := func(seq int) {
		poisoner.send(t, fmt.Sprintf(`{"seq":%d,"ts":%d,"metrics":{"poison":%d}}`, seq, f.baseTS+int64(seq), seq))
	}
	f.waitMoreAcks(t, 50, 20*time.Second)
	sendPoison(1)
	flaky.failing.Store(true)
	sendPoison(2) // refused while InfluxDB answers 429/503: spooled, replayed, then dead-lettered
	f.waitMoreAcks(t, 50, 20*time.Second)
	eventually(t, 20*time.Second, "some 429/503 answers", func() bool { return flaky.refusals.Load() >= 3 })
	flaky.failing.Store(false)
	f.waitMoreAcks(t, 50, 20*time.Second)
	f.finish()
	f.verify(t, influx, 60*time.Second)

	dlPath := filepath.Join(dataDir, "deadletters.jsonl")
	var letters []storage.DeadLetter
	eventually(t, 20*time.Second, "both poisoned readings dead-lettered", func() bool {
		letters, _ = storage.ReadDeadLetters(dlPath)
		return len(letters) == 2
	})
	for _, l := range letters {
		if !strings.Contains(l.Line, "poison=") || !strings.Contains(l.Error, "partial write") || l.Time.IsZero() {
			t.Errorf("dead letter %+v", l)
		}
	}
	if n := influx.CountPoints(t, testDB, "telemetry", "poison"); n != 0 {
		t.Fatalf("%d poisoned readings stored", n)
	}
	waitMetric(t, svc, "dead letters counted", eq(2), "telemetryd_dead_letters_total")
	waitMetric(t, svc, "spool drained", eq(0), "telemetryd_spool_records")
}

func TestFaultServiceDownWhileMQTTDevicesPublish(t *testing.T) {
	influx := influxtest.Start(t)
	broker := mqtttest.Start(t, mqtttest.Options{})
	tokens := tokensFile(t, wsTokens...)
	svc := startService(t, influx, broker, tokens)
	waitReady(t, svc)
	f := newFleet(t)
	f.addMQTT("mqtt-a", broker.URL(), 10*time.Millisecond)
	f.addMQTT("mqtt-b", broker.URL(), 10*time.Millisecond)
	f.waitMoreAcks(t, 50, 20*time.Second)
	svc.stop(t)
	// The broker keeps acknowledging devices and queues for telemetryd's
	// persistent session while it is away.
	f.waitMoreAcks(t, 200, 20*time.Second)
	time.Sleep(faultDuration(2*time.Second, 10*time.Second))
	svc2 := startService(t, influx, broker, tokens) // same MQTT client id: same session
	waitReady(t, svc2)
	f.waitMoreAcks(t, 50, 20*time.Second)
	f.finish()
	f.verify(t, influx, 60*time.Second)
}

func procArgs(t *testing.T, influx *influxtest.Server, broker *mqtttest.Broker, dataDir string, extra ...string) []string {
	return append([]string{
		"-influx-url", influx.URL(), "-influx-bucket", testDB + "/autogen",
		"-mqtt-url", broker.URL(), "-mqtt-client-id", "telemetryd-proc-" + t.Name(),
		"-device-tokens", tokensFile(t, wsTokens...), "-data-dir", dataDir,
		"-shutdown-grace", "10s", "-spool-after", "300ms", "-influx-timeout", "1s", "-drain-delay", "0",
	}, extra...)
}

func TestFaultSIGTERMMidStream(t *testing.T) {
	influx := influxtest.Start(t)
	broker := mqtttest.Start(t, mqtttest.Options{})
	p := startProc(t, procArgs(t, influx, broker, t.TempDir())...)
	p.waitReady()
	f := newFleet(t)
	startFleet(t, f, func() string { return p.ws("/v1/ingest") }, broker.URL())
	f.waitMoreAcks(t, 100, 20*time.Second)
	took, err := p.term()
	if err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	if took > 10*time.Second {
		t.Fatalf("took %s to exit, grace is 10s", took)
	}
	eventually(t, 10*time.Second, "devices saw 1001", func() bool { return count(&f.closes, uint16(1001)) >= 3 })
	p.start() // devices reconnect and resend; MQTT messages queued at the broker arrive
	f.waitMoreAcks(t, 50, 20*time.Second)
	f.finish()
	f.verify(t, influx, 60*time.Second)
	t.Logf("graceful shutdown took %s", took)
}

func TestFaultKill9(t *testing.T) {
	influx := influxtest.Start(t)
	broker := mqtttest.Start(t, mqtttest.Options{})
	p := startProc(t, procArgs(t, influx, broker, t.TempDir())...)
	p.waitReady()
	f := newFleet(t)
	startFleet(t, f, func() string { return p.ws("/v1/ingest") }, broker.URL())
	for trial := range 3 {
		outage := trial == 1 // one crash while InfluxDB is down: acked data sits in the spool
		if outage {
			influx.Kill(t)
		}
		f.waitMoreAcks(t, 50+trial*37, 20*time.Second)
		p.kill9()
		if outage {
			influx.Restart(t)
		}
		p.start()
	}
	f.waitMoreAcks(t, 50, 20*time.Second)
	f.finish()
	f.verify(t, influx, 60*time.Second)
}

func TestFaultSpoolFull(t *testing.T) {
	influx := influxtest.Start(t)
	broker := mqtttest.Start(t, mqtttest.Options{})
	svc := startService(t, influx, broker, tokensFile(t, wsTokens...),
		"-spool-max-bytes", "16384", "-spool-after", "200ms", "-influx-timeout", "1s", "-queue-frames", "32")
	waitReady(t, svc)
	f := newFleet(t)
	startFleet(t, f, func() string { return svc.ws("/v1/ingest") }, broker.URL())
	f.waitMoreAcks(t, 50, 20*time.Second)
	influx.Kill(t)
	waitMetric(t, svc, "a write refused by the full spool", atLeast(1), "telemetryd_spool_full_total")
	// From now until InfluxDB is back no frame a device sends may be
	// acknowledged, and that is certain, not a matter of waiting long
	// enough: such a frame is accepted after the spool refused a batch, so
	// it lands in a later batch; acks follow batch order; and the refused
	// batch cannot fit before the spool drains to InfluxDB. (Frames sent
	// before may still be acked: their batch may have reached the spool
	// before it filled.) Every ack is checked as it arrives (forbidAcks),
	// so one that breaks the rule is caught whenever it comes.
	f.forbidAcks()
	// What shows the service took in those frames and held them: every
	// device is refused one sent later, for back-pressure. Its earlier
	// frames were consumed before it, in the socket's order.
	eventually(t, 60*time.Second, "every WebSocket device told overloaded for a frame sent after the spool filled", func() bool {
		if early := f.forbidden(); len(early) > 0 {
			t.Fatalf("%d frames sent after the spool filled acknowledged while it was full, e.g. %v", len(early), early[0])
		}
		return f.refusedAll()
	})
	if early := f.allowAcks(); len(early) > 0 {
		t.Fatalf("%d frames sent after the spool filled acknowledged while it was full, e.g. %v", len(early), early[0])
	}
	influx.Restart(t)
	f.waitMoreAcks(t, 100, 60*time.Second) // ingest resumes once the spool drains
	f.finish()
	f.verify(t, influx, 60*time.Second)
}

func TestFaultCorruptSpoolTail(t *testing.T) {
	influx := influxtest.Start(t)
	broker := mqtttest.Start(t, mqtttest.Options{})
	dataDir := t.TempDir()
	p := startProc(t, procArgs(t, influx, broker, dataDir)...)
	p.waitReady()
	f := newFleet(t)
	startFleet(t, f, func() string { return p.ws("/v1/ingest") }, "")
	f.waitMoreAcks(t, 30, 20*time.Second)
	influx.Kill(t)
	f.waitMoreAcks(t, 100, 20*time.Second) // acknowledged from the spool
	p.kill9()
	// A torn write: half a record at the end of the newest segment.
	segs, _ := filepath.Glob(filepath.Join(dataDir, "spool", "spool-*.log"))
	if len(segs) == 0 {
		t.Fatal("no spool segment")
	}
	fh, err := os.OpenFile(segs[len(segs)-1], os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = fh.Write([]byte{200, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 'm', ' '})
	fh.Close()
	influx.Restart(t)
	p.start()
	eventually(t, 10*time.Second, "damage reported", func() bool {
		return strings.Contains(p.log.String(), `"corrupt_records":1`)
	})
	f.finish()
	f.verify(t, influx, 60*time.Second)
}
