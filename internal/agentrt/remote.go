package agentrt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
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
//	vigil/cluster/leader              leader, retained: the coordinator's instance
//	vigil/nodes/<node>/state          node, retained: "online", its last will "offline"
//
// An agent's id starts with the instance of the coordinator that started
// it ("<instance>-<n>"). When another leader takes over, every Host stops
// the agents of the instances before: their streams end, and the new
// leader finishes their clips from the shared storage.

// Topics of the nodes' agent protocol.
const (
	LeaderTopic       = "vigil/cluster/leader"
	nodePrefix        = "vigil/nodes/"
	NodeReplyFilter   = "vigil/nodes/+/agents/reply"
	NodeExitedFilter  = "vigil/nodes/+/agents/exited"
	nodeStateFilter   = "vigil/nodes/+/state"
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

// instanceOf is the instance part of an agent id ("<instance>-<n>").
func instanceOf(id string) string {
	i := strings.LastIndex(id, "-")
	if i < 0 {
		return ""
	}
	return id[:i]
}

// Remote starts agents on the nodes' Hosts: on the online node with the
// fewest of its agents (Self first among equals).
type Remote struct {
	Bus  Bus
	Self string // this node
	Log  *slog.Logger

	known   chan struct{} // closed when the first node is known online
	mu      sync.Mutex
	online  map[string]bool        // as the nodes' retained states say
	where   map[string]string      // agent id -> node
	exited  map[string]func(error) // agent id -> its exit callback
	pending map[string]chan error  // request id -> its answer
}

// NewRemote subscribes to the nodes' states, replies and exits.
func NewRemote(b Bus, self string, log *slog.Logger) (*Remote, error) {
	r := &Remote{Bus: b, Self: self, Log: log, known: make(chan struct{}), online: map[string]bool{},
		where: map[string]string{}, exited: map[string]func(error){}, pending: map[string]chan error{}}
	var once sync.Once
	if err := b.Subscribe(nodeStateFilter, func(topic string, payload []byte, _ string) {
		node := strings.TrimSuffix(strings.TrimPrefix(topic, nodePrefix), "/state")
		up := string(payload) == "online"
		r.mu.Lock()
		r.online[node] = up
		r.mu.Unlock()
		if up {
			once.Do(func() { close(r.known) })
		}
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

// Name returns "nodes".
func (r *Remote) Name() string { return "nodes" }

// Where tells on which node an agent runs ("" if not known).
func (r *Remote) Where(id string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.where[id]
}

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
	node := ""
	for n, up := range r.online {
		if up && (node == "" || count[n] < count[node] || (count[n] == count[node] && (n == r.Self || (node != r.Self && n < node)))) {
			node = n
		}
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
		return fmt.Errorf("node %s: %w", node, err)
	}
	return nil
}

// Stop asks the agent's node to stop it.
func (r *Remote) Stop(ctx context.Context, id string) error {
	node := r.Where(id)
	defer r.forget(id)
	if node == "" {
		return nil
	}
	actx, cancel := context.WithTimeout(ctx, askTimeout)
	defer cancel()
	return r.ask(actx, node, nodeCommand{Op: "stop", ID: id})
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
}

// Start subscribes to the node's commands and to the leader's instance.
func (h *Host) Start() error {
	h.ctx, h.cancel = context.WithCancel(context.Background())
	h.agents = map[string]bool{}
	if err := h.Bus.Subscribe(LeaderTopic, func(_ string, payload []byte, _ string) {
		h.newLeader(string(payload))
	}); err != nil {
		return err
	}
	return h.Bus.Subscribe(nodePrefix+h.Node+nodeCmd, func(_ string, payload []byte, _ string) {
		var cmd nodeCommand
		if json.Unmarshal(payload, &cmd) != nil || cmd.Req == "" {
			return
		}
		h.wg.Go(func() { h.do(cmd) })
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
		delete(h.agents, cmd.ID)
		h.mu.Unlock()
		err = h.Runtime.Stop(h.ctx, cmd.ID)
	default:
		err = fmt.Errorf("unknown command %q", cmd.Op)
	}
	rep := nodeReply{Req: cmd.Req}
	if err != nil {
		rep.Error = err.Error()
	}
	b, _ := json.Marshal(rep)
	if err := h.Bus.Publish(nodePrefix+h.Node+nodeRply, b, false, 1); err != nil {
		h.Log.Warn("answer the leader", "error", err)
	}
}

// newLeader stops the agents of the coordinators before instance.
func (h *Host) newLeader(instance string) {
	h.mu.Lock()
	var old []string
	for id := range h.agents {
		if instanceOf(id) != instance {
			old = append(old, id)
			delete(h.agents, id)
		}
	}
	h.mu.Unlock()
	for _, id := range old {
		h.Log.Info("stopping an agent of the previous leader", "agent", id)
		h.wg.Go(func() {
			if err := h.Runtime.Stop(h.ctx, id); err != nil {
				h.Log.Warn("stop agent", "agent", id, "error", err)
			}
		})
	}
}

// Close stops the node's agents.
func (h *Host) Close() error {
	if h.cancel == nil {
		return nil
	}
	h.cancel()
	h.wg.Wait()
	return h.Runtime.Close()
}
