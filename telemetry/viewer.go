package telemetry

// DeviceIDTag is the tag every stored reading carries: the authenticated
// device. A viewer's Scope may select on it too.
const DeviceIDTag = "device_id"

// Viewer is an authenticated dashboard user, as every dashboard endpoint
// (the live WebSocket and SSE feeds, the page's API) sees it. The device
// registry stores viewers with more metadata around this identity.
type Viewer struct {
	// ID identifies the viewer's credential, so that its streams can be
	// closed when it is revoked ("" for anonymous).
	ID   string
	Name string
	// Scope restricts every answer to readings (and devices) whose tags
	// carry all of these key/value pairs; DeviceIDTag selects the device.
	// Empty (nil or no pairs) means unrestricted.
	Scope map[string]string
}

// Anonymous is the viewer of an endpoint that requires no token: unrestricted.
func Anonymous() Viewer { return Viewer{Name: "anonymous"} }
