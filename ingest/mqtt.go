package ingest

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/telemetryd/telemetryd/ingest/payload"
	"github.com/telemetryd/telemetryd/telemetry"
)

// DeviceChecker says whether a device id from a topic is a known, active
// device. Implementations must answer from memory.
type DeviceChecker interface {
	Active(id telemetry.DeviceID) bool
}

// MQTTConfig configures the MQTT consumer. The zero value of each field
// except URL means its default.
type MQTTConfig struct {
	URL string // tcp://host:1883, ssl://host:8883, ws://…
	// Topic with one '+' standing for the device id (default "devices/+/telemetry").
	Topic string
	// ClientID must be stable so the broker keeps the session (default "telemetryd").
	ClientID string
	// ShareGroup, when set, makes every connection a member of the shared
	// subscription $share/<ShareGroup>/<Topic>, with the client id
	// <ClientID>-<index>: instances given the same group and their own
	// ClientID split the messages between them (mqttshare.go).
	ShareGroup         string
	Username, Password string
	TLS                *tls.Config
	// Connections > 1 consumes through that many clients in a shared
	// subscription ($share/<ClientID>/<Topic>) for throughput; per-device
	// order is then not preserved across clients.
	Connections int
	// Queue bounds, per connection, messages received but not yet handed
	// to the pipeline (default 16384). It should exceed the broker's
	// max_inflight_messages (10000 in deploy/mosquitto.conf); when it is
	// full, paho's reading waits (and so the broker) until there is room.
	// Its memory is bounded by the broker's max_inflight_bytes and
	// message_size_limit. Only a message still arriving while the intake
	// stops is left unacked (for the next session), counted as Overflow.
	Queue  int
	Limits payload.Limits
	// MaxMessageSize (default 256 KiB), FrameRate (messages per second per
	// device; default 100, negative: unlimited) and FrameBurst (default
	// 60×FrameRate: a minute of backlog): the WebSocket endpoint's limits
	// (mqttlimits.go).
	MaxMessageSize int
	FrameRate      float64
	FrameBurst     int
	// Devices, when set, drops (and acks, and counts) messages whose topic
	// names an unknown or revoked device.
	Devices DeviceChecker
}

func (c MQTTConfig) withDefaults() MQTTConfig {
	if c.Topic == "" {
		c.Topic = "devices/+/telemetry"
	}
	if c.ClientID == "" {
		c.ClientID = "telemetryd"
	}
	if c.Connections <= 0 {
		c.Connections = 1
	}
	if c.Queue <= 0 {
		c.Queue = 16384
	}
	return c
}

// MQTTStats are the consumer's counters.
type MQTTStats struct {
	Connected                                          int
	Messages, InvalidMessages, UnknownDevice, Overflow uint64
	// Redelivered counts messages the broker sent again (DUP): duplicates
	// of messages this or an earlier session received but did not ack.
	Redelivered                               uint64
	ReadingsAccepted, ReadingsRejected, Acked uint64
	Unacked                                   int64
}

// MQTT consumes device telemetry from a broker: QoS 1, persistent session,
// manual acks sent in receive order once the pipeline reports the message
// durable.
type MQTT struct {
	cfg       MQTTConfig
	next      telemetry.Consumer
	log       *slog.Logger
	devicePos int // index of the '+' segment in the topic
	limits    *mqttLimiter

	mu         sync.Mutex
	clients    []mqtt.Client
	conns      []*mqttConn  // per-connection counters (mqttshare.go)
	subscribed atomic.Int32 // clients connected with their subscription in place

	stop      chan struct{} // closed by Close: ack senders drain and exit
	closeOnce sync.Once
	senders   sync.WaitGroup // the ack senders, one per connection

	messages, invalid, unknownDevice, overflow atomic.Uint64
	redelivered                                atomic.Uint64
	readingsAccepted, readingsRejected, acked  atomic.Uint64
	unacked                                    atomic.Int64
}

// NewMQTT returns a consumer; Run connects it.
func NewMQTT(cfg MQTTConfig, next telemetry.Consumer, log *slog.Logger) (*MQTT, error) {
	cfg = cfg.withDefaults()
	if err := checkShareGroup(cfg.ShareGroup); err != nil {
		return nil, err
	}
	pos := -1
	for i, seg := range strings.Split(cfg.Topic, "/") {
		if seg == "+" {
			if pos >= 0 {
				return nil, fmt.Errorf("mqtt: topic %q: only one '+' (the device id) is allowed", cfg.Topic)
			}
			pos = i
		}
	}
	if pos < 0 || strings.Contains(cfg.Topic, "#") {
		return nil, fmt.Errorf("mqtt: topic %q must contain exactly one '+' for the device id and no '#'", cfg.Topic)
	}
	return &MQTT{cfg: cfg, next: next, log: log, devicePos: pos, stop: make(chan struct{}), limits: newMQTTLimiter(cfg, log.Info)}, nil
}

