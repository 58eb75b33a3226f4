package coord

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/agentrt"
	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/detect"
	"github.com/vigilhq/vigil/internal/ingest"
	"github.com/vigilhq/vigil/internal/media"
	"github.com/vigilhq/vigil/internal/telemetry"
	"github.com/vigilhq/vigil/internal/testkit"
	"github.com/vigilhq/vigil/internal/users"
)

// The coordinator's decisions, on its own: an in-memory broker, store and
// runtime, a fake clock, and the timers run by the test. Each step runs on
// the coordinator's goroutine and returns when it is done.

type memBroker struct {
	mu   sync.Mutex
	pubs []string // topic payload
}

func (b *memBroker) Publish(topic string, payload []byte, _ bool, _ byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pubs = append(b.pubs, topic+" "+string(payload))
	return nil
}
func (*memBroker) Subscribe(string, func(string, []byte, string)) error { return nil }
func (*memBroker) AddCredential(string, string, *users.User, ...string) {}
func (*memBroker) RemoveCredential(string)                              {}
func (*memBroker) ClientIP(string) string                               { return "" }
func (*memBroker) ClientLogin(string) (string, bool)                    { return "", false }

type memStore struct {
	mu      sync.Mutex
	events  map[string]detect.Event
	clips   map[string]Clip
	history []string // actions
}

func (s *memStore) SaveEvent(_ context.Context, e *detect.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events[e.ID] = *e
	return nil
}
func (s *memStore) GetEvent(_ context.Context, id string) (detect.Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.events[id], nil
}
func (*memStore) UnfinishedEvents(context.Context) ([]detect.Event, error) { return nil, nil }
func (s *memStore) SaveClip(_ context.Context, c *Clip) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clips[c.ID] = *c
	return nil
}
func (s *memStore) GetClip(_ context.Context, id string) (Clip, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clips[id], nil
}
func (*memStore) ClipsInState(context.Context, string) ([]Clip, error)     { return nil, nil }
func (*memStore) OldestClips(context.Context, string, int) ([]Clip, error) { return nil, nil }
func (*memStore) OldestClipsAll(context.Context, int) ([]Clip, error)      { return nil, nil }
func (*memStore) SetClipState(context.Context, string, string) error       { return nil }
func (*memStore) DeleteClip(context.Context, string) error                 { return nil }
func (s *memStore) AddHistory(_ context.Context, h *HistoryEntry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.history = append(s.history, h.Action)
	return nil
}

// memRuntime launches nothing; it keeps each agent's exit callback. With
// hang set, a start never ends before its context.
type memRuntime struct {
	mu      sync.Mutex
	exits   map[string]func(error)
	started chan string
	hang    bool
	local   map[string]bool // agents on the coordinator's own node, among several (none: one node)
}

func (r *memRuntime) Local(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.local[id]
}

func (*memRuntime) Name() string { return "memory" }
func (r *memRuntime) Start(ctx context.Context, spec agentrt.Spec, exited func(error)) error {
	if r.hang {
		<-ctx.Done()
		return ctx.Err()
	}
	r.mu.Lock()
	r.exits[spec.ID] = exited
	r.mu.Unlock()
	r.started <- spec.ID
	return nil
}
func (*memRuntime) Stop(context.Context, string) error { return nil }
func (*memRuntime) Close() error                       { return nil }

// exit reports that agent id exited on its own, as a runtime does.
func (r *memRuntime) exit(t *testing.T, id string) {
	t.Helper()
	for {
		r.mu.Lock()
		f := r.exits[id]
		r.mu.Unlock()
		if f != nil {
			f(fmt.Errorf("exit status 2"))
			return
		}
		<-r.started // its Start is under way
	}
}

type rig struct {
	t      *testing.T
	c      *Coordinator
	rt     *memRuntime
	store  *memStore
	broker *memBroker
	clock  *testkit.Clock
	// plans are the sites' plans; the default plan has no dedicated agent.
	plans map[string]conf.Plan
}

var rigStart = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

func newRig(t *testing.T, agents conf.Agents) *rig {
	return newRigWith(t, agents, &memRuntime{exits: map[string]func(error){}, started: make(chan string, 100)})
}

