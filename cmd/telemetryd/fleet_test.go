package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/lxzan/gws"

	"github.com/telemetryd/telemetryd/storage/influxtest"
)

// The fault tests drive a small fleet: WebSocket devices that behave like
// real ones (per-device sequence numbers and device timestamps, reconnect
// with backoff, resend what was not acknowledged) and MQTT devices that
// publish at QoS 1. At the end every acknowledged reading must be in
// InfluxDB exactly once.

const faultMeasurement = "fault"

type readingKey struct {
	device string
	seq    int
}

type fleet struct {
	t        *testing.T
	baseTS   int64 // ms
	mu       sync.Mutex
	acked    map[readingKey]bool
	sent     atomic.Int64
	closes   sync.Map // close code → count
	errCodes sync.Map // error code → count
	stop     chan struct{}
	wg       sync.WaitGroup

	// A no-ack check (forbidAcks): under mu. floor[d] is the newest seq
	// WebSocket device d had sent when the check began; an ack for a later
	// seq is recorded in early, an overloaded answer in refused.
	ws      []*wsDevice
	floor   map[string]int
	early   []readingKey
	refused map[string]int
}

func newFleet(t *testing.T) *fleet {
	return &fleet{t: t, baseTS: time.Now().Add(-time.Hour).UnixMilli(), acked: map[readingKey]bool{}, stop: make(chan struct{})}
}

func (f *fleet) ack(dev string, seq int) {
	f.mu.Lock()
	f.acked[readingKey{dev, seq}] = true
	if floor, ok := f.floor[dev]; ok && seq > floor {
		f.early = append(f.early, readingKey{dev, seq})
	}
	f.mu.Unlock()
}

// overloaded notes an overloaded answer to WebSocket device dev's frame seq.
func (f *fleet) overloaded(dev string, seq int) {
	f.mu.Lock()
	if floor, ok := f.floor[dev]; ok && seq > floor {
		f.refused[dev]++
	}
	f.mu.Unlock()
}

// forbidAcks begins a no-ack check: from now until allowAcks, no
// WebSocket device may be acknowledged a frame it sends from now on. The
// check is made on every ack as it arrives, so it needs no waiting: an
// ack that breaks it is recorded whenever it comes, and allowAcks reports
// it.
func (f *fleet) forbidAcks() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.floor, f.early, f.refused = map[string]int{}, nil, map[string]int{}
	for _, d := range f.ws {
		f.floor[d.id] = int(d.lastSent.Load())
	}
}

// refusedAll reports whether every WebSocket device was answered
// overloaded for a frame it sent since forbidAcks.
func (f *fleet) refusedAll() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, d := range f.ws {
		if f.refused[d.id] == 0 {
			return false
		}
	}
	return true
}

// forbidden returns the acks that broke the check so far.
func (f *fleet) forbidden() []readingKey {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.early)
}

// allowAcks ends the check and returns the acks that broke it.
func (f *fleet) allowAcks() []readingKey {
	f.mu.Lock()
	defer f.mu.Unlock()
	early := f.early
	f.floor, f.early, f.refused = nil, nil, nil
	return early
}

func (f *fleet) ackedCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.acked)
}

func count(m *sync.Map, k any) int64 {
	v, _ := m.Load(k)
	n, _ := v.(*atomic.Int64)
	if n == nil {
		return 0
	}
	return n.Load()
}

