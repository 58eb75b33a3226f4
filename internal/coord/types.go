package coord

import "time"

// Clip states.
const (
	ClipRecording = "recording" // agents are receiving it
	ClipFinishing = "finishing" // being made into one playable file
	ClipReady     = "ready"
	ClipFailed    = "failed"
	ClipDeleting  = "deleting" // retention is removing it
)

// Clip is the recording of one camera for one event.
type Clip struct {
	ID          string    `json:"id"`
	EventID     string    `json:"event_id"`
	Site        string    `json:"site"`
	Camera      string    `json:"camera"`
	Start       time.Time `json:"start"`
	DurationMS  int64     `json:"duration_ms"`
	Frames      int       `json:"frames"`
	Bytes       int64     `json:"bytes"`
	Packets     uint64    `json:"packets"`
	PacketsLost uint64    `json:"packets_lost"`
	Dir         string    `json:"-"`
	File        string    `json:"file,omitempty"`      // relative to the clip storage
	Thumbnail   string    `json:"thumbnail,omitempty"` // relative to the clip storage
	Codec       string    `json:"codec,omitempty"`     // h264, h265 (RTSP cameras, as they sent it) or mjpeg
	// PreRollMS is how much of the clip is from before its trigger (RTSP
	// cameras, from their agent's ring).
	PreRollMS   int64      `json:"pre_roll_ms,omitempty"`
	State       string     `json:"state"`
	Interrupted bool       `json:"interrupted"` // an agent died mid-stream; the clip spans agents
	Segments    []string   `json:"segments"`
	Error       string     `json:"error,omitempty"`
	Finished    *time.Time `json:"finished,omitempty"`
}

// ClipFilter narrows a clip listing (newest first).
type ClipFilter struct {
	Site, Camera, EventID string
	Since, Until          time.Time // started in [Since, Until) (zero: no bound)
	Limit                 int
}

// HistoryEntry is one decision of the coordinator, kept for
// GET /api/v1/agents/history.
type HistoryEntry struct {
	ID      int64     `json:"id"`
	At      time.Time `json:"at"`
	Action  string    `json:"action"` // scale_up, agent_ready, scale_down, assign, queue, reassign, agent_lost, stream_end
	Agent   string    `json:"agent,omitempty"`
	Camera  string    `json:"camera,omitempty"`
	Reason  string    `json:"reason,omitempty"`
	Agents  int       `json:"agents"`
	Streams int       `json:"streams"`
	Queued  int       `json:"queued"`
}