// Stats returns the consumer's counters.
func (m *MQTT) Stats() MQTTStats {
	return MQTTStats{
		Connected: m.connectedCount(), Messages: m.messages.Load(), InvalidMessages: m.invalid.Load(),
		UnknownDevice: m.unknownDevice.Load(), Overflow: m.overflow.Load(), Redelivered: m.redelivered.Load(),
		ReadingsAccepted: m.readingsAccepted.Load(), ReadingsRejected: m.readingsRejected.Load(),
		Acked: m.acked.Load(), Unacked: m.unacked.Load(),
	}
}

func (m *MQTT) connectedCount() int { return int(m.subscribed.Load()) }

// Connected reports whether every client is connected to the broker and
// subscribed.
func (m *MQTT) Connected() bool {
	return m.connectedCount() == m.cfg.Connections
}

// Run connects (retrying until the broker answers), subscribes on every
// (re)connect, and hands messages to the pipeline until ctx is done. It then
// stops taking messages — those not yet handed over stay unacked and the
// broker redelivers them — but keeps the connection, and each connection's
// ack sender, so that acks still owed can be sent; call Close after the
// pipeline has drained.
func (m *MQTT) Run(ctx context.Context) error {
	topic := m.cfg.subscription()
	var wg sync.WaitGroup
	for i := range m.cfg.Connections {
		conn := &mqttConn{id: m.cfg.clientID(i)}
		inbox := make(chan mqtt.Message, m.cfg.Queue)
		intakeDone := make(chan struct{})
		c := mqtt.NewClient(m.clientOptions(conn, topic, inbox, intakeDone))
		m.mu.Lock()
		m.clients = append(m.clients, c)
		m.conns = append(m.conns, conn)
		m.mu.Unlock()
		c.Connect() // ConnectRetry: keeps trying in the background
		acks := newAckSequencer(m)
		m.senders.Add(1)
		go func() {
			defer m.senders.Done()
			acks.send(m.stop)
		}()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(intakeDone)
			m.work(ctx, inbox, acks)
		}()
	}
	wg.Wait()
	return nil
}

// Close sends the PUBACKs already due, then disconnects from the broker.
// Messages never acked are redelivered to the next session with the same
// client id. Waiting for the ack senders is bounded: a PUBACK stuck on a
// stalled socket is given up when paho's write timeout breaks the
// connection.
func (m *MQTT) Close() {
	m.closeOnce.Do(func() { close(m.stop) })
	m.senders.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.clients {
		c.Disconnect(250)
	}
	m.clients = nil
}

func (m *MQTT) clientOptions(conn *mqttConn, topic string, inbox chan mqtt.Message, intakeDone <-chan struct{}) *mqtt.ClientOptions {
	clientID := conn.id
	o := mqtt.NewClientOptions().
		AddBroker(m.cfg.URL).
		SetClientID(clientID).
		SetCleanSession(false).
		SetOrderMatters(true). // handler only enqueues; keeps receive order
		SetAutoAckDisabled(true).
		SetStore(noStore{}). // mqttstore.go
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(10 * time.Second).
		SetKeepAlive(30 * time.Second).
		SetPingTimeout(10 * time.Second).
		SetWriteTimeout(5 * time.Second).
		SetConnectTimeout(10 * time.Second)
	if m.cfg.Username != "" {
		o.SetUsername(m.cfg.Username)
		o.SetPassword(m.cfg.Password)
	}
	if m.cfg.TLS != nil {
		o.SetTLSConfig(m.cfg.TLS)
	}
	if u, err := url.Parse(m.cfg.URL); err == nil && bufferedScheme(u.Scheme) {
		o.SetCustomOpenConnectionFn(dialBuffered)
	}
	handler := func(_ mqtt.Client, msg mqtt.Message) {
		conn.messages.Add(1)
		select {
		case inbox <- msg:
			return
		default:
		}
		// Full: the broker sent more than its in-flight window (as on a
		// reconnect). Wait, which holds paho's reading and so the broker
		// back: a message dropped here would stay unacked, holding one of
		// the broker's in-flight slots until the next session.
		select {
		case inbox <- msg:
		case <-intakeDone: // shutting down: left for redelivery
			m.overflow.Add(1)
		}
	}
	// Every message goes to the default handler: the persistent session's
	// backlog arrives right after CONNACK, before any SUBSCRIBE, and must
	// not be left unacked; and the client subscribes to one topic only, so
	// a route for it would only make paho match (split) each message's
	// topic against it first.
	o.SetDefaultPublishHandler(handler)
	subscribed := &conn.subscribed // this client's share of m.subscribed
	// Subscribe on every connect, not once: a persistent session keeps its
	// subscriptions, but Mosquitto before 2.0.12 loses the $share ones of a
	// durable client when the broker restarts (mqttshare.go).
	o.SetOnConnectHandler(func(c mqtt.Client) {
		t := c.Subscribe(topic, 1, nil)
		if !t.WaitTimeout(10*time.Second) || t.Error() != nil {
			m.log.Error("mqtt subscribe failed; reconnecting", "topic", topic, "error", t.Error())
			go func() { c.Disconnect(0); c.Connect() }()
			return
		}
		if !subscribed.Swap(true) {
			m.subscribed.Add(1)
		}
		m.log.Info("mqtt connected and subscribed", "client_id", clientID, "topic", topic)
	})
	o.SetConnectionLostHandler(func(_ mqtt.Client, err error) {
		if subscribed.Swap(false) {
			m.subscribed.Add(-1)
		}
		m.log.Warn("mqtt connection lost; reconnecting", "client_id", clientID, "error", err)
	})
	return o
}

