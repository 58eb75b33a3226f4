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
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/internal/agentrt"
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

// Config configures the coordinator: the parts of vigil.yaml it uses.
type Config struct {
	Agents    conf.Agents
	Recording conf.Recording
	Retention conf.Retention
	Cameras   map[string]conf.Camera // priorities that win over the cameras' meta
	Zones     map[string]conf.Zone   // sensors and the cameras that record for them
	Storage   string                 // the clip storage root on this host
	// PlanFor returns a site's plan (vigil.yaml's, or the one set in the
	// UI).
	PlanFor func(site string) (string, conf.Plan)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Tick is how often the timers run (heartbeats, stuck streams,
	// scaling); 0 means 200 ms, negative never (tests run them).
	Tick time.Duration
	// TrustBroker: the broker's ACLs decide who may speak for agents and
	// cameras (an external broker, which does not say who published);
	// the coordinator checks no client ids, logins or hosts (trust.go).
	TrustBroker bool
	// AgentLogin, if its Username is set, is every agent's login (an
	// external broker, where Vigil cannot make one per agent); otherwise
	// each agent gets a credential of its own from the broker.
	AgentLogin struct{ Username, Password string }
	// AdoptAfter, among several nodes, has a coordinator that takes over
	// adopt the agents of the one before that still run (by their
	// heartbeats) and the recordings they are making (adopt.go); a clip
	// being recorded that no agent reports within AdoptAfter is finished
	// as interrupted. 0: clips being recorded at start are finished at
	// once (a single node's agents end with it).
	AdoptAfter time.Duration
}

// ConfigFrom returns the coordinator's part of vigil.yaml, with plans
// from vigil.yaml only.
func ConfigFrom(cfg *conf.Config, storage string) Config {
	return Config{
		Agents: cfg.Agents, Recording: cfg.Recording, Retention: cfg.Retention,
		Cameras: cfg.Cameras, Zones: cfg.Detection.Zones, Storage: storage, PlanFor: cfg.PlanFor,
	}
}

func (c *Coordinator) planFor(site string) (string, conf.Plan) { return c.cfg.PlanFor(site) }

func (c *Coordinator) now() time.Time { return c.cfg.Now() }

// Instance names this coordinator: its agents' ids start with it.
func (c *Coordinator) Instance() string { return c.instance }

// Coordinator is the running coordinator.
type Coordinator struct {
	cfg      Config
	broker   Broker
	store    Store
	runtime  agentrt.Runtime
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
	wg    sync.WaitGroup // the loop, the finisher, the quota watch
	// calls are the runtime's Start and Stop under way; their results
	// come back to the loop. Close cancels starts.
	calls       sync.WaitGroup
	starts      context.Context
	cancelStart context.CancelFunc

	// Owned by the loop goroutine.
	agents   map[string]*agentState
	streams  map[string]*stream
	byCamera map[string]*stream // site/camera -> its active stream
	rings    map[string]*stream // site/camera -> its ring (RTSP cameras' pre-roll)
	queue    []*stream
	devices  map[string]*deviceInfo // id -> what it announced
	events   map[string]*eventState
	orphans  map[string]*orphan // clip dir -> a clip the coordinator before was recording (adopt.go)
	gone     map[string]bool    // agents stopped: not to be adopted again
	nextID   int
	instance string

	startFailures     int           // agent starts that failed in a row
	startBlockedUntil time.Time     // no new agent before this (backoff)
	closing           bool          // Close has begun
	settled           chan struct{} // closed once no stream is live on an agent (Close)
	closeGrace        time.Duration // how long Close waits for the agents' last reports
	closeOnce         sync.Once
	closeErr          error

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
func New(cfg Config, b Broker, st Store, rt agentrt.Runtime, fin *media.Finisher, log *slog.Logger, reg prometheus.Registerer) (*Coordinator, error) {
	if cfg.PlanFor == nil {
		return nil, errors.New("coord: Config.PlanFor is nil")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Tick == 0 {
		cfg.Tick = 200 * time.Millisecond
	}
	c := &Coordinator{
		cfg: cfg, broker: b, store: st, runtime: rt, finisher: fin, log: log,
		in: make(chan func(), 4096), loopDone: make(chan struct{}), saves: newSaver(), jobs: make(chan string, 4096), stop: make(chan struct{}),
		agents: map[string]*agentState{}, streams: map[string]*stream{}, byCamera: map[string]*stream{}, rings: map[string]*stream{},
		devices: map[string]*deviceInfo{}, events: map[string]*eventState{}, orphans: map[string]*orphan{}, gone: map[string]bool{},
		instance: rnd.Hex(3), refusals: ratelog.New(log, time.Minute), closeGrace: 2 * time.Second,
	}
	m, err := newMetrics(reg, rt.Name())
	if err != nil {
		return nil, err
	}
	c.m = m
	c.starts, c.cancelStart = context.WithCancel(context.Background())
	go c.saves.run() // until Close
	return c, nil
}

// Start subscribes to the agents' and cameras' topics, recovers clips left
// unfinished by a previous run, starts agents.min agents and runs.
func (c *Coordinator) Start(ctx context.Context) error {
	// Running first: Close works after a failed Start.
	c.wg.Add(3)
	go func() { defer c.wg.Done(); defer close(c.loopDone); c.loop() }()
	go func() { defer c.wg.Done(); c.finishClips() }()
	go func() { defer c.wg.Done(); c.watchQuota() }()
	if err := c.subscribe(); err != nil {
		return err
	}
	c.recover(ctx)
	c.do(func() {
		c.rtspCameras()
		for range c.cfg.Agents.Min {
			c.startAgent("", "min agents")
		}
		c.ensureRings()
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
	var tick <-chan time.Time
	if c.cfg.Tick > 0 {
		t := time.NewTicker(c.cfg.Tick)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case f := <-c.in:
			f()
		case <-tick:
			c.tick()
		case <-c.stop:
			return
		}
		c.settleCheck()
		c.publishView()
	}
}

// Close stops every agent (their segments are finished) and the
// coordinator. Clips still recording are finished as interrupted.
func (c *Coordinator) Close() error {
	c.closeOnce.Do(func() { c.closeErr = c.close() })
	return c.closeErr
}

func (c *Coordinator) close() error {
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
	c.cancelStart() // an agent starting now is not started (the runtime cleans up after it)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Go(func() {
			if err := c.runtime.Stop(ctx, id); err != nil {
				c.log.Warn("stop agent", "agent", id, "error", err)
			}
		})
	}
	wg.Wait()
	c.calls.Wait() // what they report is run before the streams finish
	// The agents' last segment reports may still be on their way through
	// the broker: they are waited for, a little.
	settled := make(chan struct{})
	c.do(func() { c.settled = settled })
	t := time.NewTimer(c.closeGrace)
	select {
	case <-settled:
	case <-t.C:
	}
	t.Stop()
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

// Abandon stops a started coordinator without stopping its agents or
// ending its streams: among several nodes, the next leader adopts them
// (adopt.go), and the clips being recorded stay so in the database.
func (c *Coordinator) Abandon() error {
	c.closeOnce.Do(func() {
		c.cancelStart()
		c.calls.Wait() // the runtime's calls under way report to the loop
		close(c.stop)
		<-c.loopDone
		c.saves.close() // its last jobs go to the finisher
		close(c.jobs)
		c.wg.Wait()
	})
	return nil
}

// settleCheck closes c.settled once no stream is live on an agent.
func (c *Coordinator) settleCheck() {
	if c.settled == nil {
		return
	}
	for _, a := range c.agents {
		for _, st := range a.streams {
			if st.state == streamLive {
				return
			}
		}
	}
	close(c.settled)
	c.settled = nil
}

// history records a decision.
func (c *Coordinator) history(action, agent, camera, reason string) {
	// Counted from the streams' own state: a decision may be recorded
	// while the queue is being drained.
	h := &HistoryEntry{At: c.now(), Action: action, Agent: agent, Camera: camera, Reason: reason, Agents: c.liveAgents()}
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