func newRigWith(t *testing.T, agents conf.Agents, rt *memRuntime, opts ...func(*Config)) *rig {
	r := &rig{t: t, clock: testkit.NewClock(rigStart), plans: map[string]conf.Plan{}, rt: rt, store: &memStore{events: map[string]detect.Event{}, clips: map[string]Clip{}}}
	if agents.HeartbeatTimeout == 0 {
		agents.HeartbeatTimeout = 10 * time.Second
	}
	if agents.ScaleDownCooldown == 0 {
		agents.ScaleDownCooldown = time.Minute
	}
	agents.Idle = 5 * time.Second
	cfg := Config{
		Agents: agents, Recording: conf.Recording{ClipSeconds: 30, LiveSeconds: 60}, Storage: t.TempDir(),
		PlanFor: func(site string) (string, conf.Plan) { return site, r.plans[site] },
		Now:     r.clock.Now,
		Tick:    -1, // the test runs the timers
	}
	for _, o := range opts {
		o(&cfg)
	}
	fin := media.NewFinisher()
	fin.FFmpeg = ""
	r.broker = &memBroker{}
	c, err := New(cfg, r.broker, r.store, r.rt, fin,
		slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.closeGrace = 0 // no agent sends its last reports here
	r.c = c
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r.do(func() {})
	return r
}

// do runs f on the coordinator's goroutine and waits for it.
func (r *rig) do(f func()) {
	done := make(chan struct{})
	r.c.do(func() { f(); close(done) })
	<-done
}

// advance moves the clock on by d and runs the timers.
func (r *rig) advance(d time.Duration) {
	r.clock.Add(d)
	r.do(r.c.tick)
}

// pass lets d go by in steps of a second, the agents alive sending a
// heartbeat at each.
func (r *rig) pass(d time.Duration, alive ...int) {
	for ; d > 0; d -= time.Second {
		r.heartbeat(alive...)
		r.advance(min(d, time.Second))
	}
}

// agents lists the agents in service or coming, by order of start, as
// number:status:pool:streams (pool "" is omitted). Agents being stopped
// are left out.
func (r *rig) agents() []string {
	var out []string
	r.do(func() {
		var as []*agentState
		for _, a := range r.c.agents {
			if a.status != agentStopping {
				as = append(as, a)
			}
		}
		slices.SortFunc(as, func(x, y *agentState) int { return x.seq - y.seq })
		for _, a := range as {
			s := fmt.Sprintf("%d:%s", a.seq, a.status)
			if a.pool != "" {
				s += ":" + a.pool
			}
			out = append(out, fmt.Sprintf("%s:%d", s, len(a.streams)))
		}
	})
	return out
}

// id returns the id of the n-th agent started (1, 2, ...).
func (r *rig) id(n int) string { return fmt.Sprintf("%s-%d", r.c.instance, n) }

// ready has the n-th agent send its first heartbeat.
func (r *rig) ready(n int) {
	r.do(func() {
		r.c.onHeartbeat(r.id(n), ingest.Heartbeat{Addr: fmt.Sprintf("127.0.0.1:%d", 40000+2*n)}, net.IPv4(127, 0, 0, 1))
	})
}

// heartbeat has agents send a heartbeat.
func (r *rig) heartbeat(ns ...int) {
	for _, n := range ns {
		r.ready(n)
	}
}

// camera announces a camera of site with a priority.
func (r *rig) camera(site, id string, priority int) {
	r.c.Observe(telemetry.Event{DeviceID: id, Site: site, ClientID: id, Meta: &telemetry.Meta{Capabilities: []string{telemetry.CapCamera}, Priority: priority}})
}

// detect has a camera see someone (a camera records what it sees itself).
func (r *rig) detect(site string, cams ...string) {
	for _, cam := range cams {
		r.c.Detected(detect.Detection{Site: site, Sensor: cam, At: r.clock.Now()})
	}
	r.do(func() {})
}

// on returns the number of the agent recording camera (0: queued, -1: no
// stream).
func (r *rig) on(site, camera string) int {
	n := -1
	r.do(func() {
		st := r.c.byCamera[key(site, camera)]
		switch {
		case st == nil:
		case st.state == streamQueued || st.agent == nil:
			n = 0
		default:
			n = st.agent.seq
		}
	})
	return n
}

// live has the agent recording camera say it is ready for it: the
// camera is told to stream.
func (r *rig) live(site, camera string) {
	r.do(func() {
		st := r.c.byCamera[key(site, camera)]
		r.c.onSegment(st.agent.id, ingest.SegmentReport{StreamID: st.id, State: ingest.SegmentExpecting})
	})
}

// done has the agent recording camera report its segment done: the clip
// ran its duration.
func (r *rig) done(site, camera string) {
	r.do(func() {
		st := r.c.byCamera[key(site, camera)]
		r.c.onSegment(st.agent.id, ingest.SegmentReport{StreamID: st.id, State: ingest.SegmentDone, Reason: ingest.EndDuration, Frames: 300})
	})
}

func (r *rig) want(what string, got, want any) {
	r.t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		r.t.Errorf("%s: %v, want %v", what, got, want)
	}
}

