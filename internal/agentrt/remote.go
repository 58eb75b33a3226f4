package agentrt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vigilhq/vigil/internal/rnd"
)

// Among several nodes, the leader's coordinator starts agents on every
// node: Remote is its runtime, and each node runs a Host that starts and
// stops agents on its own runtime when the leader asks, over MQTT:
//
//	vigil/nodes/<node>/agents/cmd     leader -> node  {"op": "start"|"stop", "req", "spec"|"id"}
//	vigil/nodes/<node>/agents/reply   node -> leader  {"req", "error"}
//	vigil/nodes/<node>/agents/exited  node -> leader  {"id", "error"}: an agent exited unasked
//	vigil/nodes/<node>/state          node, retained: "online", its last will "offline"
//	vigil/nodes/<node>/agents         node, retained: the ids of the agents it runs
//
// When another leader takes over, the agents go on: its coordinator adopts
// them (coord/adopt.go), and stops them through Remote, which then asks
// every online node (it does not know where they run).

// Topics of the nodes' agent protocol.
const (
	nodePrefix        = "vigil/nodes/"
	NodeReplyFilter   = "vigil/nodes/+/agents/reply"
	NodeExitedFilter  = "vigil/nodes/+/agents/exited"
	nodeStateFilter   = "vigil/nodes/+/state"
	nodeAgentsFilter  = "vigil/nodes/+/agents"
	nodeCmd, nodeRply = "/agents/cmd", "/agents/reply"
	nodeExited        = "/agents/exited"
)

// askTimeout bounds a node's answer: a node that died a moment ago may
// still be listed as up.
const askTimeout = 10 * time.Second

// Bus is what Remote and Host need of MQTT.
type Bus interface {
	Publish(topic string, payload []byte, retain bool, qos byte) error
	Subscribe(filter string, h func(topic string, payload []byte, clientID string)) error
}

// NodeStateTopic is where a node says it is "online" (retained), and its
// connection's last will "offline".
func NodeStateTopic(node string) string { return nodePrefix + node + "/state" }

type nodeCommand struct {
	Op   string `json:"op"`
	Req  string `json:"req"`
	Spec *Spec  `json:"spec,omitempty"` // start; no login: each node has its own
	ID   string `json:"id,omitempty"`   // stop
}

type nodeReply struct {
	Req   string `json:"req"`
	Error string `json:"error,omitempty"`
}

type nodeExit struct {
	ID    string `json:"id"`
	Error string `json:"error,omitempty"`
}

// Remote starts agents on the nodes' Hosts: on the online node other than
// Self with the fewest agents, on Self only when no other is online.
type Remote struct {
	Bus  Bus
	Self string // this node
	Log  *slog.Logger

	known     chan struct{} // closed when Known's message came back
	knownOnce sync.Once
	sync      string
	mu        sync.Mutex
	online    map[string]bool        // as the nodes' retained states say
	where     map[string]string      // agent id -> node
	exited    map[string]func(error) // agent id -> its exit callback
	pending   map[string]chan error  // request id -> its answer
}

// NewRemote subscribes to the nodes' states, replies and exits.
func NewRemote(b Bus, self string, log *slog.Logger) (*Remote, error) {
	r := &Remote{Bus: b, Self: self, Log: log, known: make(chan struct{}), online: map[string]bool{},
		where: map[string]string{}, exited: map[string]func(error){}, pending: map[string]chan error{}}
	r.sync = rnd.Hex(8)
	if err := b.Subscribe(nodePrefix+self+"/sync", func(_ string, payload []byte, _ string) {
		var token string
		if json.Unmarshal(payload, &token) == nil && token == r.sync {
			r.knownOnce.Do(func() { close(r.known) })
		}
	}); err != nil {
		return nil, err
	}
	if err := b.Subscribe(nodeStateFilter, func(topic string, payload []byte, _ string) {
		node := strings.TrimSuffix(strings.TrimPrefix(topic, nodePrefix), "/state")
		r.mu.Lock()
		r.online[node] = string(payload) == "online"
		r.mu.Unlock()
	}); err != nil {
		return nil, err
	}
	// Where the agents it did not start run (adopted ones).
	if err := b.Subscribe(nodeAgentsFilter, func(topic string, payload []byte, _ string) {
		node := strings.TrimSuffix(strings.TrimPrefix(topic, nodePrefix), "/agents")
		var ids []string
		if json.Unmarshal(payload, &ids) != nil {
			return
		}
		r.mu.Lock()
		for _, id := range ids {
			if r.where[id] == "" {
				r.where[id] = node
			}
		}
		r.mu.Unlock()
	}); err != nil {
		return nil, err
	}
	if err := b.Subscribe(NodeReplyFilter, func(_ string, payload []byte, _ string) {
		var m nodeReply
		if json.Unmarshal(payload, &m) != nil {
			return
		}
		r.mu.Lock()
		ch := r.pending[m.Req]
		delete(r.pending, m.Req)
		r.mu.Unlock()
		if ch != nil {
			var err error
			if m.Error != "" {
				err = errors.New(m.Error)
			}
			ch <- err
		}
	}); err != nil {
		return nil, err
	}
	if err := b.Subscribe(NodeExitedFilter, func(_ string, payload []byte, _ string) {
		var m nodeExit
		if json.Unmarshal(payload, &m) != nil {
			return
		}
		r.mu.Lock()
		f := r.exited[m.ID]
		r.mu.Unlock()
		if f != nil {
			var err error
			if m.Error != "" {
				err = errors.New(m.Error)
			}
			f(err)
		}
	}); err != nil {
		return nil, err
	}
	return r, nil
}

