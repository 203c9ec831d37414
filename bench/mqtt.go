package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// connectMQTT connects a paho client (no auto-reconnect: a lost
// connection is a failed run, not something to paper over).
func connectMQTT(ctx context.Context, o *mqtt.ClientOptions) (mqtt.Client, error) {
	o.SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(10 * time.Second).
		SetKeepAlive(30 * time.Second).SetWriteTimeout(10 * time.Second)
	c := mqtt.NewClient(o)
	t := c.Connect()
	select {
	case <-t.Done():
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if err := t.Error(); err != nil {
		return nil, fmt.Errorf("mqtt connect %v: %w", o.ClientID, err)
	}
	return c, nil
}

// publisher publishes QoS 1 readings with a window of unacknowledged
// PUBLISHes (the broker's PUBACKs), as a device library would.
type publisher struct {
	c      mqtt.Client
	topic  string
	window int
	acked  *atomic.Int64 // PUBACKed by the broker, shared by a group
}

func newPublisher(ctx context.Context, url, id, topic string, window int, acked *atomic.Int64) (*publisher, error) {
	c, err := connectMQTT(ctx, mqtt.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(true))
	if err != nil {
		return nil, err
	}
	return &publisher{c: c, topic: topic, window: window, acked: acked}, nil
}

func (p *publisher) close() { p.c.Disconnect(100) }

// run publishes until ctx ends or gate says stop. Before message i it
// calls pace(i) (which may sleep; false stops the run). payload(i) builds
// the body. It returns the number of messages the broker acknowledged.
func (p *publisher) run(ctx context.Context, pace func(i int64) bool, payload func(buf []byte, i int64) []byte) (int64, error) {
	ring := make([]mqtt.Token, 0, p.window)
	var n int64
	var buf []byte
	wait := func(t mqtt.Token) error {
		select {
		case <-t.Done():
		case <-time.After(30 * time.Second):
			return fmt.Errorf("publish to %s: no PUBACK within 30s", p.topic)
		}
		if err := t.Error(); err != nil {
			return err
		}
		n++
		p.acked.Add(1)
		return nil
	}
	var i int64
	var err error
	for ctx.Err() == nil && pace(i) {
		buf = payload(buf[:0], i)
		// paho keeps the payload until it is sent: hand it its own copy.
		ring = append(ring, p.c.Publish(p.topic, 1, false, append([]byte(nil), buf...)))
		i++
		if len(ring) == p.window {
			if err = wait(ring[0]); err != nil {
				break
			}
			ring = ring[1:]
			if cap(ring) == len(ring) {
				ring = append(make([]mqtt.Token, 0, p.window), ring...)
			}
		}
	}
	for _, t := range ring {
		if werr := wait(t); werr != nil && err == nil {
			err = werr
		}
	}
	return n, err
}

// bareSub is the P2/P5 baseline: a paho subscriber with a persistent
// session and manual acks — the service's MQTT options — that only counts,
// acks and (with record) reports now − the payload's "ts".
type bareSub struct {
	c           mqtt.Client
	url, id     string
	topic       string
	count       atomic.Int64
	first, last atomic.Int64 // unix ns
	record      func(now int64, lat time.Duration)
}

func newBareSub(ctx context.Context, url, id, topic string, record func(now int64, lat time.Duration)) (*bareSub, error) {
	s := &bareSub{record: record, url: url, id: id, topic: topic}
	if err := s.connect(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// connect connects and subscribes; messages count from the CONNACK on.
func (s *bareSub) connect(ctx context.Context) error {
	handler := func(_ mqtt.Client, m mqtt.Message) {
		now := time.Now().UnixNano()
		if s.count.Add(1) == 1 {
			s.first.Store(now)
		}
		s.last.Store(now)
		if s.record != nil {
			if ts, _, ok := scanInt(m.Payload(), `"ts":`, 0); ok {
				s.record(now, time.Duration(now-ts))
			}
		}
		m.Ack()
	}
	// The service's paho options, so the ratio is not about paho settings:
	// no packet store, every message to the default handler (no route).
	o := mqtt.NewClientOptions().AddBroker(s.url).SetClientID(s.id).SetCleanSession(false).
		SetOrderMatters(true).SetAutoAckDisabled(true).SetDefaultPublishHandler(handler).
		SetStore(noStore{})
	c, err := connectMQTT(ctx, o)
	if err != nil {
		return err
	}
	t := c.Subscribe(s.topic, 1, nil)
	if !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		c.Disconnect(0)
		return fmt.Errorf("subscribe %s: %v", s.topic, t.Error())
	}
	s.c = c
	return nil
}

// close ends the persistent session for good: otherwise the broker would
// queue every later matching message for it, and its autosave would grow
// with them and stall later scenarios.
func (s *bareSub) close() {
	s.c.Unsubscribe(s.topic).WaitTimeout(5 * time.Second)
	s.c.Disconnect(100)
	endSession(s.url, s.id)
}

// endSession drops client id's persistent session from the broker: a
// clean-session connect replaces it (and whatever is queued for it).
func endSession(url, id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c, err := connectMQTT(ctx, mqtt.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(true)); err == nil {
		c.Disconnect(100)
	}
}

// makeSession leaves a persistent session for client id, subscribed to
// topic at QoS 1, with no client connected: the broker queues every
// matching message for it until a client with that id comes back.
func makeSession(ctx context.Context, url, id, topic string) error {
	// A clean start first: nothing an earlier run left queued stays.
	endSession(url, id)
	c, err := connectMQTT(ctx, mqtt.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(false))
	if err != nil {
		return err
	}
	defer c.Disconnect(100)
	t := c.Subscribe(topic, 1, nil)
	if !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return fmt.Errorf("subscribe %s for %s: %v", topic, id, t.Error())
	}
	return nil
}

// rate is messages/s from the first to the last message.
func (s *bareSub) rate() float64 {
	n := s.count.Load()
	el := time.Duration(s.last.Load() - s.first.Load()).Seconds()
	if n < 2 || el <= 0 {
		return 0
	}
	return float64(n-1) / el
}

// noStore keeps nothing, as telemetryd's MQTT client (ingest/mqttstore.go).
type noStore struct{}

func (noStore) Open()                             {}
func (noStore) Put(string, packets.ControlPacket) {}
func (noStore) Get(string) packets.ControlPacket  { return nil }
func (noStore) All() []string                     { return nil }
func (noStore) Del(string)                        {}
func (noStore) Close()                            {}
func (noStore) Reset()                            {}
