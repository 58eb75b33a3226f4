package coord

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/vigilhq/vigil/internal/agentrt"
	"github.com/vigilhq/vigil/internal/ingest"
	"github.com/vigilhq/vigil/internal/rnd"
	"github.com/vigilhq/vigil/internal/users"
)

// Agent statuses.
const (
	agentStarting = "starting" // launched, not heard from yet
	agentReady    = "ready"    // heartbeating; takes streams
	agentLost     = "lost"     // silent or exited; its runtime may bring it back
	agentStopping = "stopping" // being stopped by the autoscaler
)

// AgentLost is the status of an agent that stopped answering.
const AgentLost = agentLost

type agentState struct {
	id, username string
	secret       string // its MQTT password: camera passwords are sealed with it
	pool         string // "" for the shared pool, else the site it is dedicated to
	status       string
	addr         string
	httpAddr     string          // its live view server
	caps         ingest.Capacity // streams it takes, per kind
	streams      map[string]*stream
	lastSeen     time.Time
	emptySince   time.Time
	startedAt    time.Time
	seq          int // order of start: agents started earlier have lower ones
	readyAt      time.Time
	lostAt       time.Time
	reason       string // why it was started
}

// lostGrace is how long a lost agent may take to come back before it is
// removed.
const lostGrace = 30 * time.Second

// subscribe listens to the agents and the cameras. Who published each
// message is asked of the broker here, while it is being delivered; the
// decision is made on the coordinator's goroutine (see trust.go).
func (c *Coordinator) subscribe() error {
	if err := c.broker.Subscribe(ingest.AgentFilter, func(topic string, payload []byte, clientID string) {
		parts := strings.Split(topic, "/")
		if len(parts) != 4 {
			return
		}
		id, leaf := parts[2], parts[3]
		switch leaf {
		case ingest.AgentHeartbeat, ingest.AgentState, ingest.AgentSegment:
		default:
			return // "cmd" is the coordinator's own
		}
		o := c.originOf(clientID)
		p := append([]byte(nil), payload...)
		c.do(func() {
			if why := fromAgent(id, leaf, p, o); why != "" && !c.cfg.TrustBroker {
				c.refuse(leaf, why, "agent report refused: not from the agent's own connection",
					"agent", id, "client_id", o.clientID, "login", o.login, "connected", o.connected)
				return
			}
			switch leaf {
			case ingest.AgentHeartbeat:
				var hb ingest.Heartbeat
				if json.Unmarshal(p, &hb) == nil {
					c.onHeartbeat(id, hb, o.ip)
				}
			case ingest.AgentState:
				c.onAgentState(id, string(p))
			case ingest.AgentSegment:
				var r ingest.SegmentReport
				if json.Unmarshal(p, &r) == nil {
					c.onSegment(id, r)
				}
			}
		})
	}); err != nil {
		return err
	}
	return c.broker.Subscribe(ingest.CameraStreamFilter, func(topic string, payload []byte, clientID string) {
		parts := strings.Split(topic, "/")
		var e ingest.CameraStreamEvent
		if len(parts) == 4 && json.Unmarshal(payload, &e) == nil {
			c.do(func() { c.onCameraStream(parts[1], parts[2], clientID, e) })
		}
	})
}

// startAgent asks the runtime for a new agent in pool.
func (c *Coordinator) startAgent(pool, reason string) *agentState {
	c.nextID++
	id := fmt.Sprintf("%s-%d", c.instance, c.nextID)
	a := &agentState{
		id: id, username: agentUsername(id), pool: pool, status: agentStarting,
		caps: c.defaultCaps(), streams: map[string]*stream{}, startedAt: c.now(), seq: c.nextID, reason: reason,
	}
	username, password := a.username, rnd.Hex(18)
	if l := c.cfg.AgentLogin; l.Username != "" {
		username, password = l.Username, l.Password
	}
	a.secret = password
	if l := c.cfg.AgentLogin; l.Username == "" {
		c.broker.AddCredential(a.username, password, &users.User{
			Name: a.username, Role: users.RoleDevice,
			Publish:   []string{ingest.AgentTopic(id, "#")},
			Subscribe: []string{ingest.AgentTopic(id, ingest.AgentCmd)},
		}, ingest.AgentClientID(id))
	}
	c.agents[id] = a
	what := "scale_up"
	if pool != "" {
		what = "scale_up_dedicated"
		reason += " (site " + pool + ")"
	}
	c.history(what, id, "", reason)
	spec := agentrt.Spec{ID: id, Username: username, Password: password, Capacity: a.caps.JPEG, Idle: c.cfg.Agents.Idle, Site: pool,
		RTSPCapacity: a.caps.RTSP, RingCapacity: a.caps.Ring}
	c.calls.Go(func() {
		ctx, cancel := context.WithTimeout(c.starts, 2*time.Minute)
		defer cancel()
		if err := c.runtime.Start(ctx, spec, func(err error) { c.onRuntimeExit(id, err) }); err != nil {
			c.do(func() { c.startFailed(id, err) })
		}
	})
	return a
}

