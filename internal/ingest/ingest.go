// Package ingest is the protocol of Vigil's video path, spoken over MQTT
// between the coordinator (in `vigil up`), the ingest agents (`vigil agent`)
// and the cameras. docs/ingest.md describes it and how the seed's four
// signals map onto it:
//
//	[Detected]  a sensor's reading or motion message (telemetry)
//	            -> coordinator: Expect to an agent, Stream to the camera
//	[Full]      agent state "full"   on vigil/agents/<id>/state
//	[Quit]      camera "quit"        on vigil/<site>/<camera>/stream, or RTCP BYE
//	[Empty]     agent state "empty"  on vigil/agents/<id>/state
package ingest

import "time"

// Topics.
const (
	agentPrefix = "vigil/agents/"
	// AgentFilter matches every agent topic.
	AgentFilter = "vigil/agents/+/+"
	// CameraStreamFilter matches every camera's stream reports.
	CameraStreamFilter = "vigil/+/+/stream"
	// CameraCommandFilter and AgentCommandFilter match the topics Vigil
	// commands cameras and agents on.
	CameraCommandFilter = "vigil/+/+/cmd"
	AgentCommandFilter  = "vigil/agents/+/cmd"
)

// AgentTopic returns vigil/agents/<id>/<leaf>; leaf is one of "cmd",
// "state", "heartbeat", "segment".
func AgentTopic(id, leaf string) string { return agentPrefix + id + "/" + leaf }

// AgentClientID is the MQTT client id agent <id> connects with. The
// broker reserves it for the agent's credential, and the coordinator
// accepts an agent's reports only from this client, logged in with it.
func AgentClientID(id string) string { return "vigil-agent-" + id }

// CameraTopic returns vigil/<site>/<camera>/<leaf>; leaf is CameraCmd (to
// the camera) or CameraStream (from it).
func CameraTopic(site, camera, leaf string) string { return DeviceTopic(site, camera, leaf) }

// DeviceTopic returns vigil/<site>/<device>/<leaf>: a device's telemetry,
// status, motion and meta, and a camera's cmd and stream.
func DeviceTopic(site, device, leaf string) string {
	return "vigil/" + site + "/" + device + "/" + leaf
}

// Agent states, published on vigil/agents/<id>/state.
const (
	StateEmpty   = "empty"   // no streams: the seed's [Empty]
	StateBusy    = "busy"    // some streams, room for more
	StateFull    = "full"    // at capacity: the seed's [Full]
	StateOffline = "offline" // the agent's last will
)

// Transport is how a camera pushes to an agent: RTP/JPEG over UDP (RFC
// 2435).
const Transport = "rtp/jpeg"

// Stream kinds. A JPEG stream is pushed by the camera (the seed's
// protocol); an RTSP stream is pulled by the agent from an IP camera and
// stored as the camera encoded it; a ring is an RTSP camera's last seconds
// kept in the agent's memory, so that its clips start before their
// trigger (pre-roll). An agent's capacity is counted per kind (Capacity).
const (
	KindJPEG = "jpeg"
	KindRTSP = "rtsp"
	KindRing = "ring"
)

// Capacity is how many streams of each kind an agent takes when it has
// nothing else; a mix takes the sum of each stream's share (1/Capacity of
// its kind), at most 1. Zero RTSP or Ring: the agent takes none of them.
type Capacity struct {
	JPEG int `json:"jpeg"`
	RTSP int `json:"rtsp"`
	Ring int `json:"ring"`
}

// Of returns the capacity for a kind ("" is KindJPEG).
func (c Capacity) Of(kind string) int {
	switch kind {
	case KindRTSP:
		return c.RTSP
	case KindRing:
		return c.Ring
	default:
		return c.JPEG
	}
}

// Load is the share of an agent that streams of these kinds use: 1 is
// full. A kind it takes none of counts as more than full.
func (c Capacity) Load(kinds ...string) float64 {
	var l float64
	for _, k := range kinds {
		n := c.Of(k)
		if n <= 0 {
			return 2
		}
		l += 1 / float64(n)
	}
	return l
}

// Fits tells whether one more stream of kind fits beside streams of
// kinds.
func (c Capacity) Fits(kind string, kinds ...string) bool {
	return c.Load(append(kinds, kind)...) <= 1+1e-9
}

// RTSPSource is an IP camera an agent pulls. Its password never travels
// in clear: the coordinator seals it for the agent (Seal) with the
// agent's own MQTT password, which only the two know, since others may
// read the agent's command topic (viewers read vigil/#).
type RTSPSource struct {
	URL       string `json:"url"` // without a login
	Username  string `json:"username,omitempty"`
	Password  string `json:"-"`                         // in clear: never sent
	Sealed    string `json:"password_sealed,omitempty"` // Password, sealed for the agent
	Transport string `json:"transport,omitempty"`       // tcp, udp, or "" (UDP, then TCP if nothing comes)
}

