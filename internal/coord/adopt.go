package coord

import (
	"context"
	"fmt"
	"time"

	"github.com/vigilhq/vigil/internal/detect"
	"github.com/vigilhq/vigil/internal/ingest"
	"github.com/vigilhq/vigil/internal/rnd"
)

// Among several nodes (Config.AdoptAfter), a coordinator that takes over
// from another one that died keeps what still runs: the agents of the one
// before go on heartbeating, each naming the streams it receives and the
// clip directory it records them in. The new coordinator adopts each such
// agent, and each stream whose clip was being recorded; the cameras go on
// sending to the same agents, which never noticed. A clip being recorded
// that no agent reports within AdoptAfter (its agent died with the node)
// is finished from its segments, marked interrupted.

// orphan is a clip that was being recorded when the coordinator before
// stopped.
type orphan struct {
	clip  Clip
	ev    *detect.Event // its event, not finished; nil if none
	until time.Time     // finished as interrupted then, unless adopted
}

// adopt takes over an agent of the coordinator before, from its heartbeat,
// with the recordings it reports; it ends the streams it cannot adopt
// (live views, clips it does not know).
func (c *Coordinator) adopt(id string, hb ingest.Heartbeat) *agentState {
	a := &agentState{id: id, username: agentUsername(id), status: agentStarting, caps: c.defaultCaps(),
		streams: map[string]*stream{}, startedAt: c.now(), reason: "adopted"}
	if hb.Capacity > 0 {
		a.caps.JPEG = hb.Capacity
	}
	a.secret = c.cfg.AgentLogin.Password // "": cameras with a password are not sent to it
	if hb.Capacities != nil {
		a.caps.RTSP, a.caps.Ring = max(hb.Capacities.RTSP, 0), max(hb.Capacities.Ring, 0)
	}
	c.agents[id] = a
	c.history("adopt", id, "", fmt.Sprintf("an agent of the coordinator before, %d stream(s)", len(hb.Streams)))
	for _, s := range hb.Streams {
		o := c.orphans[s.Dir]
		if s.LiveOnly || s.Dir == "" || o == nil || o.ev == nil {
			c.stopAt(id, &stream{id: s.StreamID})
			continue
		}
		delete(c.orphans, s.Dir)
		c.adoptStream(a, s, o)
	}
	return a
}

// adoptStream makes a stream of an orphan clip that agent a still records.
func (c *Coordinator) adoptStream(a *agentState, s ingest.StreamStatus, o *orphan) {
	now := c.now()
	es := c.events[o.ev.ID]
	if es == nil {
		es = &eventState{ev: o.ev}
		// Its other clips still orphans finish through it too.
		for _, other := range c.orphans {
			if other.clip.EventID == o.ev.ID {
				es.pending++
			}
		}
		c.events[o.ev.ID] = es
	}
	es.pending++
	cl := o.clip
	st := &stream{
		id: s.StreamID, ssrc: randomSSRC(), site: cl.Site, camera: cl.Camera, ev: es, clip: &cl, agent: a,
		state: streamLive, segIndex: len(cl.Segments), token: rnd.Hex(16), firstFrame: true,
		duration: time.Duration(c.cfg.Recording.ClipSeconds) * time.Second,
		started:  cl.Start, queuedAt: cl.Start, expectedAt: now, liveAt: now,
	}
	if d := c.devices[cl.Camera]; d != nil {
		st.priority = c.priority(d)
	}
	if r := c.rtspOf(cl.Site, cl.Camera); r != nil && s.Kind == ingest.KindRTSP {
		st.kind, st.rtsp = ingest.KindRTSP, source(r, false)
	}
	st.deadline = now.Add(st.remaining(now) + 3*c.cfg.Agents.Idle + 10*time.Second)
	a.streams[st.id] = st
	c.streams[st.id] = st
	c.byCamera[key(st.site, st.camera)] = st
	c.history("adopt_stream", a.id, st.camera, fmt.Sprintf("stream %s, clip %s", st.id, cl.ID))
}

// expireOrphans finishes the orphan clips no agent reported in time.
func (c *Coordinator) expireOrphans(now time.Time) {
	for dir, o := range c.orphans {
		if now.Before(o.until) {
			continue
		}
		delete(c.orphans, dir)
		cl := o.clip
		cl.Interrupted, cl.State = true, ClipFinishing
		c.saveClip(&cl)
		id := cl.ID
		c.saves.add(func(ctx context.Context) {
			select {
			case c.jobs <- id:
			default:
				c.log.Error("clip queue full; the clip will be finished at the next start", "clip", id)
			}
		})
		c.history("stream_end", "", cl.Camera, fmt.Sprintf("clip %s: no agent reported it after the coordinator before stopped", cl.ID))
		if c.events[cl.EventID] != nil || o.ev == nil {
			continue // its event ends with its adopted clips (clipFinished)
		}
		last := true
		for _, other := range c.orphans {
			last = last && other.clip.EventID != cl.EventID
		}
		if last {
			ev := *o.ev
			ev.State, ev.End = detect.EventPartial, &now
			c.saveEvent(&ev)
		}
	}
}