// Known has the Remote place agents once the nodes' retained states have
// come, not on the first node heard of: it publishes a message to itself,
// which the broker sends after the retained states it owed (call it once
// the bus hands messages out).
func (r *Remote) Known() {
	b, _ := json.Marshal(r.sync)
	if err := r.Bus.Publish(nodePrefix+r.Self+"/sync", b, false, 1); err != nil {
		r.Log.Warn("sync with the nodes' states", "error", err)
		r.knownOnce.Do(func() { close(r.known) })
	}
}

// Name returns "nodes".
func (r *Remote) Name() string { return "nodes" }

// Where tells on which node an agent runs ("" if not known).
func (r *Remote) Where(id string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.where[id]
}

// Local tells whether an agent runs on this node (Self).
func (r *Remote) Local(id string) bool { return r.Where(id) == r.Self }

// Start asks the node with the fewest agents to start one.
func (r *Remote) Start(ctx context.Context, spec Spec, exited func(error)) error {
	// The nodes' retained states come as the leader's session starts.
	select {
	case <-r.known:
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(askTimeout):
		return errors.New("no node is online to run an agent")
	}
	r.mu.Lock()
	count := map[string]int{}
	for _, n := range r.where {
		count[n]++
	}
	// Another node than this one, the leader's, whenever one is online:
	// the leader's death then ends no recording (its node's agents end
	// with it, the others' are adopted by the next leader).
	node := ""
	for n, up := range r.online {
		if up && n != r.Self && (node == "" || count[n] < count[node] || (count[n] == count[node] && n < node)) {
			node = n
		}
	}
	if node == "" && r.online[r.Self] {
		node = r.Self
	}
	if node == "" {
		r.mu.Unlock()
		return errors.New("no node is online to run an agent")
	}
	r.where[spec.ID], r.exited[spec.ID] = node, exited
	r.mu.Unlock()
	spec.Username, spec.Password = "", ""
	actx, cancel := context.WithTimeout(ctx, askTimeout)
	defer cancel()
	if err := r.ask(actx, node, nodeCommand{Op: "start", Spec: &spec}); err != nil {
		r.forget(spec.ID)
		if ctx.Err() == nil && actx.Err() != nil {
			// No answer: should the node start it late, it stops it.
			b, _ := json.Marshal(nodeCommand{Op: "stop", Req: rnd.Hex(8), ID: spec.ID})
			r.Bus.Publish(nodePrefix+node+nodeCmd, b, false, 1)
		}
		return fmt.Errorf("node %s: %w", node, err)
	}
	return nil
}

