package main

import (
	"fmt"
	"strings"
)

// Cluster settings of the MQTT side: the instance id and the client ids
// derived from it. See docs/cluster.md, "MQTT shared subscriptions".

const maxInstanceID = 64

// resolveInstanceID fills an empty InstanceID from the host name (made
// safe: characters other than [A-Za-z0-9._-] become '-') and checks a
// given one. A host name is the default because it is what stays stable
// across restarts of one machine or one StatefulSet pod; a random id would
// leave a broker session behind on every restart, still taking a share.
func (c *config) resolveInstanceID(hostname func() (string, error)) error {
	if c.InstanceID == "" {
		h, err := hostname()
		if err == nil {
			c.InstanceID = sanitizeInstanceID(h)
		}
		if c.InstanceID == "" && c.MQTTShareGroup != "" { // only a cluster member needs one
			return fmt.Errorf("-instance-id: no host name to derive it from (%v); set TELEMETRY_INSTANCE_ID", err)
		}
		return nil
	}
	if err := checkInstanceID(c.InstanceID); err != nil {
		return fmt.Errorf("-instance-id (TELEMETRY_INSTANCE_ID): %w", err)
	}
	return nil
}

func sanitizeInstanceID(h string) string {
	h = strings.Map(func(r rune) rune {
		if instanceIDRune(r) {
			return r
		}
		return '-'
	}, h)
	if len(h) > maxInstanceID {
		h = h[:maxInstanceID]
	}
	return h
}

func checkInstanceID(id string) error {
	if len(id) > maxInstanceID {
		return fmt.Errorf("%q is longer than %d characters", id, maxInstanceID)
	}
	for _, r := range id {
		if !instanceIDRune(r) {
			return fmt.Errorf("%q: %q is not one of [A-Za-z0-9._-]", id, r)
		}
	}
	return nil
}

func instanceIDRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
}

// mqttClientID is the client id the MQTT consumer's connections derive
// theirs from: -mqtt-client-id alone for a single instance (unchanged), and
// <mqtt-client-id>-<instance-id> for a member of a share group, so that
// each instance has its own sessions and picks them back up on restart.
func mqttClientID(c config) string {
	if c.MQTTShareGroup == "" {
		return c.MQTTClientID
	}
	return c.MQTTClientID + "-" + c.InstanceID
}