// work hands messages to the pipeline in receive order until ctx is done.
func (m *MQTT) work(ctx context.Context, inbox <-chan mqtt.Message, acks *ackSequencer) {
	dec := payload.NewDecoder(m.cfg.Limits)
	for {
		select {
		case <-ctx.Done():
			m.log.Info("mqtt intake stopped; unhandled messages stay with the broker for redelivery", "left", len(inbox))
			return
		case msg := <-inbox:
			m.handle(ctx, dec, acks, msg)
		}
	}
}

func (m *MQTT) handle(ctx context.Context, dec *payload.Decoder, acks *ackSequencer, msg mqtt.Message) {
	m.messages.Add(1)
	if msg.Duplicate() {
		m.redelivered.Add(1)
		m.log.Debug("mqtt redelivery", "topic", msg.Topic(), "id", msg.MessageID())
	}
	// The frame and its slot in the ack sequence: one allocation.
	mf := &mqttFrame{ack: pendingAck{msg: msg}}
	acks.add(&mf.ack)
	drop := func() { acks.release(&mf.ack, true) }
	device, ok := m.deviceOf(msg.Topic())
	if !ok || (m.cfg.Devices != nil && !m.cfg.Devices.Active(device)) {
		m.unknownDevice.Add(1)
		drop() // redelivery cannot help: acked, dropped, counted
		return
	}
	received := time.Now()
	if ok, _ := m.limits.admit(device, len(msg.Payload()), received); !ok {
		drop() // refused before decoding (mqttlimits.go): acked, dropped, counted
		return
	}
	pm, err := dec.Decode(msg.Payload(), received)
	if err != nil {
		m.invalid.Add(1)
		m.limits.count(device, CodeInvalidPayload, received)
		m.log.Debug("invalid mqtt payload", "device", device, "error", telemetry.ClipMessage(err.Error()))
		drop()
		return
	}
	f := &mf.frame
	*f = telemetry.Frame{
		Device:   device,
		Readings: pm.Readings,
		Invalid:  pm.Invalid,
		Skipped:  pm.Skipped,
		Received: received,
		// Stored, or refused for good: either way redelivery cannot help, so
		// ack. Not stored (shutdown): no ack, the broker redelivers.
		Done: func(o telemetry.Outcome) { acks.release(&mf.ack, o.Err == nil) },
	}
	// ctx lives as long as the intake, so Consume waits for queue space
	// (the broker's in-flight window bounds what waits here) and fails only
	// when the service shuts down.
	rcpt, err := m.next.Consume(ctx, f)
	// mf lives on until the ack (Done refers to it); the readings' memory
	// need not: the pipeline has encoded them and publishes its own slice.
	f.Readings, f.Invalid, f.Skipped = nil, nil, nil
	if err != nil {
		acks.release(&mf.ack, false) // shutting down: left unacked, the broker redelivers
		return
	}
	m.readingsAccepted.Add(uint64(rcpt.Accepted))
	m.readingsRejected.Add(uint64(len(rcpt.Rejected)))
	m.limits.countRejected(device, rcpt.Rejected, received)
}

func (m *MQTT) deviceOf(topic string) (telemetry.DeviceID, bool) {
	// The devicePos-th '/'-separated segment, without splitting the topic
	// (an allocation per message).
	for range m.devicePos {
		i := strings.IndexByte(topic, '/')
		if i < 0 {
			return "", false
		}
		topic = topic[i+1:]
	}
	if i := strings.IndexByte(topic, '/'); i >= 0 {
		topic = topic[:i]
	}
	if !telemetry.ValidDeviceID(topic) {
		return "", false
	}
	return telemetry.DeviceID(topic), true
}