// StreamCommand tells a camera to stream (on vigil/<site>/<camera>/cmd).
type StreamCommand struct {
	Action    string `json:"action"` // ActionStream or ActionStop
	StreamID  string `json:"stream_id"`
	EventID   string `json:"event_id,omitempty"`
	Transport string `json:"transport,omitempty"` // "rtp/jpeg"
	Host      string `json:"host,omitempty"`      // where to send RTP; RTCP goes to port+1
	Port      int    `json:"port,omitempty"`
	SSRC      uint32 `json:"ssrc,omitempty"`
	Duration  int    `json:"duration_s,omitempty"` // seconds still to record
	PreRoll   int    `json:"pre_roll_s,omitempty"` // seconds of buffered video to send first
	FPS       int    `json:"fps,omitempty"`
	Width     int    `json:"width,omitempty"`
	Height    int    `json:"height,omitempty"`
	Quality   int    `json:"quality,omitempty"`     // JPEG quality 1-100
	MaxPacket int    `json:"max_payload,omitempty"` // largest RTP payload, bytes
	Resume    bool   `json:"resume,omitempty"`      // the stream moves to another agent: keep going
	// Since (with Resume) asks the camera to send its frames taken from
	// this moment on again (Unix milliseconds), as far as it still holds
	// them (camera.Backfill): the agent the stream leaves may not have
	// stored them.
	Since int64 `json:"since_ms,omitempty"`
}

// Camera stream states, in a CameraStreamEvent.
const (
	CameraStarted = "started" // the camera sends
	CameraQuit    = "quit"    // it has sent the whole duration: the seed's [Quit]
	CameraError   = "error"   // it cannot stream (Reason says why)
)

// CameraStreamEvent is what a camera says about a stream (on
// vigil/<site>/<camera>/stream): CameraStarted, CameraQuit or CameraError.
// The coordinator heeds it only for a stream of that site and camera, and
// (where it knows the camera's client id) only from that client.
type CameraStreamEvent struct {
	StreamID string `json:"stream_id"`
	State    string `json:"state"`
	Reason   string `json:"reason,omitempty"`
}

// The leaves of an agent's topics, vigil/agents/<id>/<leaf> (AgentTopic).
const (
	AgentCmd       = "cmd"       // coordinator to agent: an AgentCommand
	AgentState     = "state"     // agent: StateEmpty, StateBusy, StateFull or StateOffline
	AgentHeartbeat = "heartbeat" // agent: a Heartbeat, every second
	AgentSegment   = "segment"   // agent: a SegmentReport
)

// The leaves of a camera's command and report topics,
// vigil/<site>/<camera>/<leaf> (CameraTopic).
const (
	CameraCmd    = "cmd"    // coordinator to camera: a StreamCommand
	CameraStream = "stream" // camera: a CameraStreamEvent
)

// Actions of an AgentCommand, and of a StreamCommand.
const (
	ActionExpect = "expect" // agent: take a stream
	ActionStream = "stream" // camera: send a stream
	ActionStop   = "stop"   // either: end it
)

// States of a SegmentReport.
const (
	SegmentExpecting = "expecting" // the agent waits for the stream's packets
	SegmentRecording = "recording" // its first frame is stored
	SegmentDone      = "done"      // the segment is finished (Reason says why)
)

// StopStream is the command that ends a stream at its agent.
func StopStream(id string) AgentCommand { return AgentCommand{Action: ActionStop, StreamID: id} }

// AgentCommand tells an agent what to receive (on vigil/agents/<id>/cmd).
type AgentCommand struct {
	Action   string `json:"action"` // ActionExpect or ActionStop
	StreamID string `json:"stream_id"`
	SSRC     uint32 `json:"ssrc,omitempty"`
	// Source, if set, is the only IP address packets may come from.
	Source string `json:"source,omitempty"`
	// Dir is the clip's directory, relative to the agent's storage root;
	// Segment the file name to write there.
	Dir      string `json:"dir,omitempty"`
	Segment  string `json:"segment,omitempty"`
	Duration int    `json:"duration_s,omitempty"` // the stream ends by itself after this, plus a grace
	Camera   string `json:"camera,omitempty"`
	Site     string `json:"site,omitempty"`
	// LiveOnly streams are watched, not recorded: no segment is written.
	LiveOnly bool `json:"live_only,omitempty"`
	// LiveToken lets vigil up watch the stream at the agent's
	// /live/<stream_id>?token=<LiveToken> (multipart JPEG), or for an
	// RTSP stream /live/<stream_id>.mp4?token=<LiveToken> (fragmented MP4).
	LiveToken string `json:"live_token,omitempty"`
	// Kind is KindJPEG ("" too), KindRTSP or KindRing. RTSP and ring
	// streams are pulled from RTSP, which they need.
	Kind string      `json:"kind,omitempty"`
	RTSP *RTSPSource `json:"rtsp,omitempty"`
	// PreRoll is the seconds of video before the command that an RTSP
	// recording starts with, from the camera's ring on this agent if it
	// holds one; a ring keeps this much.
	PreRoll int `json:"pre_roll_s,omitempty"`
}

