package agentrt

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/users"
)

// memBus is a broker in memory: retained messages, and each message handed
// to the matching handlers on a goroutine of its own, in order.
type memBus struct {
	mu       sync.Mutex
	subs     []memSub
	retained map[string][]byte
	queue    chan func()
}

type memSub struct {
	filter string
	h      func(string, []byte, string)
}

func newMemBus(t *testing.T) *memBus {
	b := &memBus{retained: map[string][]byte{}, queue: make(chan func(), 1024)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for f := range b.queue {
			f()
		}
	}()
	t.Cleanup(func() { close(b.queue); <-done })
	return b
}

func (b *memBus) Publish(topic string, payload []byte, retain bool, _ byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if retain {
		b.retained[topic] = payload
	}
	for _, s := range b.subs {
		if users.MatchTopic(s.filter, topic) {
			h, p := s.h, append([]byte(nil), payload...)
			b.queue <- func() { h(topic, p, "") }
		}
	}
	return nil
}

// sync returns once every message published before it was handled.
func (b *memBus) sync() {
	done := make(chan struct{})
	b.queue <- func() { close(done) }
	<-done
}

func (b *memBus) Subscribe(filter string, h func(string, []byte, string)) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.subs = append(b.subs, memSub{filter, h})
	for topic, p := range b.retained {
		if users.MatchTopic(filter, topic) {
			b.queue <- func() { h(topic, p, "") }
		}
	}
	return nil
}

// fakeRuntime records the agents a node runs.
type fakeRuntime struct {
	mu      sync.Mutex
	running map[string]Spec
	exits   map[string]func(error)
	fail    error
}

func (*fakeRuntime) Name() string { return "fake" }
func (r *fakeRuntime) Start(_ context.Context, spec Spec, exited func(error)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	r.running[spec.ID], r.exits[spec.ID] = spec, exited
	return nil
}
func (r *fakeRuntime) Stop(_ context.Context, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.running, id)
	return nil
}
func (*fakeRuntime) Close() error { return nil }

