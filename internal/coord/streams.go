package coord

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path"
	"slices"
	"time"

	"github.com/vigilhq/vigil/internal/agentrt"
	"github.com/vigilhq/vigil/internal/detect"
	"github.com/vigilhq/vigil/internal/hub"
	"github.com/vigilhq/vigil/internal/ingest"
	"github.com/vigilhq/vigil/internal/media"
	"github.com/vigilhq/vigil/internal/rnd"
	"github.com/vigilhq/vigil/internal/telemetry"
)

// Stream states.
const (
	streamQueued    = "queued"    // waiting for an agent with room
	streamExpecting = "expecting" // the agent was told; waiting for it to be ready
	streamLive      = "streaming" // the camera was told where to send
	streamDone      = "done"
)

// stream is one camera recording one event, possibly across agents, or
// (live) one camera streaming to an agent only to be watched.
type stream struct {
	id       string
	ssrc     uint32
	site     string
	camera   string
	clientID string // the camera's MQTT client id (a guess unless clientKnown)
	// clientKnown is set when the camera announced itself (its meta): its
	// reports are then heeded only from clientID.
	clientKnown bool
	pool        string
	priority    int
	ev          *eventState // nil for a live stream or a ring
	clip        *Clip       // nil for a live stream or a ring
	live        bool        // watched, not recorded
	// kind is "" (JPEG, pushed by the camera), ingest.KindRTSP or
	// ingest.KindRing (pulled by the agent from rtsp).
	kind string
	rtsp *ingest.RTSPSource
	// superseded is set when a detection needs the camera of a live
	// stream: the live stream ends and never tells the camera to stream.
	superseded bool
	token      string    // lets vigil up watch the stream at its agent
	viewers    int       // people watching it through vigil up
	lastViewer time.Time // when the last one left
	agent      *agentState
	state      string
	segIndex   int

	duration   time.Duration // of the clip
	started    time.Time     // when the camera was first told to stream
	queuedAt   time.Time
	expectedAt time.Time // when the current agent was told
	liveAt     time.Time // when the camera was told (this segment)
	deadline   time.Time
	firstFrame bool
	// since is where the camera's next agent starts: the frames from then
	// on are sent again, as the agent the stream left may not have
	// stored them. Zero once the camera was told.
	since time.Time
}

// remaining is what is left of the clip.
func (st *stream) remaining(now time.Time) time.Duration {
	if st.started.IsZero() {
		return st.duration
	}
	return st.duration - now.Sub(st.started)
}

type eventState struct {
	ev      *detect.Event
	pending int // clips not finished yet
	partial bool
}

// deviceInfo is what the coordinator knows of a device: its meta.
type deviceInfo struct {
	site, id, clientID string
	meta               *telemetry.Meta
	// guessed is set for a camera named in config that has not announced
	// itself: clientID is then its id, a guess.
	guessed bool
}

func key(site, id string) string { return site + "/" + id }

// Observe records devices' meta messages (cameras and their zones); it is a
// telemetry.Pipeline observer.
func (c *Coordinator) Observe(ev telemetry.Event) {
	if ev.Meta == nil {
		return
	}
	c.do(func() {
		c.devices[ev.DeviceID] = &deviceInfo{site: ev.Site, id: ev.DeviceID, clientID: ev.ClientID, meta: ev.Meta}
	})
}

// Detected handles a detection; it is the detector's output.
func (c *Coordinator) Detected(d detect.Detection) {
	c.do(func() { c.onDetection(d) })
}