func cams(n int) []string {
	var out []string
	for i := 1; i <= n; i++ {
		out = append(out, fmt.Sprintf("cam%d", i))
	}
	return out
}

// Streams go to the fullest agent that still has room (packing frees whole
// agents for scale-down), the agent started first among equals.
func TestAStreamGoesToTheFullestAgentWithRoom(t *testing.T) {
	r := newRig(t, conf.Agents{Min: 2, Max: 2, Capacity: 3})
	r.ready(1)
	r.ready(2)
	for _, c := range cams(4) {
		r.camera("home", c, 0)
	}
	r.detect("home", "cam1")
	r.want("cam1 on agent", r.on("home", "cam1"), 1)
	r.detect("home", "cam2", "cam3")
	r.want("agents with cam1-3", r.agents(), []string{"1:ready:3", "2:ready:0"})
	r.detect("home", "cam4")
	r.want("cam4 on agent", r.on("home", "cam4"), 2)

	// With agent 1 down to one stream and agent 2 at one, the next goes to
	// the first started.
	r.done("home", "cam1")
	r.done("home", "cam2")
	r.want("agents", r.agents(), []string{"1:ready:1", "2:ready:1"})
	r.detect("home", "cam1")
	r.want("cam1 again on agent", r.on("home", "cam1"), 1)
}

// A site whose plan has a dedicated agent gets an agent of its own, one at
// most, and its streams never go to the shared pool nor the shared pool's
// to it.
func TestADedicatedPlanGetsItsOwnAgent(t *testing.T) {
	r := newRig(t, conf.Agents{Min: 1, Max: 3, Capacity: 2})
	r.plans["bank"] = conf.Plan{DedicatedAgent: true}
	r.ready(1)
	for _, c := range cams(3) {
		r.camera("bank", "b-"+c, 0)
		r.camera("home", c, 0)
	}
	r.detect("bank", "b-cam1")
	r.want("bank's stream, with the shared agent free", r.on("bank", "b-cam1"), 0)
	r.want("agents", r.agents(), []string{"1:ready:0", "2:starting:bank:0"})
	r.ready(2)
	r.want("bank's stream once its agent is ready", r.on("bank", "b-cam1"), 2)
	r.detect("bank", "b-cam2", "b-cam3")
	r.want("bank's third stream: its agent is full, and one is the most", r.on("bank", "b-cam3"), 0)
	r.want("agents", r.agents(), []string{"1:ready:0", "2:ready:bank:2"})
	r.done("bank", "b-cam1")
	r.detect("home", "cam1")
	r.want("a shared stream with the dedicated agent free", r.on("home", "cam1"), 1)
	r.want("bank's queued stream took the room", r.on("bank", "b-cam3"), 2)
}

// When agents are at their maximum, cameras wait in a queue served by
// priority, then by age.
func TestTheQueueIsServedByPriorityThenAge(t *testing.T) {
	r := newRig(t, conf.Agents{Min: 1, Max: 1, Capacity: 1})
	r.ready(1)
	r.camera("home", "low", 1)
	r.camera("home", "mid", 2)
	r.camera("home", "high-old", 5)
	r.camera("home", "high-new", 5)
	r.detect("home", "low")
	r.live("home", "low")
	r.detect("home", "mid")
	r.advance(time.Second)
	r.detect("home", "high-old")
	r.advance(time.Second)
	r.detect("home", "high-new")
	r.want("agents at max", r.agents(), []string{"1:ready:1"})
	var served []string
	for range 3 {
		var cur string
		for _, c := range []string{"low", "mid", "high-old", "high-new"} {
			if r.on("home", c) == 1 {
				cur = c
			}
		}
		r.done("home", cur)
		for _, c := range []string{"mid", "high-old", "high-new"} {
			if r.on("home", c) == 1 {
				served = append(served, c)
			}
		}
	}
	r.want("order served", served, []string{"high-old", "high-new", "mid"})
}