// Stop asks the agent's node to stop it; for an agent it did not start
// (adopted from the leader before), every online node.
func (r *Remote) Stop(ctx context.Context, id string) error {
	node := r.Where(id)
	defer r.forget(id)
	actx, cancel := context.WithTimeout(ctx, askTimeout)
	defer cancel()
	if node != "" {
		return r.ask(actx, node, nodeCommand{Op: "stop", ID: id})
	}
	r.mu.Lock()
	var nodes []string
	for n, up := range r.online {
		if up {
			nodes = append(nodes, n)
		}
	}
	r.mu.Unlock()
	var wg sync.WaitGroup
	stopped := false
	var mu sync.Mutex
	for _, n := range nodes {
		wg.Go(func() {
			if r.ask(actx, n, nodeCommand{Op: "stop", ID: id}) == nil {
				mu.Lock()
				stopped = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if !stopped {
		r.Log.Debug("no node runs the agent", "agent", id)
	}
	return nil
}

func (r *Remote) forget(id string) {
	r.mu.Lock()
	delete(r.where, id)
	delete(r.exited, id)
	r.mu.Unlock()
}

// ask sends a command to a node and waits for its answer.
func (r *Remote) ask(ctx context.Context, node string, cmd nodeCommand) error {
	cmd.Req = rnd.Hex(8)
	ch := make(chan error, 1)
	r.mu.Lock()
	r.pending[cmd.Req] = ch
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.pending, cmd.Req)
		r.mu.Unlock()
	}()
	b, _ := json.Marshal(cmd)
	if err := r.Bus.Publish(nodePrefix+node+nodeCmd, b, false, 1); err != nil {
		return err
	}
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return fmt.Errorf("no answer: %w", ctx.Err())
	}
}

// Close forgets the agents (the coordinator stopped them).
func (r *Remote) Close() error { return nil }

// Host runs the agents the leader asks this node for.
type Host struct {
	Node    string
	Runtime Runtime
	Bus     Bus
	// Login is the agents' MQTT login on this node.
	Username, Password string
	Log                *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	agents map[string]bool // running here
	closed bool
	pubMu  sync.Mutex // publishAgents
}

// Start subscribes to the node's commands.
func (h *Host) Start() error {
	h.ctx, h.cancel = context.WithCancel(context.Background())
	h.agents = map[string]bool{}
	h.publishAgents() // none: those of an earlier run of this node ended with it
	return h.Bus.Subscribe(nodePrefix+h.Node+nodeCmd, func(_ string, payload []byte, _ string) {
		var cmd nodeCommand
		if json.Unmarshal(payload, &cmd) != nil || cmd.Req == "" {
			return
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		if !h.closed {
			h.wg.Go(func() { h.do(cmd) })
		}
	})
}

func (h *Host) do(cmd nodeCommand) {
	var err error
	switch {
	case cmd.Op == "start" && cmd.Spec != nil:
		spec := *cmd.Spec
		spec.Username, spec.Password = h.Username, h.Password
		h.mu.Lock()
		h.agents[spec.ID] = true
		h.mu.Unlock()
		err = h.Runtime.Start(h.ctx, spec, func(err error) {
			// Still ours: the process runtime starts it again, and the
			// leader stops it if it does not come back.
			e := nodeExit{ID: spec.ID}
			if err != nil {
				e.Error = err.Error()
			}
			b, _ := json.Marshal(e)
			h.Bus.Publish(nodePrefix+h.Node+nodeExited, b, false, 1)
		})
		if err != nil {
			h.mu.Lock()
			delete(h.agents, spec.ID)
			h.mu.Unlock()
		}
	case cmd.Op == "stop" && cmd.ID != "":
		h.mu.Lock()
		here := h.agents[cmd.ID]
		delete(h.agents, cmd.ID)
		h.mu.Unlock()
		if here {
			err = h.Runtime.Stop(h.ctx, cmd.ID)
		} else {
			err = fmt.Errorf("agent %s does not run on node %s", cmd.ID, h.Node)
		}
	default:
		err = fmt.Errorf("unknown command %q", cmd.Op)
	}
	h.publishAgents()
	rep := nodeReply{Req: cmd.Req}
	if err != nil {
		rep.Error = err.Error()
	}
	b, _ := json.Marshal(rep)
	if err := h.Bus.Publish(nodePrefix+h.Node+nodeRply, b, false, 1); err != nil {
		h.Log.Warn("answer the leader", "error", err)
	}
}

// publishAgents says which agents run here (retained): a leader that
// adopts them knows where they are.
func (h *Host) publishAgents() {
	// One at a time, so that the last list published is the last made.
	h.pubMu.Lock()
	defer h.pubMu.Unlock()
	h.mu.Lock()
	ids := []string{}
	for id := range h.agents {
		ids = append(ids, id)
	}
	h.mu.Unlock()
	slices.Sort(ids)
	b, _ := json.Marshal(ids)
	if err := h.Bus.Publish(nodePrefix+h.Node+"/agents", b, true, 1); err != nil {
		h.Log.Warn("say which agents run here", "error", err)
	}
}

// Close stops the node's agents.
func (h *Host) Close() error {
	if h.cancel == nil {
		return nil
	}
	h.mu.Lock()
	h.closed = true // no command runs from now on
	h.mu.Unlock()
	h.cancel()
	h.wg.Wait()
	return h.Runtime.Close()
}