// bufferedScheme reports whether dialBuffered handles a broker URL scheme;
// others (ws://, unix://) use paho's own dialer.
func bufferedScheme(scheme string) bool {
	switch scheme {
	case "tcp", "mqtt", "ssl", "tls", "mqtts", "tcps":
		return true
	}
	return false
}

// dialBuffered opens the broker connection behind a read buffer: paho reads
// every packet with several small reads (fixed header, length, body), each
// a syscall without one. Its writes are coalesced for the same reason
// (coalesce.go).
func dialBuffered(uri *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
	d := &net.Dialer{Timeout: o.ConnectTimeout}
	var c net.Conn
	var err error
	switch uri.Scheme {
	case "tcp", "mqtt":
		c, err = d.Dial("tcp", uri.Host)
	default:
		c, err = tls.DialWithDialer(d, "tcp", uri.Host, o.TLSConfig)
	}
	if err != nil {
		return nil, err
	}
	return &bufferedConn{Conn: c, r: bufio.NewReaderSize(c, 32<<10), w: newCoalescingWriter(c)}, nil
}

// bufferedConn reads through a buffer and writes through a coalescingWriter
// (one syscall for many PUBACKs).
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
	w *coalescingWriter
}

func (c *bufferedConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *bufferedConn) Write(p []byte) (int, error) { return c.w.Write(p) }

func (c *bufferedConn) Close() error {
	c.w.close(time.Second)
	return c.Conn.Close()
}

// ackSequencer releases PUBACKs in receive order (MQTT-4.6.0-2) even when
// messages complete out of order (e.g. a rejected message completes at once
// while an earlier one is still being written).
//
// release runs on the pipeline's completer (a Frame's Done), which must
// never block; paho's msg.Ack() does: it hands the PUBACK to the client's
// writer goroutine and so waits on the broker socket. So release only
// appends the PUBACKs that are due to due, and send — this connection's own
// goroutine — writes them, in order. due is never cut short: a PUBACK
// dropped there would hold one of the broker's in-flight slots until the
// next session, and enough of them stall the session (it happened on a
// reconnect, when Mosquitto sent more than max_inflight_messages at once).
// Its length is bounded by the messages this connection took in and has not
// acked, which the broker's in-flight window bounds.
type ackSequencer struct {
	m       *MQTT
	mu      sync.Mutex // guards pending and due, and orders sends
	pending []*pendingAck
	due     []mqtt.Message
	wake    chan struct{} // cap 1: due has PUBACKs to send
}

func newAckSequencer(m *MQTT) *ackSequencer {
	return &ackSequencer{m: m, wake: make(chan struct{}, 1)}
}

type pendingAck struct {
	msg       mqtt.Message
	done, ack bool
}

// mqttFrame is a message on its way through the pipeline: its frame and its
// place in the ack sequence share one allocation.
type mqttFrame struct {
	frame telemetry.Frame
	ack   pendingAck
}

// add registers p in receive order. Release it once, with release.
func (s *ackSequencer) add(p *pendingAck) {
	s.mu.Lock()
	s.pending = append(s.pending, p)
	s.mu.Unlock()
	s.m.unacked.Add(1)
}

// release completes p: with send false its slot is released without a
// PUBACK (the message is then redelivered on the next session). PUBACKs
// leave in receive order, so p's may wait for earlier messages. It never
// blocks.
func (s *ackSequencer) release(p *pendingAck, send bool) {
	s.mu.Lock()
	p.done, p.ack = true, send
	n := 0
	for n < len(s.pending) && s.pending[n].done {
		n++
	}
	if n == 0 {
		s.mu.Unlock()
		return
	}
	queued := false
	for _, q := range s.pending[:n] {
		if q.ack {
			s.due = append(s.due, q.msg)
			queued = true
		}
	}
	clear(s.pending[:n])
	s.pending = s.pending[n:]
	s.mu.Unlock()
	s.m.unacked.Add(-int64(n))
	if queued {
		select {
		case s.wake <- struct{}{}:
		default: // a wake-up is pending; the sender takes these too
		}
	}
}

// takeDue swaps the PUBACKs due for spare (emptied), oldest first.
func (s *ackSequencer) takeDue(spare []mqtt.Message) []mqtt.Message {
	s.mu.Lock()
	due := s.due
	s.due = spare[:0]
	s.mu.Unlock()
	return due
}

// send writes the PUBACKs due, in order, until stop is closed; then those
// already due, and returns.
func (s *ackSequencer) send(stop <-chan struct{}) {
	var batch []mqtt.Message
	ack := func() {
		batch = s.takeDue(batch)
		for i, msg := range batch {
			msg.Ack()
			batch[i] = nil
		}
		s.m.acked.Add(uint64(len(batch)))
	}
	for {
		select {
		case <-s.wake:
			ack()
		case <-stop:
			ack()
			return
		}
	}
}
