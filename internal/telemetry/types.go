// Package telemetry turns MQTT messages from devices into stored readings:
// it parses and validates payloads on the seed's and Vigil's own topics,
// registers devices on their first message, tracks online/offline, batches
// readings into the store and expires old ones.
package telemetry

import (
	"time"
)

// Device statuses.
const (
	StatusOnline  = "online"
	StatusOffline = "offline"
)

// Device is a sensor or actuator known to Vigil. It is registered by its
// first message; ID is unique across sites.
type Device struct {
	ID          string    `json:"id"`
	Site        string    `json:"site"`
	Type        string    `json:"type"`
	Units       string    `json:"units"`
	Status      string    `json:"status"`
	StatusSince time.Time `json:"status_since"`
	FirstSeen   time.Time `json:"first_seen"`
	LastSeen    time.Time `json:"last_seen"`
	LastValue   *float64  `json:"last_value"`
	ClientID    string    `json:"client_id,omitempty"`
	Meta        *Meta     `json:"meta,omitempty"`
}

// Capabilities a device can announce in its meta message.
const (
	CapMotion = "motion" // it detects presence (IR distance or motion)
	CapCamera = "camera" // it can stream video when told to
)

// Meta is what a device says about itself on vigil/<site>/<device>/meta
// (retained).
type Meta struct {
	Capabilities []string    `json:"capabilities,omitempty"`
	Name         string      `json:"name,omitempty"`
	Zone         string      `json:"zone,omitempty"`     // cameras and sensors of one zone go together
	Priority     int         `json:"priority,omitempty"` // higher is served first when agents are scarce
	Camera       *CameraInfo `json:"camera,omitempty"`
	// Discovery is set on devices Vigil reads through Home Assistant's
	// MQTT discovery (internal/hadisc); they do not announce a meta
	// themselves, and their availability says when they are offline.
	Discovery *Discovery `json:"discovery,omitempty"`
}

// Discovery is what a Home Assistant MQTT discovery config said of a
// device: an entity of another project (Zigbee2MQTT, Tasmota, ESPHome...).
type Discovery struct {
	Component   string `json:"component"` // sensor or binary_sensor
	DeviceClass string `json:"device_class,omitempty"`
	UniqueID    string `json:"unique_id,omitempty"`
	ConfigTopic string `json:"config_topic"`
	Key         string `json:"key"` // the config topic, and the component's id in a device-based config
	StateTopic  string `json:"state_topic"`
	// The physical device: its name, model, maker, the device it
	// reaches Vigil through (a Zigbee coordinator) and its identifiers.
	DeviceName   string   `json:"device_name,omitempty"`
	Model        string   `json:"model,omitempty"`
	Manufacturer string   `json:"manufacturer,omitempty"`
	ViaDevice    string   `json:"via_device,omitempty"`
	Identifiers  []string `json:"identifiers,omitempty"`
	Origin       string   `json:"origin,omitempty"` // the publishing project and version
	// Removed: its config was deleted (an empty retained config); the
	// device and its readings are kept.
	Removed bool `json:"removed,omitempty"`
}

// Has reports whether the meta lists capability c.
func (m *Meta) Has(c string) bool {
	if m == nil {
		return false
	}
	for _, x := range m.Capabilities {
		if x == c {
			return true
		}
	}
	return false
}

// CameraInfo is what a camera can do.
type CameraInfo struct {
	Width  int `json:"width,omitempty"`
	Height int `json:"height,omitempty"`
	FPS    int `json:"fps,omitempty"`
}

// Reading is one measurement of one device.
type Reading struct {
	DeviceID string    `json:"-"`
	Time     time.Time `json:"timestamp"` // when the device measured it (its own clock)
	Received time.Time `json:"received"`  // when Vigil received it
	Value    float64   `json:"value"`
	Units    string    `json:"units"`
	Seq      *int64    `json:"seq,omitempty"` // the device's message counter, when it sends one
}

// Event is one thing the pipeline stores: a reading or a status change of a
// device, in the order the broker delivered them.
type Event struct {
	DeviceID string
	Site     string
	Type     string // device type, when the message says it
	Units    string // the device's units, when known before a reading (discovery)
	ClientID string // MQTT client id of the publisher, when known
	Time     time.Time
	// Exactly one of Reading, Status and Meta is set.
	Reading *Reading
	Status  string
	Meta    *Meta
}

// DeviceFilter narrows a device listing.
type DeviceFilter struct {
	Site string
}

// Bucket summarises a device's readings over one step of time.
type Bucket struct {
	Time  time.Time `json:"time"` // the bucket's start
	Avg   float64   `json:"avg"`
	Min   float64   `json:"min"`
	Max   float64   `json:"max"`
	Count int       `json:"count"`
}

// ReadingQuery selects readings of one device, oldest first. With Since
// zero it returns the latest Limit readings.
type ReadingQuery struct {
	DeviceID string
	Since    time.Time
	Limit    int
}