func (c *Coordinator) startFailed(id string, err error) {
	a := c.agents[id]
	if a == nil {
		return
	}
	if c.closing { // Close cancelled the start
		delete(c.agents, id)
		c.broker.RemoveCredential(a.username)
		return
	}
	c.log.Error("agent did not start", "agent", id, "runtime", c.runtime.Name(), "error", err)
	delete(c.agents, id)
	c.broker.RemoveCredential(a.username)
	c.startFailures++
	backoff := min(time.Second<<min(c.startFailures, 6), time.Minute)
	c.startBlockedUntil = c.now().Add(backoff)
	c.history("start_failed", id, "", fmt.Sprintf("%v; next try in %v", err, backoff))
}

// onHeartbeat marks an agent alive; its first heartbeat with an address
// cameras may be sent to makes it ready. from is where the agent's MQTT
// connection comes from.
func (c *Coordinator) onHeartbeat(id string, hb ingest.Heartbeat, from net.IP) {
	a := c.agents[id]
	if a == nil && c.cfg.AdoptAfter > 0 && !c.closing && instanceOf(id) != c.instance && !c.gone[id] {
		a = c.adopt(id, hb) // an agent of the coordinator before
	}
	if a == nil || a.status == agentStopping {
		return
	}
	a.lastSeen = c.now()
	hadAddr := a.addr != ""
	// Cameras are sent to this address: only one on the host the agent
	// connects from, or none (and no new streams for the agent).
	if err := checkAgentAddr(hb.Addr, from, c.cfg.TrustBroker); err != nil {
		a.addr = ""
		c.refuse("heartbeat", refusedBadAddr, "agent's RTP address refused; it gets no streams", "agent", id, "addr", hb.Addr, "error", err)
	} else {
		a.addr = hb.Addr
	}
	a.httpAddr = ""
	// vigil up fetches live pictures from this address: only where the
	// agent's own MQTT connection comes from (an agent cannot point vigil
	// up at another host).
	if host, _, err := net.SplitHostPort(hb.HTTPAddr); err == nil {
		if ip := net.ParseIP(host); sameHost(ip, from) || (c.cfg.TrustBroker && ip != nil) {
			a.httpAddr = hb.HTTPAddr
		} else if a.status == agentStarting {
			c.log.Warn("agent's live view address is not where it connects from; live view through it is off", "agent", id, "addr", hb.HTTPAddr)
		}
	}
	if hb.Capacity > 0 {
		a.caps.JPEG = hb.Capacity
	}
	if hb.Capacities != nil {
		a.caps.RTSP, a.caps.Ring = max(hb.Capacities.RTSP, 0), max(hb.Capacities.Ring, 0)
	}
	switch {
	case (a.status == agentStarting || a.status == agentLost) && a.addr != "":
		c.ready(a)
	case a.status == agentReady && !hadAddr && a.addr != "":
		c.drainQueue() // it takes streams again
	}
}

// onAgentState follows an agent's full/empty/offline changes.
func (c *Coordinator) onAgentState(id, state string) {
	a := c.agents[id]
	if a == nil {
		return
	}
	switch state {
	case ingest.StateOffline:
		if a.status != agentStopping {
			c.lost(a, "said offline (last will)")
		}
	case ingest.StateEmpty, ingest.StateBusy, ingest.StateFull:
		a.lastSeen = c.now()
		c.m.agentStates.WithLabelValues(state).Inc()
		if (a.status == agentStarting || a.status == agentLost) && a.addr != "" {
			c.ready(a)
		}
	}
}

func (c *Coordinator) ready(a *agentState) {
	first := a.status == agentStarting
	a.status = agentReady
	a.readyAt = c.now()
	a.emptySince = c.now()
	if first {
		c.startFailures = 0
		took := a.readyAt.Sub(a.startedAt)
		c.m.scaleUp.Observe(took.Seconds())
		c.history("agent_ready", a.id, "", fmt.Sprintf("ready %dms after start (%s)", took.Milliseconds(), a.reason))
	} else {
		c.history("agent_back", a.id, "", "heard from again")
	}
	c.drainQueue()
}

// lost takes an agent out of service and moves its streams elsewhere.
func (c *Coordinator) lost(a *agentState, why string) {
	if a.status == agentLost {
		return
	}
	a.status = agentLost
	a.lostAt = c.now()
	c.history("agent_lost", a.id, "", why)
	for _, st := range a.streams {
		delete(a.streams, st.id)
		c.interrupted(st, "agent "+a.id+" lost: "+why)
	}
	c.drainQueue()
}

// onRuntimeExit is called by the runtime when an agent exits on its own.
func (c *Coordinator) onRuntimeExit(id string, err error) {
	c.do(func() {
		if a := c.agents[id]; a != nil && a.status != agentStopping {
			c.lost(a, fmt.Sprintf("exited: %v", err))
		}
	})
}