// camerasFor chooses the cameras that record a sensor's detection: the
// sensor itself if it is a camera, the cameras of its zone (from its meta),
// and those of the configured zones that list it or that its meta names.
func (c *Coordinator) camerasFor(site, sensor string) []*deviceInfo {
	var out []*deviceInfo
	add := func(d *deviceInfo) {
		if d != nil && d.site == site && d.meta.Has(telemetry.CapCamera) && !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	s := c.devices[sensor]
	add(s)
	if s != nil && s.meta.Zone != "" {
		for _, d := range c.devices {
			if d.meta.Zone == s.meta.Zone {
				add(d)
			}
		}
	}
	for name, z := range c.cfg.Zones {
		if slices.Contains(z.Sensors, sensor) || (s != nil && s.meta.Zone == name) {
			for _, d := range c.devices { // RTSP cameras set in this zone
				if d.meta.Zone == name {
					add(d)
				}
			}
			for _, cam := range z.Cameras {
				if d := c.devices[cam]; d != nil {
					add(d)
				} else {
					// A camera named in config but not (yet) announced.
					add(&deviceInfo{site: site, id: cam, clientID: cam, guessed: true, meta: &telemetry.Meta{Capabilities: []string{telemetry.CapCamera}}})
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b *deviceInfo) int { return c.priority(b) - c.priority(a) })
	return out
}

// priority is a camera's priority: config wins over its meta.
func (c *Coordinator) priority(d *deviceInfo) int {
	if cc, ok := c.cfg.Cameras[d.id]; ok && cc.Priority != 0 {
		return cc.Priority
	}
	return d.meta.Priority
}

func (c *Coordinator) onDetection(d detect.Detection) {
	cams := c.camerasFor(d.Site, d.Sensor)
	ev := &detect.Event{ID: newID(), Site: d.Site, Sensor: d.Sensor, Start: d.At, State: detect.EventRecording, Distance: d.Distance, Cameras: []string{}}
	es := &eventState{ev: ev}
	var todo []*deviceInfo
	for _, cam := range cams {
		ev.Cameras = append(ev.Cameras, cam.id)
		ev.Priority = max(ev.Priority, c.priority(cam))
		if cur := c.byCamera[key(cam.site, cam.id)]; cur != nil && cur.live {
			c.supersede(cur)
		}
		if c.byCamera[key(cam.site, cam.id)] != nil {
			c.log.Info("camera already recording; the event shares its clip", "camera", cam.id, "event", ev.ID)
			continue
		}
		todo = append(todo, cam)
	}
	switch {
	case len(cams) == 0:
		ev.State = detect.EventNoCamera
		now := c.now()
		ev.End = &now
		c.log.Warn("detection with no camera to record it", "site", d.Site, "sensor", d.Sensor)
	case len(todo) == 0:
		ev.State = detect.EventMerged
		now := c.now()
		ev.End = &now
	}
	c.saveEvent(ev)
	if len(todo) == 0 {
		return
	}
	c.events[ev.ID] = es
	for _, cam := range todo {
		st := c.newStream(cam, es, d.At)
		es.pending++
		c.request(st)
	}
	if c.allQueued(es) {
		ev.State = detect.EventQueued
		c.saveEvent(ev)
	}
	c.drainQueue()
}

func (c *Coordinator) allQueued(es *eventState) bool {
	for _, st := range c.streams {
		if st.ev == es && st.state != streamQueued {
			return false
		}
	}
	return true
}

// saveEvent saves a copy of ev as it is now (see saver).
func (c *Coordinator) saveEvent(ev *detect.Event) {
	cp := *ev
	cp.Cameras = slices.Clone(ev.Cameras)
	c.saves.add(func(ctx context.Context) {
		if err := c.store.SaveEvent(ctx, &cp); err != nil {
			c.log.Error("save event", "event", cp.ID, "error", err)
		}
	})
	c.changed(hub.EventEvent, cp)
}

// saveClip saves a copy of cl as it is now (see saver).
func (c *Coordinator) saveClip(cl *Clip) {
	cp := *cl
	cp.Segments = slices.Clone(cl.Segments)
	c.saves.add(func(ctx context.Context) {
		if err := c.store.SaveClip(ctx, &cp); err != nil {
			c.log.Error("save clip", "clip", cp.ID, "error", err)
		}
	})
	c.changed(hub.EventClip, cp)
}

func (c *Coordinator) newStream(cam *deviceInfo, es *eventState, at time.Time) *stream {
	_, plan := c.planFor(cam.site)
	pool := ""
	if plan.DedicatedAgent {
		pool = cam.site
	}
	clip := &Clip{
		ID: newID(), EventID: es.ev.ID, Site: cam.site, Camera: cam.id, Start: at, State: ClipRecording, Segments: []string{},
	}
	clip.Dir = path.Join(cam.site, cam.id, at.UTC().Format("2006-01-02"), clip.ID)
	c.saveClip(clip)
	st := &stream{
		id: newID(), ssrc: randomSSRC(), site: cam.site, camera: cam.id, clientID: cam.clientID, clientKnown: !cam.guessed && cam.clientID != "", pool: pool,
		priority: c.priority(cam), ev: es, clip: clip, token: rnd.Hex(16),
		duration: time.Duration(c.cfg.Recording.ClipSeconds) * time.Second,
	}
	if r := c.rtspOf(cam.site, cam.id); r != nil {
		st.kind, st.rtsp = ingest.KindRTSP, source(r, false)
	}
	c.streams[st.id] = st
	c.byCamera[key(cam.site, cam.id)] = st
	return st
}

// request puts a stream in the queue, ordered by priority then age.
func (c *Coordinator) request(st *stream) {
	st.state = streamQueued
	st.agent = nil
	if st.queuedAt.IsZero() {
		st.queuedAt = c.now()
	}
	c.queue = append(c.queue, st)
	slices.SortStableFunc(c.queue, func(a, b *stream) int {
		if a.priority != b.priority {
			return b.priority - a.priority
		}
		return a.queuedAt.Compare(b.queuedAt)
	})
}

// drainQueue gives queued streams to agents with room, highest priority
// first; autoscale starts agents for the rest.
func (c *Coordinator) drainQueue() {
	if c.closing {
		return
	}
	var left []*stream
	for _, st := range c.queue {
		if !c.assign(st) {
			left = append(left, st)
		}
	}
	if len(left) < len(c.queue) || len(left) > 0 {
		c.queue = left
	}
	for _, st := range left {
		if st.ev != nil && st.ev.ev.State == detect.EventRecording && c.allQueued(st.ev) {
			st.ev.ev.State = detect.EventQueued
			c.saveEvent(st.ev.ev)
		}
	}
	c.autoscale()
}

// assign gives a stream to the fullest agent that still has room (packing
// streams frees whole agents for scale-down, as in the paper). Among
// several nodes, agents on other nodes than the coordinator's go first:
// the coordinator's node dying then ends no recording (adopt.go).
func (c *Coordinator) assign(st *stream) bool {
	isLocal := c.local
	var best *agentState
	// An RTSP recording goes first to the agent that holds the camera's
	// ring: it starts with the seconds before the trigger.
	ring := c.ringOf(st.site, st.camera)
	if st.kind == ingest.KindRTSP && !st.live && ring != nil && ring.status == agentReady && ring.pool == st.pool && ring.fits(st.kindOf()) {
		best = ring
	}
	for _, a := range c.agents {
		if best == ring && best != nil {
			break
		}
		if a.status != agentReady || a.pool != st.pool || !a.fits(st.kindOf()) || (a.addr == "" && !st.pulled()) {
			continue
		}
		switch {
		case best == nil:
			best = a
		case isLocal(a) != isLocal(best):
			if !isLocal(a) {
				best = a
			}
		case len(a.streams) > len(best.streams) || (len(a.streams) == len(best.streams) && a.seq < best.seq):
			best = a
		}
	}
	if best == nil {
		return false
	}
	now := c.now()
	st.agent = best
	best.streams[st.id] = st
	st.segIndex++
	st.state = streamExpecting
	st.expectedAt = now
	cmd := ingest.AgentCommand{
		Action: ingest.ActionExpect, StreamID: st.id, SSRC: st.ssrc, Source: c.sourceFor(st),
		Duration: int(st.remaining(now).Seconds() + 0.999), Camera: st.camera, Site: st.site, LiveToken: st.token,
	}
	if st.pulled() {
		src := *st.rtsp
		if src.Password != "" {
			var err error
			if src.Sealed, err = ingest.Seal(best.secret, src.Password); err != nil {
				c.log.Warn("cannot seal the camera's password for its agent; the agent pulls it without", "camera", st.camera, "agent", best.id, "error", err)
			}
		}
		cmd.SSRC, cmd.Source, cmd.Kind, cmd.RTSP = 0, "", st.kind, &src
		if st.kind == ingest.KindRing {
			cmd.Duration, cmd.PreRoll = 0, c.cfg.Recording.PreRollSeconds
		} else if !st.live && st.segIndex == 1 && best == ring {
			cmd.PreRoll = c.cfg.Recording.PreRollSeconds
		}
	}
	if st.kind == ingest.KindRing {
		// Nothing stored.
	} else if st.live {
		cmd.LiveOnly = true
	} else {
		if m, ok := c.runtime.(agentrt.SiteDirMaker); ok {
			if err := m.MakeSiteDir(st.site); err != nil {
				c.log.Warn("cannot make the site's clip directory", "site", st.site, "error", err)
			}
		}
		seg := fmt.Sprintf("seg-%02d-%s.mp4", st.segIndex, best.id)
		st.clip.Segments = append(st.clip.Segments, seg)
		c.saveClip(st.clip)
		cmd.Dir, cmd.Segment = st.clip.Dir, seg
	}
	c.publish(ingest.AgentTopic(best.id, ingest.AgentCmd), cmd)
	what := "assign"
	if st.segIndex > 1 {
		what = "reassign"
	}
	c.history(what, best.id, st.camera, fmt.Sprintf("%s %s, %s", describeKind(st), st.id, shareText(best)))
	if st.ev != nil && st.ev.ev.State == detect.EventQueued {
		st.ev.ev.State = detect.EventRecording
		c.saveEvent(st.ev.ev)
	}
	return true
}

// sourceFor is the IP the agent should accept a camera's packets from: the
// address of its MQTT connection, unless that is loopback (packets from this
// host may reach an agent in a container from the bridge's address).
func (c *Coordinator) sourceFor(st *stream) string {
	ip := net.ParseIP(c.broker.ClientIP(st.clientID))
	if ip == nil || ip.IsLoopback() {
		return ""
	}
	return ip.String()
}

// stopAt tells an agent to end a stream.
func (c *Coordinator) stopAt(agent string, st *stream) {
	c.publish(ingest.AgentTopic(agent, ingest.AgentCmd), ingest.StopStream(st.id))
}

func (c *Coordinator) publish(topic string, v any) {
	b, _ := json.Marshal(v)
	if err := c.broker.Publish(topic, b, false, 1); err != nil {
		c.log.Warn("publish", "topic", topic, "error", err)
	}
}

// onSegment follows an agent's reports on a stream.
func (c *Coordinator) onSegment(agentID string, r ingest.SegmentReport) {
	st := c.streams[r.StreamID]
	if st == nil || st.agent == nil || st.agent.id != agentID {
		return // a report for a stream that moved on
	}
	now := c.now()
	switch r.State {
	case ingest.SegmentExpecting:
		if st.state != streamExpecting {
			return
		}
		if st.superseded {
			c.stopAt(st.agent.id, st)
			return
		}
		if st.pulled() {
			// The agent pulls the camera itself: nobody else is told.
			st.state = streamLive
			if st.started.IsZero() {
				st.started = now
			}
			st.liveAt = now
			st.deadline = time.Time{}
			if st.kind != ingest.KindRing {
				st.deadline = now.Add(st.remaining(now) + 3*c.cfg.Agents.Idle + 10*time.Second)
			}
			return
		}
		if st.agent.addr == "" {
			// Its address was refused since it took the stream: tell the
			// camera nothing, give the stream to another agent.
			a := st.agent
			delete(a.streams, st.id)
			c.stopAt(a.id, st)
			c.interrupted(st, "agent "+a.id+" has no address cameras may be sent to")
			c.drainQueue()
			return
		}
		st.state = streamLive
		first := st.started.IsZero()
		if first {
			st.started = now
		}
		st.liveAt = now
		remaining := st.remaining(now)
		st.deadline = now.Add(remaining + 3*c.cfg.Agents.Idle + 10*time.Second)
		host, port, _ := net.SplitHostPort(st.agent.addr)
		var p int
		fmt.Sscan(port, &p)
		_, plan := c.planFor(st.site)
		cmd := ingest.StreamCommand{
			Action: ingest.ActionStream, StreamID: st.id, Transport: ingest.Transport,
			Host: host, Port: p, SSRC: st.ssrc, Duration: int(remaining.Seconds() + 0.999),
			FPS: plan.FPS, Width: plan.Width, Height: plan.Height, Quality: plan.Quality,
			MaxPacket: 1200, Resume: !first,
		}
		if !first && !st.since.IsZero() {
			cmd.Since = st.since.UnixMilli()
			st.since = time.Time{}
		}
		if st.ev != nil {
			cmd.EventID = st.ev.ev.ID
		}
		if first && !st.live {
			cmd.PreRoll = c.cfg.Recording.PreRollSeconds
		}
		c.publish(ingest.CameraTopic(st.site, st.camera, ingest.CameraCmd), cmd)
	case ingest.SegmentRecording:
		if st.clip != nil && st.segIndex == 1 && r.PreRollMS > 0 && st.clip.PreRollMS == 0 {
			st.clip.PreRollMS = r.PreRollMS
			c.saveClip(st.clip)
		}
		if !st.firstFrame && !r.FirstStored.IsZero() && st.ev != nil {
			st.firstFrame = true
			c.m.firstFrame.Observe(r.FirstStored.Sub(st.ev.ev.Start).Seconds())
		}
	case ingest.SegmentDone:
		delete(st.agent.streams, st.id)
		if len(st.agent.streams) == 0 {
			st.agent.emptySince = now
		}
		if st.live {
			c.finish(st) // a viewer asks again if it still wants to watch
			c.drainQueue()
			return
		}
		if st.kind == ingest.KindRing {
			c.finish(st)
			if r.Reason != ingest.EndQuit {
				c.ensureRings() // on this agent or another
			}
			c.drainQueue()
			return
		}
		st.clip.Packets += r.Packets
		st.clip.PacketsLost += r.Lost
		if r.Reconnects > 0 || r.Reason == ingest.EndLost {
			// The camera was lost and reached again (or not): the clip
			// has a gap, and says so.
			st.clip.Interrupted = true
			c.log.Warn("camera lost during a recording", "camera", st.camera, "stream", st.id, "reconnects", r.Reconnects, "gap_ms", r.GapMS, "reason", r.Reason)
		}
		switch {
		case r.Reason == ingest.EndFormat:
			// The camera changed its resolution: what is left goes into
			// another segment.
			st.clip.Interrupted = true
			c.interrupted(st, "camera "+st.camera+" changed its format")
		case r.Reason == ingest.EndShutdown || len(r.Reason) > 6 && r.Reason[:6] == "error:":
			c.interrupted(st, "agent "+agentID+": "+r.Reason)
		case r.Reason == ingest.EndIdle && r.Frames == 0 && st.remaining(now) > 2*time.Second:
			// Nothing ever came: the camera may have missed its command.
			c.interrupted(st, "no video reached agent "+agentID)
		default:
			c.finish(st)
		}
		c.drainQueue()
	}
}

// interrupted moves a stream whose agent went away to another agent, for
// what is left of its clip; the clip keeps the partial segment.
func (c *Coordinator) interrupted(st *stream, why string) {
	if st.state == streamDone {
		return
	}
	if st.live {
		c.finish(st) // a viewer asks again if it still wants to watch
		return
	}
	if st.kind == ingest.KindRing {
		if c.closing {
			c.finish(st)
		} else {
			c.request(st) // to another agent
		}
		return
	}
	st.clip.Interrupted = st.clip.Interrupted || st.segIndex > 0 && st.state == streamLive
	now := c.now()
	if st.state == streamLive && st.agent != nil && st.since.IsZero() {
		// What the agent stored is on disk up to a fragment before it was
		// last heard of (a heartbeat a second).
		seen := st.agent.lastSeen
		if seen.IsZero() || seen.After(now) {
			seen = now
		}
		st.since = seen.Add(-media.FragmentDuration - time.Second)
	}
	if c.closing || (st.state == streamLive && st.remaining(now) < time.Second) {
		c.finish(st) // shutting down, or (nearly) done: keep what there is
		return
	}
	c.log.Warn("stream moves to another agent", "stream", st.id, "camera", st.camera, "why", why, "remaining", st.remaining(now).Round(time.Second))
	st.priority += 1000 // a stream already under way goes first
	c.request(st)
	c.m.reassigned.Inc()
}

// onCameraStream handles a camera's report on its stream, published on
// vigil/<site>/<camera>/stream by clientID: "quit" (the seed's [Quit]) ends
// it at the agent. A report counts only for a stream of that site and
// camera, and only from the camera's own client id when it is known.
func (c *Coordinator) onCameraStream(site, camera, clientID string, e ingest.CameraStreamEvent) {
	st := c.streams[e.StreamID]
	if st == nil {
		return
	}
	if st.site != site || st.camera != camera {
		c.refuse("stream", refusedOtherCamera, "camera report refused: the stream is another camera's",
			"site", site, "camera", camera, "stream", e.StreamID, "client_id", clientID)
		return
	}
	if st.clientKnown && clientID != st.clientID {
		c.refuse("stream", refusedOtherClient, "camera report refused: not from the camera's client",
			"site", site, "camera", camera, "stream", e.StreamID, "client_id", clientID)
		return
	}
	switch e.State {
	case ingest.CameraQuit:
		if st.agent != nil {
			c.stopAt(st.agent.id, st)
		}
	case ingest.CameraError:
		c.log.Warn("camera cannot stream", "camera", st.camera, "stream", st.id, "reason", e.Reason)
	}
}

// checkStream enforces a stream's timers.
func (c *Coordinator) checkStream(st *stream, now time.Time) {
	switch st.state {
	case streamExpecting:
		if now.Sub(st.expectedAt) > 5*time.Second {
			a := st.agent
			delete(a.streams, st.id)
			c.history("expect_timeout", a.id, st.camera, "the agent did not take the stream within 5s")
			c.lost(a, "did not take a stream")
			c.interrupted(st, "agent did not answer")
		}
	case streamLive:
		if st.live && !st.superseded && st.viewers == 0 && now.Sub(later(st.liveAt, st.lastViewer)) > liveIdle {
			c.log.Info("live view ends: nobody watches", "camera", st.camera, "stream", st.id)
			c.supersede(st)
			return
		}
		if !st.deadline.IsZero() && now.After(st.deadline) && st.agent != nil {
			c.stopAt(st.agent.id, st)
			st.deadline = now.Add(10 * time.Second)
		}
	}
}

// finish ends a stream and hands its clip to the finisher.
func (c *Coordinator) finish(st *stream) {
	if st.state == streamDone {
		return
	}
	st.state = streamDone
	if st.agent != nil {
		delete(st.agent.streams, st.id)
	}
	delete(c.streams, st.id)
	if c.byCamera[key(st.site, st.camera)] == st {
		delete(c.byCamera, key(st.site, st.camera))
	}
	if c.rings[key(st.site, st.camera)] == st {
		delete(c.rings, key(st.site, st.camera))
	}
	c.queue = slices.DeleteFunc(c.queue, func(x *stream) bool { return x == st })
	if st.live || st.kind == ingest.KindRing {
		c.history("stream_end", agentName(st.agent), st.camera, fmt.Sprintf("%s %s", describeKind(st), st.id))
		return
	}
	st.clip.State = ClipFinishing
	c.saveClip(st.clip)
	c.history("stream_end", agentName(st.agent), st.camera, fmt.Sprintf("stream %s, %d segment(s)", st.id, st.segIndex))
	id := st.clip.ID
	c.saves.add(func(context.Context) { // once it is saved finishing
		select {
		case c.jobs <- id:
		default:
			c.log.Error("clip queue full; the clip will be finished at the next start", "clip", id)
		}
	})
}

// local tells whether an agent runs on the coordinator's own node, among
// several (agentrt.Remote); false on one node.
func (c *Coordinator) local(a *agentState) bool {
	l, ok := c.runtime.(interface{ Local(id string) bool })
	return ok && l.Local(a.id)
}

func agentName(a *agentState) string {
	if a == nil {
		return ""
	}
	return a.id
}

// clipFinished updates the clip's event when a clip is done.
func (c *Coordinator) clipFinished(cl Clip) {
	es := c.events[cl.EventID]
	if es == nil {
		return
	}
	if cl.State != ClipReady || cl.Interrupted {
		es.partial = true
	}
	es.pending--
	if es.pending > 0 {
		return
	}
	delete(c.events, cl.EventID)
	now := c.now()
	es.ev.End = &now
	es.ev.State = detect.EventRecorded
	if es.partial {
		es.ev.State = detect.EventPartial
	}
	c.saveEvent(es.ev)
}

// supersede ends a live stream whose camera a detection needs. The camera
// drops it when told to record; the agent is told to stop.
func (c *Coordinator) supersede(st *stream) {
	st.superseded = true
	if c.byCamera[key(st.site, st.camera)] == st {
		delete(c.byCamera, key(st.site, st.camera))
	}
	switch st.state {
	case streamQueued:
		c.finish(st)
	case streamExpecting:
		c.stopAt(st.agent.id, st)
	case streamLive:
		if !st.pulled() {
			c.stopCamera(st)
		}
		c.stopAt(st.agent.id, st)
	}
	c.log.Info("live view gives way to a recording", "camera", st.camera, "stream", st.id)
}