// Agents are started when every one is full, as many as the queue needs
// (an agent starting counts for its room), never above the maximum; once
// ready they drain the queue.
func TestAgentsScaleUpForTheQueueUpToTheMaximum(t *testing.T) {
	r := newRig(t, conf.Agents{Min: 1, Max: 3, Capacity: 3})
	r.ready(1)
	for _, c := range cams(11) {
		r.camera("home", c, 0)
	}
	r.detect("home", cams(3)...)
	r.want("three streams, one agent", r.agents(), []string{"1:ready:3"})
	r.detect("home", "cam4")
	r.want("a fourth camera starts an agent", r.agents(), []string{"1:ready:3", "2:starting:0"})
	r.detect("home", "cam5", "cam6")
	r.want("the starting agent has room for them", r.agents(), []string{"1:ready:3", "2:starting:0"})
	r.detect("home", "cam7")
	r.want("a seventh starts another", r.agents(), []string{"1:ready:3", "2:starting:0", "3:starting:0"})
	r.detect("home", "cam8", "cam9", "cam10", "cam11")
	r.advance(time.Second)
	r.want("never above agents.max", len(r.agents()), 3)
	r.ready(2)
	r.ready(3)
	r.want("the queue drained onto the new agents", r.agents(), []string{"1:ready:3", "2:ready:3", "3:ready:3"})
	r.want("cam10 and cam11 wait", []int{r.on("home", "cam10"), r.on("home", "cam11")}, []int{0, 0})
	r.done("home", "cam1")
	r.want("a freed place goes to the oldest waiting", r.on("home", "cam10"), 1)
}

// An agent empty for the cooldown is stopped, the newest first, one per
// tick, never below agents.min, and not while cameras wait.
func TestEmptyAgentsScaleDownAfterTheCooldownToTheMinimum(t *testing.T) {
	r := newRig(t, conf.Agents{Min: 1, Max: 3, Capacity: 1, ScaleDownCooldown: time.Minute})
	r.fillThreeAgents()
	for _, c := range cams(3) {
		r.done("home", c)
	}
	r.pass(59*time.Second, 1, 2, 3)
	r.want("within the cooldown", r.agents(), []string{"1:ready:0", "2:ready:0", "3:ready:0"})
	r.pass(time.Second, 1, 2, 3)
	r.want("after the cooldown, the newest goes", r.agents(), []string{"1:ready:0", "2:ready:0"})
	r.pass(time.Second, 1, 2)
	r.want("then the next, one per tick", r.agents(), []string{"1:ready:0"})
	r.pass(10*time.Minute, 1)
	r.want("an empty agent at the minimum stays", r.agents(), []string{"1:ready:0"})

	// Not while a camera waits: an empty dedicated agent stays while a
	// shared stream is queued (the shared pool at its maximum).
	r = newRig(t, conf.Agents{Min: 1, Max: 1, Capacity: 1, ScaleDownCooldown: time.Minute})
	r.ready(1)
	r.plans["bank"] = conf.Plan{DedicatedAgent: true}
	r.camera("bank", "b1", 0)
	r.camera("home", "cam1", 0)
	r.camera("home", "cam2", 0)
	r.detect("bank", "b1")
	r.want("a dedicated agent starts", r.agents(), []string{"1:ready:0", "2:starting:bank:0"})
	r.ready(2)
	r.live("bank", "b1")
	r.done("bank", "b1")
	r.detect("home", "cam1")
	r.live("home", "cam1")
	r.detect("home", "cam2")
	r.want("cam2 waits for agent 1", r.on("home", "cam2"), 0)
	r.pass(2*time.Minute, 1, 2)
	r.want("the empty dedicated agent is kept while cam2 waits", r.agents(), []string{"1:ready:1", "2:ready:bank:0"})
	r.done("home", "cam1")
	r.live("home", "cam2")
	r.done("home", "cam2")
	r.pass(2*time.Minute, 1, 2)
	r.want("once the queue is empty it goes", r.agents(), []string{"1:ready:0"})
}