// tick runs the timers: silent agents, stuck streams, scaling.
func (c *Coordinator) tick() {
	now := c.now()
	cfg := c.cfg.Agents
	for _, a := range c.agents {
		switch {
		case a.status == agentReady && now.Sub(a.lastSeen) > cfg.HeartbeatTimeout:
			c.lost(a, fmt.Sprintf("no heartbeat for %v", cfg.HeartbeatTimeout))
		case a.status == agentStarting && now.Sub(a.startedAt) > 90*time.Second:
			c.history("start_timeout", a.id, "", "not heard from 90s after start")
			c.stopAgent(a)
		case a.status == agentLost && now.Sub(a.lostAt) > lostGrace:
			// Its runtime did not bring it back (Docker does not restart
			// agents): remove it, so that it no longer counts towards
			// agents.max.
			c.history("agent_removed", a.id, "", fmt.Sprintf("lost for %v", lostGrace))
			c.stopAgent(a)
		}
	}
	for _, st := range c.streams {
		c.checkStream(st, now)
	}
	c.expireOrphans(now)
	c.autoscale()
	c.scaleDown(now)
}

// liveAgents counts agents that are or will be in service.
func (c *Coordinator) liveAgents() int {
	n := 0
	for _, a := range c.agents {
		if a.status != agentStopping {
			n++
		}
	}
	return n
}

// autoscale starts agents for queued streams, pool by pool, unless agents
// already starting will have room for them or the pool is at its maximum.
func (c *Coordinator) autoscale() {
	if c.closing || c.now().Before(c.startBlockedUntil) {
		return
	}
	// What the queue needs, in agents: each stream's share of an agent
	// of the default capacities (a kind no agent takes needs none).
	caps := c.defaultCaps()
	need := map[string]float64{}
	count := map[string]int{}
	for _, st := range c.queue {
		if caps.Of(st.kindOf()) > 0 {
			need[st.pool] += caps.Load(st.kindOf())
			count[st.pool]++
		}
	}
	for pool, n := range need {
		starting, total := 0.0, 0
		for _, a := range c.agents {
			if a.pool != pool || a.status == agentStopping {
				continue
			}
			total++
			if a.status == agentStarting {
				starting += 1 - a.load()
			}
		}
		max := c.cfg.Agents.Max
		if pool != "" {
			max = 1
		}
		for starting < n-1e-9 && total < max {
			c.startAgent(pool, fmt.Sprintf("%d stream(s) waiting, every agent full", count[pool]))
			starting++
			total++
		}
		if starting < n-1e-9 && total >= max {
			c.m.atMax.Inc()
		}
	}
}

// scaleDown stops agents that have been empty for the cooldown, keeping
// agents.min in the shared pool. One agent per tick, newest first.
func (c *Coordinator) scaleDown(now time.Time) {
	if len(c.queue) > 0 {
		return
	}
	shared, local := 0, 0
	for _, a := range c.agents {
		if a.pool == "" && (a.status == agentReady || a.status == agentStarting) {
			shared++
			if c.local(a) {
				local++
			}
		}
	}
	var victim *agentState
	for _, a := range c.agents {
		if a.status != agentReady || len(a.streams) > 0 || now.Sub(a.emptySince) < c.cfg.Agents.ScaleDownCooldown {
			continue
		}
		if a.pool == "" && shared <= c.cfg.Agents.Min {
			continue
		}
		// The last agent on another node than the coordinator's stays
		// while agents run on the coordinator's own: new streams go to
		// it (assign), and the coordinator's death ends none of them. A
		// new coordinator that adopted busy agents on its own node lost
		// its only other one here, when it was empty.
		if a.pool == "" && local > 0 && shared-local == 1 && !c.local(a) {
			continue
		}
		// The coordinator's own node's agents first (assign says why),
		// then the newest.
		if victim == nil || (c.local(a) && !c.local(victim)) || (c.local(a) == c.local(victim) && a.seq > victim.seq) {
			victim = a
		}
	}
	if victim != nil {
		c.history("scale_down", victim.id, "", fmt.Sprintf("empty for %v", now.Sub(victim.emptySince).Round(time.Second)))
		c.stopAgent(victim)
	}
}

func (c *Coordinator) stopAgent(a *agentState) {
	a.status = agentStopping
	for _, st := range a.streams {
		delete(a.streams, st.id)
		c.interrupted(st, "agent "+a.id+" stopped")
	}
	c.calls.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		err := c.runtime.Stop(ctx, a.id)
		c.do(func() {
			if err != nil {
				c.log.Warn("stop agent", "agent", a.id, "error", err)
			}
			delete(c.agents, a.id)
			c.gone[a.id] = true // a heartbeat still on its way adopts nothing
			c.broker.RemoveCredential(a.username)
		})
	})
}
