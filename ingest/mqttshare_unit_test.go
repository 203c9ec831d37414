package ingest

import "testing"

func TestMQTTSubscriptionAndClientIDs(t *testing.T) {
	tests := []struct {
		name    string
		cfg     MQTTConfig
		topic   string
		clients []string
	}{
		{"single instance, one connection (default)", MQTTConfig{}, "devices/+/telemetry", []string{"telemetryd"}},
		{"single instance, three connections", MQTTConfig{Connections: 3}, "$share/telemetryd/devices/+/telemetry", []string{"telemetryd-0", "telemetryd-1", "telemetryd-2"}},
		{"cluster member, one connection", MQTTConfig{ClientID: "telemetryd-a", ShareGroup: "fleet"}, "$share/fleet/devices/+/telemetry", []string{"telemetryd-a-0"}},
		{"cluster member, two connections", MQTTConfig{ClientID: "telemetryd-b", ShareGroup: "fleet", Connections: 2, Topic: "t/+"}, "$share/fleet/t/+", []string{"telemetryd-b-0", "telemetryd-b-1"}},
	}
	for _, tt := range tests {
		c := tt.cfg.withDefaults()
		if got := c.subscription(); got != tt.topic {
			t.Errorf("%s: subscription %q, want %q", tt.name, got, tt.topic)
		}
		if c.Connections != len(tt.clients) {
			t.Fatalf("%s: %d connections, want %d", tt.name, c.Connections, len(tt.clients))
		}
		for i, want := range tt.clients {
			if got := c.clientID(i); got != want {
				t.Errorf("%s: client %d id %q, want %q", tt.name, i, got, want)
			}
		}
	}
}

func TestMQTTShareGroupChecked(t *testing.T) {
	for _, g := range []string{"a/b", "a+", "#", "x\x00"} {
		if _, err := NewMQTT(MQTTConfig{ShareGroup: g}, nil, nil); err == nil {
			t.Errorf("share group %q accepted", g)
		}
	}
	if _, err := NewMQTT(MQTTConfig{ShareGroup: "telemetryd.prod-1"}, nil, nil); err != nil {
		t.Errorf("valid share group refused: %v", err)
	}
}