// Among several nodes, the last agent on another node than the
// coordinator's is not scaled down while agents on the coordinator's own
// node record: the coordinator's death would end every recording, and
// the next streams would go to its own node too. The coordinator's own
// agents go first.
func TestTheLastAgentOnAnotherNodeStaysWhileTheCoordinatorsOwnRecord(t *testing.T) {
	r := newRig(t, conf.Agents{Min: 1, Max: 3, Capacity: 1, ScaleDownCooldown: time.Minute})
	r.rt.mu.Lock()
	r.rt.local = map[string]bool{r.id(2): true, r.id(3): true}
	r.rt.mu.Unlock()
	r.fillThreeAgents()
	r.want("the first stream on the agent on another node", r.on("home", "cam1"), 1)
	for _, c := range cams(3) {
		r.live("home", c)
	}
	r.done("home", "cam1")
	r.pass(2*time.Minute, 1, 2, 3)
	r.want("the agent on another node, empty, stays", r.agents(), []string{"1:ready:0", "2:ready:1", "3:ready:1"})

	r.done("home", "cam2")
	r.done("home", "cam3")
	r.pass(2*time.Minute, 1, 2, 3)
	r.want("the coordinator's own agents go", r.agents(), []string{"1:ready:0"})
}

// fillThreeAgents has three cameras of site home see someone at once,
// with agents of capacity 1: agent 1 takes one, agents 2 and 3 start
// for the others.
func (r *rig) fillThreeAgents() {
	r.t.Helper()
	r.ready(1)
	for _, c := range cams(3) {
		r.camera("home", c, 0)
	}
	r.detect("home", cams(3)...)
	r.ready(2)
	r.ready(3)
	r.want("three agents, full", r.agents(), []string{"1:ready:1", "2:ready:1", "3:ready:1"})
}

// The streams of an agent that dies move to agents with room, however its
// death is learnt of; the clip is marked interrupted and gets a second
// segment.
func TestTheStreamsOfAnAgentThatDiesMoveToAnother(t *testing.T) {
	for _, c := range []struct {
		name string
		die  func(r *rig)
	}{
		{"its runtime reports it exited", func(r *rig) { r.rt.exit(r.t, r.id(1)); r.do(func() {}) }},
		{"its heartbeats stop", func(r *rig) {
			r.advance(2 * time.Second)
			r.heartbeat(2)
			r.advance(2 * time.Second) // past the timeout of 3s
		}},
		{"its last will says offline", func(r *rig) { r.do(func() { r.c.onAgentState(r.id(1), ingest.StateOffline) }) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, conf.Agents{Min: 2, Max: 2, Capacity: 3, HeartbeatTimeout: 3 * time.Second})
			r.ready(1)
			r.ready(2)
			for _, cam := range cams(3) {
				r.camera("home", cam, 0)
			}
			r.detect("home", "cam1", "cam2")
			r.live("home", "cam1")
			r.live("home", "cam2")
			r.detect("home", "cam3")
			r.want("before", r.agents(), []string{"1:ready:3", "2:ready:0"})
			c.die(r)
			r.want("after", r.agents(), []string{"1:lost:0", "2:ready:3"})
			r.do(func() {
				for _, cam := range cams(3) {
					st := r.c.byCamera[key("home", cam)]
					if st.segIndex != 2 || len(st.clip.Segments) != 2 {
						t.Errorf("%s: segment %d, clip segments %v; want its second", cam, st.segIndex, st.clip.Segments)
					}
					// cam3 was never told to stream: nothing of it is lost.
					if want := cam != "cam3"; st.clip.Interrupted != want {
						t.Errorf("%s: interrupted %v, want %v", cam, st.clip.Interrupted, want)
					}
				}
			})
		})
	}
}

// Close ends an agent start under way (a Docker engine that does not
// answer) without waiting for it, and without reporting a failed start.
func TestCloseCancelsAStartUnderWayQuietly(t *testing.T) {
	r := newRigWith(t, conf.Agents{Min: 1, Max: 1, Capacity: 1}, &memRuntime{hang: true})
	r.want("agents", r.agents(), []string{"1:starting:0"})
	if err := r.c.Close(); err != nil {
		t.Fatal(err)
	}
	r.store.mu.Lock()
	defer r.store.mu.Unlock()
	if slices.Contains(r.store.history, "start_failed") {
		t.Errorf("history %v: a start cancelled by Close is not a failed start", r.store.history)
	}
}
