package hub

import "time"

// The events of the web UI's stream (/api/v1/stream), and the payload of
// each where it is not another package's type.
const (
	EventReading     = "reading"      // Reading
	EventDevice      = "device"       // Device
	EventSite        = "site"         // Site
	EventEvent       = "event"        // a detect.Event
	EventClip        = "clip"         // a coord.Clip
	EventClipDeleted = "clip_deleted" // a coord.Clip
	EventAgents      = "agents"       // the coordinator's view (coord.View)
	EventAlerts      = "alerts"       // the alerts that hold now
	EventBlock       = "block"        // an MQTT client blocked or let go
	EventAudit       = "audit"        // Audit
	EventWatch       = "watch"        // a watched broker's change
)

// Reading is a device's new reading.
type Reading struct {
	Device    string    `json:"device"`
	Site      string    `json:"site"`
	Type      string    `json:"type"`
	Value     float64   `json:"value"`
	Units     string    `json:"units"`
	Timestamp time.Time `json:"timestamp"`
	Seq       *int64    `json:"seq"`
}

// Device is a device going online or offline.
type Device struct {
	Device string `json:"device"`
	Site   string `json:"site"`
	Status string `json:"status"`
	// With a device's meta (a new discovered device): what the device
	// list shows of it.
	Name      string `json:"name,omitempty"`
	Type      string `json:"type,omitempty"`
	Units     string `json:"units,omitempty"`
	Discovery any    `json:"discovery,omitempty"`
}

// Site is a site armed, disarmed, or given a plan: its state after it.
type Site struct {
	Name  string `json:"name"`
	Armed bool   `json:"armed"`
	Plan  string `json:"plan"`
}

// Audit is a finished audit.
type Audit struct {
	ID     int64  `json:"id"`
	Grade  string `json:"grade"`
	Target string `json:"target"`
}
