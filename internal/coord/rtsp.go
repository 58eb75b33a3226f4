package coord

// RTSP cameras (cameras.<id>.rtsp in vigil.yaml): agents pull them. The
// coordinator assigns their streams as it does JPEG ones, with a kind that
// agents count apart (ingest.Capacity), and keeps a ring of each on an
// agent while pre-roll is on, so that a recording started there begins
// before its trigger.

import (
	"fmt"
	"slices"

	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/ingest"
	"github.com/vigilhq/vigil/internal/rnd"
	"github.com/vigilhq/vigil/internal/telemetry"
)

// ringPriority puts rings behind recordings and ahead of live views when
// agents are scarce.
const ringPriority = -500

// rtspCameras makes the configured RTSP cameras known, as if they had
// announced themselves.
func (c *Coordinator) rtspCameras() {
	for id, cam := range c.cfg.Cameras {
		if cam.RTSP == nil {
			continue
		}
		name := cam.Name
		c.devices[id] = &deviceInfo{site: cam.Site, id: id, meta: &telemetry.Meta{
			Name: name, Zone: cam.Zone, Priority: cam.Priority, Capabilities: []string{telemetry.CapCamera},
		}}
	}
}

// rtspOf returns the camera's RTSP config, nil for a camera that pushes
// JPEG.
func (c *Coordinator) rtspOf(site, camera string) *conf.RTSPCamera {
	cam, ok := c.cfg.Cameras[camera]
	if !ok || cam.RTSP == nil || cam.Site != site {
		return nil
	}
	return cam.RTSP
}

// source is what an agent needs to pull a camera's stream (the sub-stream
// for live view when sub is set and the camera has one).
func source(r *conf.RTSPCamera, sub bool) *ingest.RTSPSource {
	u := r.URL
	if sub && r.SubURL != "" {
		u = r.SubURL
	}
	t := r.Transport
	switch t {
	case "":
		t = "tcp"
	case "auto":
		t = ""
	}
	return &ingest.RTSPSource{URL: u, Username: r.Username, Password: r.Password, Transport: t}
}

// kindOf is the kind of a stream.
func (st *stream) kindOf() string {
	if st.kind == "" {
		return ingest.KindJPEG
	}
	return st.kind
}

// pulled tells whether the agent pulls the stream (no camera is told).
func (st *stream) pulled() bool { return st.kind == ingest.KindRTSP || st.kind == ingest.KindRing }

// kinds lists the kinds of the agent's streams.
func (a *agentState) kinds() []string {
	k := make([]string, 0, len(a.streams))
	for _, st := range a.streams {
		k = append(k, st.kindOf())
	}
	return k
}

// fits tells whether the agent has room for one more stream of kind.
func (a *agentState) fits(kind string) bool { return a.caps.Fits(kind, a.kinds()...) }

// load is the share of the agent its streams use (1: full).
func (a *agentState) load() float64 {
	if len(a.streams) == 0 {
		return 0
	}
	return a.caps.Load(a.kinds()...)
}

// defaultCaps are the capacities agents start with.
func (c *Coordinator) defaultCaps() ingest.Capacity {
	return ingest.Capacity{JPEG: c.cfg.Agents.Capacity, RTSP: c.cfg.Agents.RTSPCapacity, Ring: c.cfg.Agents.RingCapacity}
}

// ensureRings queues a ring for every RTSP camera that has none, while
// pre-roll is on and agents keep rings.
func (c *Coordinator) ensureRings() {
	if c.closing || c.cfg.Recording.PreRollSeconds <= 0 || c.cfg.Agents.RingCapacity <= 0 {
		return
	}
	ids := make([]string, 0, len(c.cfg.Cameras))
	for id := range c.cfg.Cameras {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	added := false
	for _, id := range ids {
		cam := c.cfg.Cameras[id]
		if cam.RTSP == nil || c.rings[key(cam.Site, id)] != nil {
			continue
		}
		_, plan := c.planFor(cam.Site)
		pool := ""
		if plan.DedicatedAgent {
			pool = cam.Site
		}
		st := &stream{id: newID(), site: cam.Site, camera: id, pool: pool, kind: ingest.KindRing, rtsp: source(cam.RTSP, false),
			priority: ringPriority + cam.Priority, token: rnd.Hex(16)}
		c.streams[st.id] = st
		c.rings[key(cam.Site, id)] = st
		c.request(st)
		added = true
	}
	if added {
		c.drainQueue()
	}
}

// ringOf returns the agent holding the camera's ring, if one does.
func (c *Coordinator) ringOf(site, camera string) *agentState {
	if r := c.rings[key(site, camera)]; r != nil && r.state == streamLive && r.agent != nil {
		return r.agent
	}
	return nil
}

// describeKind names a stream's kind in the history.
func describeKind(st *stream) string {
	switch {
	case st.kind == ingest.KindRing:
		return "ring"
	case st.live && st.pulled():
		return "live RTSP stream"
	case st.live:
		return "live stream"
	case st.pulled():
		return "RTSP stream"
	}
	return "stream"
}

// shareText says how full an agent is, for the history.
func shareText(a *agentState) string {
	return fmt.Sprintf("%d stream(s), %.0f%% of the agent", len(a.streams), 100*a.load())
}
