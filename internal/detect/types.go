package detect

import "time"

// Site is a place with sensors and cameras; it detects only while armed.
type Site struct {
	Name    string    `json:"name"`
	Armed   bool      `json:"armed"`
	Plan    string    `json:"-"` // set in the UI; "" means vigil.yaml's
	Updated time.Time `json:"updated"`
}

// Topics of a site's mode.
const (
	// ModeSetFilter matches every site's mode commands,
	// vigil/<site>/mode/set ("arm" or "disarm").
	ModeSetFilter = "vigil/+/mode/set"
)

// ModeTopic returns vigil/<site>/mode, where the site's mode is retained.
func ModeTopic(site string) string { return "vigil/" + site + "/mode" }

// ModeFilter matches every site's mode (retained).
const ModeFilter = "vigil/+/mode"

// Event states.
const (
	EventRecording = "recording" // cameras are streaming
	EventQueued    = "queued"    // waiting for an agent with room
	EventRecorded  = "recorded"  // every clip is stored
	EventPartial   = "partial"   // some clips failed or were cut short
	EventNoCamera  = "no_camera" // nothing could record it
	EventMerged    = "merged"    // its cameras were already recording an earlier event
	EventFailed    = "failed"
)

// Event is one detection: someone came within the threshold of a sensor
// while its site was armed.
type Event struct {
	ID       string     `json:"id"`
	Site     string     `json:"site"`
	Sensor   string     `json:"sensor"`
	Cameras  []string   `json:"cameras"`
	Start    time.Time  `json:"start"`
	End      *time.Time `json:"end,omitempty"`
	Priority int        `json:"priority"`
	State    string     `json:"state"`
	Distance *float64   `json:"distance_m,omitempty"`
}

// EventFilter narrows an event listing.
type EventFilter struct {
	Site   string
	Camera string    // events a camera recorded
	Since  time.Time // started at or after (zero: no bound)
	Until  time.Time // started before (zero: no bound)
	Limit  int
}
