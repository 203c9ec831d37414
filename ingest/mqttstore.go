package ingest

import (
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// noStore is the paho client's packet store: it keeps nothing.
//
// paho stores a subscriber's in-flight state to resend it after a
// reconnect: its own QoS 1/2 publishes (telemetryd publishes none), its
// SUBSCRIBE packets (discarded on reconnect unless ResumeSubs, which is
// off: the broker's persistent session keeps the subscription), and each
// inbound QoS 1 message until its PUBACK — which resume throws away too,
// as an "invalid message type in store". The broker's session is what
// redelivers unacknowledged messages. Yet the default MemoryStore takes a
// mutex-guarded map insert and delete per message on two of paho's
// goroutines, contending for the lock: CPU spent on state nobody reads.
type noStore struct{}

var _ mqtt.Store = noStore{}

func (noStore) Open()                             {}
func (noStore) Put(string, packets.ControlPacket) {}
func (noStore) Get(string) packets.ControlPacket  { return nil }
func (noStore) All() []string                     { return nil }
func (noStore) Del(string)                        {}
func (noStore) Close()                            {}
func (noStore) Reset()                            {}