func inc(m *sync.Map, k any) {
	v, _ := m.LoadOrStore(k, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

func faultPayload(seq int, ts int64) string {
	return fmt.Sprintf(`{"seq":%d,"ts":%d,"measurement":%q,"metrics":{"n":{"value":%d,"type":"int"}}}`, seq, ts, faultMeasurement, seq)
}

// wsDevice sends one frame every interval to the URL returned by url()
// (which may change across service restarts).
type wsDevice struct {
	f        *fleet
	id       string
	token    string
	url      func() string
	interval time.Duration
	lastSent atomic.Int64 // newest seq, stored before it is sent

	mu      sync.Mutex
	pending map[int]int64 // seq → ts, sent but not acked
	conn    *gws.Conn
	closed  chan struct{} // of the current connection; only run() touches these two
}

// wsSession handles one connection of a wsDevice.
type wsSession struct {
	gws.BuiltinEventHandler
	d      *wsDevice
	closed chan struct{}
}

func (f *fleet) addWS(id, token string, url func() string, interval time.Duration) {
	d := &wsDevice{f: f, id: id, token: token, url: url, interval: interval, pending: map[int]int64{}}
	f.mu.Lock()
	f.ws = append(f.ws, d)
	f.mu.Unlock()
	f.wg.Add(1)
	go d.run()
}

func (s *wsSession) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	d := s.d
	var msg ackOrError
	if err := json.Unmarshal(m.Bytes(), &msg); err != nil {
		return
	}
	if msg.Ack != nil {
		d.mu.Lock()
		delete(d.pending, int(*msg.Ack))
		d.mu.Unlock()
		d.f.ack(d.id, int(*msg.Ack))
	}
	if msg.Error != nil {
		inc(&d.f.errCodes, msg.Error.Code)
		if msg.Error.Code == "overloaded" && msg.Error.Seq != nil {
			d.f.overloaded(d.id, int(*msg.Error.Seq))
		}
	}
}

func (s *wsSession) OnClose(_ *gws.Conn, err error) {
	if ce, ok := err.(*gws.CloseError); ok {
		inc(&s.d.f.closes, ce.Code)
	}
	close(s.closed)
}

func (d *wsDevice) connect() bool {
	sess := &wsSession{d: d, closed: make(chan struct{})}
	conn, _, err := gws.NewClient(sess, &gws.ClientOption{Addr: d.url(), RequestHeader: bearer(d.token)})
	if err != nil {
		return false
	}
	d.conn, d.closed = conn, sess.closed
	go conn.ReadLoop()
	// Resend everything not acknowledged, with its original timestamp.
	d.mu.Lock()
	resend := make(map[int]int64, len(d.pending))
	for s, ts := range d.pending {
		resend[s] = ts
	}
	d.mu.Unlock()
	for s, ts := range resend {
		_ = conn.WriteString(faultPayload(s, ts))
	}
	return true
}

func (d *wsDevice) run() {
	defer d.f.wg.Done()
	backoff := 20 * time.Millisecond
	seq := 0
	tick := time.NewTicker(d.interval)
	defer tick.Stop()
	for {
		if !d.connect() {
			select {
			case <-d.f.stop:
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 500*time.Millisecond)
			continue
		}
		backoff = 20 * time.Millisecond
	send:
		for {
			select {
			case <-d.f.stop:
				d.waitAcks()
				_ = d.conn.WriteClose(1000, nil)
				return
			case <-d.closed:
				break send
			case <-tick.C:
				seq++
				ts := d.f.baseTS + int64(seq)
				d.mu.Lock()
				d.pending[seq] = ts
				d.mu.Unlock()
				d.lastSent.Store(int64(seq))
				d.f.sent.Add(1)
				if err := d.conn.WriteString(faultPayload(seq, ts)); err != nil {
					break send
				}
			}
		}
	}
}

// waitAcks gives outstanding frames a moment to be acknowledged.
func (d *wsDevice) waitAcks() {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		d.mu.Lock()
		n := len(d.pending)
		d.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-d.closed:
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// addMQTT publishes at QoS 1 every interval; a reading counts as
// acknowledged when the broker's PUBACK arrives.
func (f *fleet) addMQTT(id, brokerURL string, interval time.Duration) {
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(brokerURL).SetClientID("dev-" + id).
		SetCleanSession(false).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(100 * time.Millisecond).SetMaxReconnectInterval(time.Second))
	c.Connect().WaitTimeout(10 * time.Second)
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		defer c.Disconnect(100)
		var inflight sync.WaitGroup
		defer inflight.Wait()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for seq := 1; ; seq++ {
			select {
			case <-f.stop:
				return
			case <-tick.C:
			}
			tok := c.Publish("devices/"+id+"/telemetry", 1, false, faultPayload(seq, f.baseTS+int64(seq)))
			f.sent.Add(1)
			inflight.Add(1)
			go func(seq int) {
				defer inflight.Done()
				if tok.WaitTimeout(15*time.Second) && tok.Error() == nil {
					f.ack(id, seq)
				}
			}(seq)
		}
	}()
}

// finish stops sending and waits for the devices to settle.
func (f *fleet) finish() {
	close(f.stop)
	f.wg.Wait()
}

// verify checks that every acknowledged reading is stored exactly once and
// returns (acked, stored).
func (f *fleet) verify(t *testing.T, influx *influxtest.Server, timeout time.Duration) (int, int) {
	t.Helper()
	f.mu.Lock()
	acked := make(map[readingKey]bool, len(f.acked))
	for k := range f.acked {
		acked[k] = true
	}
	f.mu.Unlock()
	var stored map[readingKey]int
	var missing []readingKey
	defer func() {
		if len(missing) > 0 {
			for _, k := range missing[:min(len(missing), 20)] {
				t.Logf("acknowledged but not stored: device %s seq %d", k.device, k.seq)
			}
			t.Logf("lost %d of %d acknowledged readings", len(missing), len(acked))
		}
	}()
	eventually(t, timeout, "every acknowledged reading stored", func() bool {
		stored = map[readingKey]int{}
		for _, s := range influx.Query(t, testDB, `SELECT "n" FROM "`+faultMeasurement+`" GROUP BY "device_id"`) {
			for _, v := range s.Values {
				n, _ := strconv.Atoi(fmt.Sprint(v[1]))
				stored[readingKey{s.Tags["device_id"], n}]++
			}
		}
		missing = missing[:0]
		for k := range acked {
			if stored[k] == 0 {
				missing = append(missing, k)
			}
		}
		return len(missing) == 0
	})
	for k, n := range stored {
		if n != 1 {
			t.Errorf("device %s seq %d stored %d times", k.device, k.seq, n)
		}
	}
	t.Logf("sent %d, acknowledged %d, stored %d, lost 0", f.sent.Load(), len(acked), len(stored))
	return len(acked), len(stored)
}

func faultDuration(short, long time.Duration) time.Duration {
	if os.Getenv("TELEMETRY_FAULT_LONG") == "1" {
		return long
	}
	return short
}

var _ = http.StatusOK
