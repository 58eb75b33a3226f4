// Package coord is the seed's main server: the coordinator of Vigil's video
// path. It keeps the registry of cameras and ingest agents, turns each
// detection into streams (one per camera), gives each stream to an agent
// with room (the paper's 3 streams per agent), tells the camera where to
// send, autoscales the agents through a Runtime (child processes or Docker
// containers), moves streams off agents that die, queues cameras by
// priority when agents are at their maximum, finishes clips and applies
// retention.
//
// All of its state belongs to one goroutine: every input (a detection, an
// MQTT message, a timer, a runtime exit) is a function run on it in turn.
package coord

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/detect"
	"github.com/vigilhq/vigil/internal/media"
	"github.com/vigilhq/vigil/internal/ratelog"
	"github.com/vigilhq/vigil/internal/rnd"
	"github.com/vigilhq/vigil/internal/users"
)

// Broker is what the coordinator needs of the MQTT broker.
type Broker interface {
	Publish(topic string, payload []byte, retain bool, qos byte) error
	Subscribe(filter string, h func(topic string, payload []byte, clientID string)) error
	AddCredential(name, password string, u *users.User, clientIDs ...string)
	RemoveCredential(name string)
	// ClientIP is the IP a connected client connects from, or "".
	ClientIP(clientID string) string
	// ClientLogin is the name a connected client logged in with ("" when
	// anonymous); ok is false when no client with that id is connected.
	ClientLogin(clientID string) (name string, ok bool)
}

// Store is what the coordinator needs of the database.
type Store interface {
	SaveEvent(ctx context.Context, e *detect.Event) error
	GetEvent(ctx context.Context, id string) (detect.Event, error)
	UnfinishedEvents(ctx context.Context) ([]detect.Event, error)
	SaveClip(ctx context.Context, c *Clip) error
	GetClip(ctx context.Context, id string) (Clip, error)
	ClipsInState(ctx context.Context, state string) ([]Clip, error)
	OldestClips(ctx context.Context, site string, keep int) ([]Clip, error)
	OldestClipsAll(ctx context.Context, limit int) ([]Clip, error)
	SetClipState(ctx context.Context, id, state string) error
	DeleteClip(ctx context.Context, id string) error
	AddHistory(ctx context.Context, h *HistoryEntry) error
}

// Runtime starts and stops agents. Its implementations run them as child
// processes or as Docker containers.
type Runtime interface {
	Name() string
	// Start launches an agent; it returns once the agent is launched, not
	// necessarily connected (the coordinator waits for its first
	// heartbeat).
	Start(ctx context.Context, spec AgentSpec) error
	// Stop stops an agent and waits for it to be gone.
	Stop(ctx context.Context, id string) error
	Close() error
}

// siteDirMaker is a Runtime whose agents may be unable to make a site's
// directory in the clip storage themselves (Docker agents of a root vigil
// up, in a storage root that is not theirs): the coordinator has it made
// before it sends an agent to record there.
type siteDirMaker interface {
	MakeSiteDir(site string) error
}

// AgentSpec is what a runtime needs to start an agent.
type AgentSpec struct {
	ID       string
	Username string
	Password string
	Capacity int
	Idle     time.Duration
	// Site is the site an agent dedicated to one serves ("" for the shared
	// pool): a runtime that can may give it that site's clips only.
	Site string
}

// Config configures the coordinator.
type Config struct {
	Conf    *conf.Config // agents, recording, retention, plans, sites, cameras, zones
	Storage string       // the clip storage root on this host
	// PlanFor returns a site's plan; nil means Conf.PlanFor (the UI may
	// set a site's plan, which wins over vigil.yaml).
	PlanFor func(site string) (string, conf.Plan)
}

func (c *Coordinator) planFor(site string) (string, conf.Plan) {
	if c.cfg.PlanFor != nil {
		return c.cfg.PlanFor(site)
	}
	return c.cfg.Conf.PlanFor(site)
}

// Coordinator is the running coordinator.
type Coordinator struct {
	cfg      Config
	broker   Broker
	store    Store
	runtime  Runtime
	finisher *media.Finisher
	log      *slog.Logger
	m        *metrics
	refusals *ratelog.Logger

	in       chan func()
	loopDone chan struct{} // closed when the loop has returned
	saves    *saver        // writes what the loop decides, in order
	jobs     chan string   // clip ids to finish
	// retMu makes retention one pass at a time (after each clip, and
	// every quotaEvery while clips record).
	retMu sync.Mutex
	stop  chan struct{}
	wg    sync.WaitGroup

	// Owned by the loop goroutine.
	agents   map[string]*agentState
	streams  map[string]*stream
	byCamera map[string]*stream // site/camera -> its active stream
	queue    []*stream
	devices  map[string]*deviceInfo // id -> what it announced
	events   map[string]*eventState
	nextID   int
	instance string

	startFailures     int       // agent starts that failed in a row
	startBlockedUntil time.Time // no new agent before this (backoff)
	closing           bool      // Close has begun

	viewMu sync.Mutex
	view   View

	// Changed, if set, is told of every event and clip the coordinator
	// saves (hub.EventEvent with a detect.Event, hub.EventClip and
	// hub.EventClipDeleted with a Clip). It runs on
	// the coordinator's goroutines and must not block.
	Changed func(kind string, v any)
}