// Heartbeat is an agent's periodic report (on vigil/agents/<id>/heartbeat).
type Heartbeat struct {
	ID       string `json:"id"`
	Addr     string `json:"addr"`      // host:port cameras send RTP to
	HTTPAddr string `json:"http_addr"` // host:port of its live view server
	Capacity int    `json:"capacity"`  // JPEG streams (Capacities.JPEG)
	// Capacities counts each kind of stream; an agent before RTSP sends
	// only Capacity.
	Capacities *Capacity      `json:"capacities,omitempty"`
	State      string         `json:"state"`
	Streams    []StreamStatus `json:"streams"`
	// Datagrams dropped before reaching a stream.
	UnknownSSRC uint64 `json:"unknown_ssrc"`
	WrongSource uint64 `json:"wrong_source"` // RTP, and RTCP BYEs, from an address the stream does not take
	NotRTP      uint64 `json:"not_rtp"`
	// ByeRefused counts RTCP datagrams refused whole because their BYEs
	// name more sources than media.MaxByeSSRCs.
	ByeRefused uint64    `json:"bye_refused"`
	Started    time.Time `json:"started"`
	Version    string    `json:"version"`
}

// StreamStatus is one stream in a heartbeat.
type StreamStatus struct {
	StreamID string `json:"stream_id"`
	// What the stream is, from its expect command: a coordinator that
	// takes over from another adopts the stream by its clip's Dir.
	Site     string  `json:"site,omitempty"`
	Camera   string  `json:"camera,omitempty"`
	Dir      string  `json:"dir,omitempty"`
	LiveOnly bool    `json:"live_only,omitempty"`
	Kind     string  `json:"kind,omitempty"` // "" is KindJPEG
	Frames   uint64  `json:"frames"`
	Packets  uint64  `json:"packets"`
	Lost     uint64  `json:"packets_lost"`
	JitterMS float64 `json:"jitter_ms"`
}

// SegmentReport is sent when an agent starts storing a stream and when it
// has finished a segment (on vigil/agents/<id>/segment).
type SegmentReport struct {
	StreamID    string    `json:"stream_id"`
	Dir         string    `json:"dir"`
	Segment     string    `json:"segment"`
	State       string    `json:"state"` // SegmentExpecting, SegmentRecording or SegmentDone
	Reason      string    `json:"reason,omitempty"`
	Frames      int       `json:"frames"`
	Bytes       int64     `json:"bytes"`
	Packets     uint64    `json:"packets"`
	Lost        uint64    `json:"packets_lost"`
	BadFrames   uint64    `json:"bad_frames"`
	DurationMS  int64     `json:"duration_ms"`
	FirstStored time.Time `json:"first_stored,omitempty"`
	Ended       time.Time `json:"ended,omitempty"`
	WrongSource uint64    `json:"wrong_source,omitempty"`
	JitterMS    float64   `json:"jitter_ms"`
	WriteErrors int       `json:"write_errors,omitempty"`
	// RTSP streams: the codec stored, how often the camera was lost and
	// reached again, and the longest gap that left in the video.
	Codec      string `json:"codec,omitempty"`
	Reconnects int    `json:"reconnects,omitempty"`
	GapMS      int64  `json:"gap_ms,omitempty"`
	// PreRollMS is how much of the segment is from before the command.
	PreRollMS int64 `json:"pre_roll_ms,omitempty"`
}

// Reasons a stream ends.
const (
	EndBye      = "bye"      // RTCP BYE from the camera
	EndQuit     = "quit"     // the camera said quit, or the coordinator stopped it
	EndDuration = "duration" // the stream ran its duration (plus grace)
	EndIdle     = "idle"     // no packet for the inactivity timeout
	EndShutdown = "shutdown" // the agent is stopping
	// EndFormat: an RTSP camera changed its resolution or codec; the
	// segment holds what came before, and the stream goes on in another.
	EndFormat = "format"
	// EndLost: an RTSP camera could not be reached again before the
	// stream's end.
	EndLost = "camera_lost"
)
