package coord

import (
	"slices"

	"strings"
	"time"

	"github.com/vigilhq/vigil/internal/ingest"
)

// View is the coordinator's state for GET /api/v1/agents.
type View struct {
	// Leader is, among several nodes, the id of the node that coordinates.
	Leader   string       `json:"leader,omitempty"`
	Runtime  string       `json:"runtime"`
	Capacity int          `json:"capacity"`
	Min      int          `json:"min"`
	Max      int          `json:"max"`
	Agents   []AgentView  `json:"agents"`
	Queue    []StreamView `json:"queue"`
	Streams  []StreamView `json:"streams"`
}

// AgentView is one agent.
type AgentView struct {
	ID       string `json:"id"`
	Status   string `json:"status"`
	Pool     string `json:"dedicated_site,omitempty"`
	Addr     string `json:"addr,omitempty"`
	Capacity int    `json:"capacity"` // JPEG streams
	// Capacities per kind of stream, and the share of the agent in use.
	Capacities ingest.Capacity `json:"capacities"`
	Load       float64         `json:"load"`
	Streams    []string        `json:"streams"`
	Started    time.Time       `json:"started"`
	Ready      *time.Time      `json:"ready,omitempty"`
	LastSeen   *time.Time      `json:"last_seen,omitempty"`
	EmptySecs  float64         `json:"empty_s,omitempty"`
	// Node is the node it runs on, among several (agentrt.Remote).
	Node string `json:"node,omitempty"`
}

// StreamView is one stream, queued or under way.
type StreamView struct {
	ID      string `json:"id"`
	Site    string `json:"site"`
	Camera  string `json:"camera"`
	EventID string `json:"event_id,omitempty"`
	ClipID  string `json:"clip_id,omitempty"`
	Live    bool   `json:"live_only,omitempty"` // watched, not recorded
	// Kind is jpeg, rtsp or ring; an RTSP stream is watched as
	// fragmented MP4, a JPEG one as multipart JPEG.
	Kind     string    `json:"kind"`
	Agent    string    `json:"agent,omitempty"`
	State    string    `json:"state"`
	Priority int       `json:"priority"`
	Queued   time.Time `json:"queued"`
	Segments int       `json:"segments"`
	// AgentHTTP and Token locate the stream's live pictures at its agent;
	// they are never shown to users.
	AgentHTTP string `json:"-"`
	Token     string `json:"-"`
}

func (c *Coordinator) streamView(st *stream) StreamView {
	v := StreamView{ID: st.id, Site: st.site, Camera: st.camera, Live: st.live, Kind: st.kindOf(),
		Agent: agentName(st.agent), State: st.state, Priority: st.priority, Queued: st.queuedAt, Segments: st.segIndex, Token: st.token}
	if st.ev != nil {
		v.EventID, v.ClipID = st.ev.ev.ID, st.clip.ID
	}
	if st.agent != nil {
		v.AgentHTTP = st.agent.httpAddr
	}
	return v
}

// publishView copies the state for readers on other goroutines.
func (c *Coordinator) publishView() {
	v := View{Runtime: c.runtime.Name(), Capacity: c.cfg.Agents.Capacity, Min: c.cfg.Agents.Min, Max: c.cfg.Agents.Max,
		Agents: []AgentView{}, Queue: []StreamView{}, Streams: []StreamView{}}
	now := c.now()
	where, _ := c.runtime.(interface{ Where(id string) string })
	for _, a := range c.agents {
		av := AgentView{ID: a.id, Status: a.status, Pool: a.pool, Addr: a.addr, Capacity: a.caps.JPEG, Capacities: a.caps, Load: a.load(), Streams: []string{}, Started: a.startedAt}
		if where != nil {
			av.Node = where.Where(a.id)
		}
		for id := range a.streams {
			av.Streams = append(av.Streams, id)
		}
		slices.Sort(av.Streams)
		if !a.readyAt.IsZero() {
			t := a.readyAt
			av.Ready = &t
		}
		if !a.lastSeen.IsZero() {
			t := a.lastSeen
			av.LastSeen = &t
		}
		if len(a.streams) == 0 && a.status == agentReady {
			av.EmptySecs = now.Sub(a.emptySince).Seconds()
		}
		v.Agents = append(v.Agents, av)
	}
	slices.SortFunc(v.Agents, func(a, b AgentView) int { return a.Started.Compare(b.Started) })
	for _, st := range c.queue {
		v.Queue = append(v.Queue, c.streamView(st))
	}
	for _, st := range c.streams {
		if st.state != streamQueued {
			v.Streams = append(v.Streams, c.streamView(st))
		}
	}
	slices.SortFunc(v.Streams, func(a, b StreamView) int { return strings.Compare(a.ID, b.ID) })
	c.viewMu.Lock()
	c.view = v
	c.viewMu.Unlock()
}

// View returns the agents, the streams and the queue as of the last event
// the coordinator handled.
func (c *Coordinator) View() View {
	c.viewMu.Lock()
	defer c.viewMu.Unlock()
	return c.view
}