func (c *Coordinator) changed(kind string, v any) {
	if c.Changed != nil {
		c.Changed(kind, v)
	}
}

// New returns a coordinator; Start runs it.
func New(cfg Config, b Broker, st Store, rt Runtime, fin *media.Finisher, log *slog.Logger, reg prometheus.Registerer) (*Coordinator, error) {
	c := &Coordinator{
		cfg: cfg, broker: b, store: st, runtime: rt, finisher: fin, log: log,
		in: make(chan func(), 4096), loopDone: make(chan struct{}), saves: newSaver(), jobs: make(chan string, 4096), stop: make(chan struct{}),
		agents: map[string]*agentState{}, streams: map[string]*stream{}, byCamera: map[string]*stream{},
		devices: map[string]*deviceInfo{}, events: map[string]*eventState{},
		instance: rnd.Hex(3), refusals: ratelog.New(log, time.Minute),
	}
	m, err := newMetrics(reg, rt.Name())
	if err != nil {
		return nil, err
	}
	c.m = m
	go c.saves.run() // until Close
	return c, nil
}

// Start subscribes to the agents' and cameras' topics, recovers clips left
// unfinished by a previous run, starts agents.min agents and runs.
func (c *Coordinator) Start(ctx context.Context) error {
	if err := c.subscribe(); err != nil {
		return err
	}
	c.wg.Add(3)
	go func() { defer c.wg.Done(); defer close(c.loopDone); c.loop() }()
	go func() { defer c.wg.Done(); c.finishClips() }()
	go func() { defer c.wg.Done(); c.watchQuota() }()
	c.recover(ctx)
	c.do(func() {
		for range c.cfg.Conf.Agents.Min {
			c.startAgent("", "min agents")
		}
	})
	return nil
}

// do runs f on the coordinator's goroutine.
func (c *Coordinator) do(f func()) {
	select {
	case c.in <- f:
	case <-c.stop:
	}
}

func (c *Coordinator) loop() {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case f := <-c.in:
			f()
		case <-t.C:
			c.tick()
		case <-c.stop:
			return
		}
		c.publishView()
	}
}

// Close stops every agent (their segments are finished) and the
// coordinator. Clips still recording are finished as interrupted.
func (c *Coordinator) Close() error {
	done := make(chan struct{})
	var ids []string
	c.do(func() {
		c.closing = true // no new agents, no reassignment
		for id, a := range c.agents {
			a.status = agentStopping
			ids = append(ids, id)
		}
		close(done)
	})
	<-done
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.runtime.Stop(ctx, id); err != nil {
				c.log.Warn("stop agent", "agent", id, "error", err)
			}
		}()
	}
	wg.Wait()
	// Let the agents' last segment reports in, then stop.
	time.Sleep(100 * time.Millisecond)
	flushed := make(chan struct{})
	c.do(func() {
		for _, st := range c.streams {
			if st.clip != nil && st.state != streamDone {
				st.clip.Interrupted = true
				c.finish(st)
			}
		}
		close(flushed)
	})
	<-flushed
	close(c.stop)
	<-c.loopDone    // nothing more to save
	c.saves.close() // its last jobs go to the finisher
	close(c.jobs)
	c.wg.Wait()
	return c.runtime.Close()
}

// history records a decision.
func (c *Coordinator) history(action, agent, camera, reason string) {
	// Counted from the streams' own state: a decision may be recorded
	// while the queue is being drained.
	h := &HistoryEntry{At: time.Now(), Action: action, Agent: agent, Camera: camera, Reason: reason, Agents: c.liveAgents()}
	for _, a := range c.agents {
		h.Streams += len(a.streams)
	}
	for _, st := range c.streams {
		if st.state == streamQueued {
			h.Queued++
		}
	}
	c.saves.add(func(ctx context.Context) {
		if err := c.store.AddHistory(ctx, h); err != nil {
			c.log.Warn("history", "error", err)
		}
	})
	c.m.decisions.WithLabelValues(action).Inc()
	c.log.Info("coordinator: "+action, "agent", agent, "camera", camera, "reason", reason, "agents", h.Agents, "streams", h.Streams, "queued", h.Queued)
}

func newID() string {
	u, err := uuid.NewV7()
	if err != nil {
		return rnd.Hex(16)
	}
	return u.String()
}

// randomSSRC returns a random SSRC below 2^31: ffmpeg's -ssrc option takes
// a signed 32-bit number, and any RTP sender should be able to use it.
func randomSSRC() uint32 {
	var b [4]byte
	for {
		rand.Read(b[:])
		if v := binary.BigEndian.Uint32(b[:]) & 0x7fffffff; v != 0 {
			return v
		}
	}
}
