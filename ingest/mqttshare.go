package ingest

import (
	"fmt"
	"sync/atomic"
)

// Shared subscriptions: several telemetryd instances consume one fleet by
// each being a member of the same $share group. The broker hands each
// message to one member, round robin, so each message is consumed once.
//
// What makes that safe is the client id. A member's share is kept in its
// persistent session (clean session off) while it is away — Mosquitto and
// EMQX keep round-robining to an offline durable member and do not hand its
// queue to the others — so a member must come back under the same client
// id to collect it. The id is therefore derived from a stable instance id,
// never random: a random one would leave a session that keeps taking a
// share nobody will ever collect.
//
// Mosquitto up to 2.0.11 does not restore a durable client's $share
// subscriptions after a broker restart, so clientOptions subscribes on
// every connect, not only the first.

// subscription is the topic filter every connection subscribes to.
func (c MQTTConfig) subscription() string {
	if g := c.shareGroup(); g != "" {
		return "$share/" + g + "/" + c.Topic
	}
	return c.Topic
}

// shareGroup is the $share group: the configured one, else — several
// connections of one instance sharing the load — the client id; "" for a
// plain subscription.
func (c MQTTConfig) shareGroup() string {
	if c.ShareGroup != "" {
		return c.ShareGroup
	}
	if c.Connections > 1 {
		return c.ClientID
	}
	return ""
}

// clientID is connection i's client id: ClientID itself for a single plain
// connection (the single-instance default, unchanged), else ClientID-i, so
// that each member of the group has its own session.
func (c MQTTConfig) clientID(i int) string {
	if c.ShareGroup == "" && c.Connections <= 1 {
		return c.ClientID
	}
	return fmt.Sprintf("%s-%d", c.ClientID, i)
}

// mqttConn is one broker connection's identity and counters.
type mqttConn struct {
	id         string
	messages   atomic.Uint64 // messages the broker delivered to this client
	subscribed atomic.Bool   // connected with its subscription in place
}

// MQTTClientStats are one connection's figures: how much of the shared
// subscription this client consumed.
type MQTTClientStats struct {
	ClientID  string
	Messages  uint64
	Connected bool
}

// Clients returns each connection's figures, in connection order.
func (m *MQTT) Clients() []MQTTClientStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]MQTTClientStats, len(m.conns))
	for i, c := range m.conns {
		out[i] = MQTTClientStats{ClientID: c.id, Messages: c.messages.Load(), Connected: c.subscribed.Load()}
	}
	return out
}

// checkShareGroup refuses a $share group name a topic level cannot hold
// ('/', '+', '#'); "" (no group) is fine.
func checkShareGroup(g string) error {
	for _, r := range g {
		switch r {
		case '/', '+', '#', 0:
			return fmt.Errorf("mqtt: share group %q: %q is not allowed", g, r)
		}
	}
	return nil
}