func (r *fakeRuntime) ids() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for id := range r.running {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// cluster is nodes a, b and c, each with a Host, and a Remote on a.
type cluster struct {
	bus   *memBus
	rts   map[string]*fakeRuntime
	hosts map[string]*Host
	r     *Remote
}

func newCluster(t *testing.T, online ...string) *cluster {
	c := &cluster{bus: newMemBus(t), rts: map[string]*fakeRuntime{}, hosts: map[string]*Host{}}
	log := slog.New(slog.DiscardHandler)
	for _, n := range []string{"a", "b", "c"} {
		rt := &fakeRuntime{running: map[string]Spec{}, exits: map[string]func(error){}}
		h := &Host{Node: n, Runtime: rt, Bus: c.bus, Username: "vigil-agent", Password: "pw-" + n, Log: log}
		if err := h.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		c.rts[n], c.hosts[n] = rt, h
	}
	var err error
	if c.r, err = NewRemote(c.bus, "a", log); err != nil {
		t.Fatal(err)
	}
	for _, n := range online {
		c.bus.Publish(NodeStateTopic(n), []byte("online"), true, 1)
	}
	c.bus.sync()
	c.r.Known()
	return c
}

func (c *cluster) start(t *testing.T, id string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.r.Start(ctx, Spec{ID: id, Username: "leaked", Password: "leaked", Capacity: 3}, func(error) {}); err != nil {
		t.Fatalf("start %s: %v", id, err)
	}
	return c.r.Where(id)
}

// Agents go to the online node with the fewest, not this one (the
// leader's) while another is online; never to a node that is offline; each node logs them in with its
// own login, not the leader's.
func TestAgentsGoToTheOnlineNodeWithTheFewest(t *testing.T) {
	c := newCluster(t, "a", "b", "c")                              // a leads
	c.bus.Publish(NodeStateTopic("c"), []byte("offline"), true, 1) // its last will
	c.bus.sync()
	placed := []string{c.start(t, "i1-1"), c.start(t, "i1-2")}
	c.bus.Publish(NodeStateTopic("c"), []byte("online"), true, 1) // back
	c.bus.sync()
	for _, id := range []string{"i1-3", "i1-4", "i1-5"} {
		placed = append(placed, c.start(t, id))
	}
	if want := []string{"b", "b", "c", "c", "b"}; !slices.Equal(placed, want) {
		t.Errorf("placed on %v, want %v", placed, want)
	}
	if got := c.rts["a"].ids(); len(got) != 0 {
		t.Errorf("the leader's own node runs %v while others are online", got)
	}
	c.rts["b"].mu.Lock()
	s := c.rts["b"].running["i1-1"]
	c.rts["b"].mu.Unlock()
	if s.Username != "vigil-agent" || s.Password != "pw-b" || s.Capacity != 3 {
		t.Errorf("node b started %+v, want its own login", s)
	}

	// Stopping goes to the agent's node.
	if err := c.r.Stop(context.Background(), "i1-1"); err != nil {
		t.Fatal(err)
	}
	if got := c.rts["b"].ids(); !slices.Equal(got, []string{"i1-2", "i1-5"}) {
		t.Errorf("node b runs %v after a stop, want [i1-2 i1-5]", got)
	}
	// With no other node online, the leader's own takes agents.
	c.bus.Publish(NodeStateTopic("b"), []byte("offline"), true, 1)
	c.bus.Publish(NodeStateTopic("c"), []byte("offline"), true, 1)
	c.bus.sync()
	if n := c.start(t, "i1-6"); n != "a" {
		t.Errorf("alone, the agent went to %s, want a", n)
	}
}

// An agent that exits on its node reaches the leader's callback; a node
// that cannot start one says why.
func TestAnAgentsExitAndAFailedStartReachTheLeader(t *testing.T) {
	c := newCluster(t, "b")
	exited := make(chan error, 1)
	ctx := context.Background()
	if err := c.r.Start(ctx, Spec{ID: "i1-1"}, func(err error) { exited <- err }); err != nil {
		t.Fatal(err)
	}
	c.rts["b"].mu.Lock()
	f := c.rts["b"].exits["i1-1"]
	c.rts["b"].mu.Unlock()
	f(errors.New("exit status 2"))
	select {
	case err := <-exited:
		if err == nil || err.Error() != "exit status 2" {
			t.Errorf("exit reported as %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the exit did not reach the leader")
	}
	c.rts["b"].mu.Lock()
	c.rts["b"].fail = errors.New("docker: no such image")
	c.rts["b"].mu.Unlock()
	err := c.r.Start(ctx, Spec{ID: "i1-2"}, func(error) {})
	if err == nil || err.Error() != "node b: docker: no such image" {
		t.Errorf("failed start: %v", err)
	}
	if c.r.Where("i1-2") != "" {
		t.Error("a failed agent is still placed")
	}
}

// An agent this leader did not start (adopted from the one before) is
// stopped by asking every online node: the one that runs it stops it.
func TestAnAdoptedAgentIsStoppedWhereverItRuns(t *testing.T) {
	c := newCluster(t, "a", "b", "c")
	before, err := NewRemote(c.bus, "b", slog.New(slog.DiscardHandler)) // the leader before
	if err != nil {
		t.Fatal(err)
	}
	c.bus.sync()
	before.Known()
	ctx := context.Background()
	if err := before.Start(ctx, Spec{ID: "old-1"}, func(error) {}); err != nil {
		t.Fatal(err)
	}
	node := before.Where("old-1")
	if got := c.rts[node].ids(); !slices.Equal(got, []string{"old-1"}) {
		t.Fatalf("node %s runs %v", node, got)
	}
	if err := c.r.Stop(ctx, "old-1"); err != nil { // c.r never started it
		t.Fatal(err)
	}
	for n, rt := range c.rts {
		if got := rt.ids(); len(got) != 0 {
			t.Errorf("node %s still runs %v", n, got)
		}
	}
}
