package simulator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// mqttLink is one device's MQTT connection: QoS 1 publishes, clean
// session, no automatic reconnect (the sender reconnects with its own
// backoff and resends what the broker never acknowledged). A PUBACK only
// says the broker has the message, so for MQTT "acked" means "with the
// broker"; -verify then checks storage.
type mqttLink struct {
	s      *sender
	gen    uint64
	client mqtt.Client
	topic  string
	acks   chan pendingPub // publishes awaiting PUBACK, in publish order
	done   chan struct{}
	once   sync.Once

	mu   sync.Mutex
	conn *killableConn // the TCP connection, for the disconnect fault
}

// errKilled is what a killed connection's reads and writes return. paho
// takes "use of closed network connection" for its own orderly close and
// would not report the loss, so a kill must look like a network failure.
var errKilled = errors.New("connection cut (disconnect fault)")

// killableConn is a TCP connection that the disconnect fault can cut: the
// socket is reset (no FIN, no DISCONNECT), and paho sees a network error.
type killableConn struct {
	net.Conn
	killed atomic.Bool
}

func (c *killableConn) kill() {
	c.killed.Store(true)
	if tc, ok := c.Conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0) // RST, as when a cable is pulled and the peer gives up
	}
	_ = c.Conn.Close()
}

func (c *killableConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil && c.killed.Load() {
		err = errKilled
	}
	return n, err
}

func (c *killableConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if err != nil && c.killed.Load() {
		err = errKilled
	}
	return n, err
}

type pendingPub struct {
	seq uint64
	tok mqtt.Token
}

// mqttTopic is the device's topic: the service's topic with its '+'
// replaced by the device id.
func mqttTopic(pattern, id string) string { return strings.Replace(pattern, "+", id, 1) }

func (r *runner) mqttOptions(ctx context.Context, clientID, username, password string, l *mqttLink) *mqtt.ClientOptions {
	o := mqtt.NewClientOptions().
		AddBroker(r.cfg.MQTTURL).
		SetClientID(clientID).
		SetUsername(username).
		SetPassword(password).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(10 * time.Second).
		SetWriteTimeout(10 * time.Second).
		SetKeepAlive(30 * time.Second).
		SetPingTimeout(10 * time.Second).
		SetOrderMatters(false)
	if u, err := url.Parse(r.cfg.MQTTURL); err == nil && (u.Scheme == "tcp" || u.Scheme == "mqtt") {
		// Own the TCP connection so that the disconnect fault can cut it.
		d := &net.Dialer{Timeout: 10 * time.Second}
		o.SetCustomOpenConnectionFn(func(u *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
			c, err := d.DialContext(ctx, "tcp", u.Host)
			if err != nil {
				return nil, err
			}
			kc := &killableConn{Conn: c}
			if l != nil {
				l.mu.Lock()
				l.conn = kc
				l.mu.Unlock()
			}
			return kc, nil
		})
	}
	return o
}

// connectMQTT waits for the CONNACK; a refused credential wraps errAuth.
func connectMQTT(ctx context.Context, c mqtt.Client) error {
	t := c.Connect()
	select {
	case <-t.Done():
	case <-ctx.Done():
		go c.Disconnect(0)
		return ctx.Err()
	}
	if err := t.Error(); err != nil {
		if errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) || errors.Is(err, packets.ErrorRefusedNotAuthorised) {
			return fmt.Errorf("%w: CONNACK %v", errAuth, err)
		}
		return err
	}
	return nil
}

// dialMQTT connects sender s as itself.
func (r *runner) dialMQTT(ctx context.Context, s *sender, gen uint64, token string) (link, error) {
	l := &mqttLink{
		s: s, gen: gen, topic: mqttTopic(r.cfg.MQTTTopic, s.id),
		acks: make(chan pendingPub, r.cfg.BufferFrames*2+16),
		done: make(chan struct{}),
	}
	o := r.mqttOptions(ctx, s.id, s.id, token, l)
	o.SetConnectionLostHandler(func(_ mqtt.Client, err error) { l.lost(err) })
	l.client = mqtt.NewClient(o)
	if err := connectMQTT(ctx, l.client); err != nil {
		return nil, err
	}
	go l.waitAcks()
	return l, nil
}

// probeMQTT connects as s with a wrong token, under another client id so
// that an unexpected success cannot take over the device's session.
func (r *runner) probeMQTT(ctx context.Context, s *sender, token string) error {
	c := mqtt.NewClient(r.mqttOptions(ctx, s.id+"-probe", s.id, token, nil))
	err := connectMQTT(ctx, c)
	if err != nil {
		return err
	}
	c.Disconnect(0)
	return fmt.Errorf("the broker accepted a wrong password")
}

func (l *mqttLink) send(f *frame) error {
	select {
	case <-l.done:
		return errors.New("mqtt: connection lost")
	default:
	}
	tok := l.client.Publish(l.topic, 1, false, f.payload)
	select {
	case l.acks <- pendingPub{seq: f.seq, tok: tok}:
		return nil
	case <-l.done:
		return errors.New("mqtt: connection lost")
	}
}

func (l *mqttLink) sendRaw(b []byte) error {
	l.client.Publish(l.topic, 1, false, b)
	return nil
}

// waitAcks turns PUBACKs into acks, in publish order, until the link ends.
// A publish that fails (connection lost) stays outstanding in the sender.
func (l *mqttLink) waitAcks() {
	for {
		select {
		case p := <-l.acks:
			select {
			case <-p.tok.Done():
			case <-l.done:
				return
			}
			if p.tok.Error() == nil {
				l.s.onAck(p.seq)
			}
		case <-l.done:
			return
		}
	}
}

func (l *mqttLink) lost(err error) {
	l.once.Do(func() {
		close(l.done)
		l.s.onClosed(l.gen, 0, err)
	})
}

func (l *mqttLink) kill() {
	l.mu.Lock()
	c := l.conn
	l.mu.Unlock()
	if c != nil {
		c.kill() // paho notices and reports the loss
		return
	}
	l.client.Disconnect(0)
	l.lost(errors.New("mqtt: disconnected"))
}

func (l *mqttLink) close() {
	l.once.Do(func() { close(l.done) })
	l.client.Disconnect(250)
}
