package app

import (
	"context"
	"encoding/json"
	"hash/fnv"
	"log/slog"
	"sync"
	"time"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/agentrt"
	"github.com/vigilhq/vigil/internal/alert"
	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/coord"
	"github.com/vigilhq/vigil/internal/detect"
	"github.com/vigilhq/vigil/internal/hub"
	"github.com/vigilhq/vigil/internal/leader"
	"github.com/vigilhq/vigil/internal/mqttbus"
	"github.com/vigilhq/vigil/internal/telemetry"
)

// Several nodes (an external broker and PostgreSQL) share one
// coordinator: the node that holds the leader lock (internal/leader) runs
// it. Its inputs come through a session that every node takes in turn as
// it leads, client id vigil-coordinator-<share group>, persistent: what
// devices, cameras and agents publish while no node leads is queued by the
// broker and handed to the next leader's coordinator and detector
// (mqttbus.OpenHolding). That session subscribes the telemetry too, not
// shared: the leader's detector sees every sensor's readings in order,
// while storing them stays shared between the nodes. A new leader rebuilds
// the rest from the database (clips being recorded are finished, events
// not recorded closed) and the cameras' retained metas.

// hubTopic carries the coordinator's live updates (events, clips, the
// agents' view) from the leader to the browsers of every node.
const hubTopic = "vigil/cluster/hub"

// relayed is a live update on hubTopic.
type relayed struct {
	Node  string          `json:"node"` // the node that sent it
	Event string          `json:"event"`
	Key   string          `json:"key,omitempty"`
	Data  json.RawMessage `json:"data"`
}

// share sends a live update to this node's browsers and, among several
// nodes, to the others' (hubTopic, QoS 0: a lost one is like one a slow
// browser missed).
func (a *App) share(m hub.Message) {
	a.Hub.Publish(m)
	if !a.clustered() {
		return
	}
	data, err := json.Marshal(m.Data)
	if err != nil {
		return
	}
	b, _ := json.Marshal(relayed{Node: a.node.ID, Event: m.Event, Key: m.Key, Data: data})
	if err := a.Bus.Publish(hubTopic, b, false, 0); err != nil {
		a.log.Debug("relay a live update", "event", m.Event, "error", err)
	}
}

// relayUpdates hands the other nodes' live updates to this node's
// browsers.
func (a *App) relayUpdates() error {
	return a.Bus.Subscribe(hubTopic, func(_ string, payload []byte, _ string) {
		var r relayed
		if json.Unmarshal(payload, &r) != nil || r.Node == a.node.ID || r.Event == "" {
			return
		}
		if r.Event == hub.EventAgents {
			var v coord.View
			if json.Unmarshal(r.Data, &v) == nil {
				a.coord.relayed(v)
			}
		}
		a.Hub.Publish(hub.Message{Event: r.Event, Key: r.Key, Data: r.Data})
	})
}

// clustered tells whether this node is one of several: on an external
// broker and PostgreSQL, the coordinator runs on the leader only.
func (a *App) clustered() bool { return a.cfg.MQTT.External() && a.cfg.Database.URL != "" }

// openLeadership competes for the lead until Close.
func (a *App) openLeadership() {
	key := fnv.New64a()
	key.Write([]byte("vigil coordinator " + a.cfg.MQTT.ShareGroup))
	el := leader.New(leader.Config{URL: a.cfg.Database.URL, Key: int64(key.Sum64() >> 1), Log: a.log.With("component", "leader")})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { el.Run(ctx, a.lead) })
	a.onClose(func() error { cancel(); wg.Wait(); return nil })
}

// lead runs the coordinator while this node leads (until ctx ends). A
// failure returns, which gives the lead up: another node, or this one
// later, tries again.
func (a *App) lead(ctx context.Context) {
	start := time.Now()
	log := a.log.With("component", "coordinator")
	m := a.cfg.MQTT
	c, err := a.externalClient("", m.Username, m.PasswordEnv, m.PasswordFile, "mqtt.password")
	if err != nil {
		log.Error("lead", "error", err)
		return
	}
	c.ClientID, c.SessionExpiry = "vigil-coordinator-"+m.ShareGroup, m.SessionExpiry
	var bus *mqttbus.Bus
	if err := connectExternal(ctx, &c, func(ctx context.Context) (err error) {
		bus, err = mqttbus.OpenHolding(ctx, c)
		return err
	}); err != nil {
		log.Error("lead: the coordinator's session", "error", err)
		return
	}
	defer bus.Close()
	// Agents run on every node up (their Hosts).
	rt, err := agentrt.NewRemote(bus, a.node.ID, log)
	if err != nil {
		log.Error("lead: agent runtime", "error", err)
		return
	}
	co, err := a.newCoordinator(rt, externalBroker{bus}, log)
	if err != nil {
		log.Error("lead", "error", err)
		return
	}
	if err := co.Start(ctx); err != nil {
		co.Abandon()
		log.Error("lead: start the coordinator", "error", err)
		return
	}
	// A site armed or disarmed on another node (its retained mode).
	if err := bus.Subscribe(detect.ModeFilter, func(topic string, payload []byte, _ string) {
		a.Detector.ModeKnown(topic, payload)
	}); err != nil {
		log.Error("lead: subscribe", "filter", detect.ModeFilter, "error", err)
	}
	for _, f := range a.Telemetry.Filters() {
		err := bus.Subscribe(f, func(topic string, payload []byte, clientID string) {
			ev, err := a.parser.Parse(topic, payload, clientID, time.Now())
			if err != nil {
				return // the node that stores it counts and logs it
			}
			a.Detector.Observe(ev)
			co.Observe(ev)
			a.disc.observe(ev)
		})
		if err != nil {
			log.Error("lead: subscribe", "filter", f, "error", err)
		}
	}
	if a.cfg.HomeAssistant.Publish != conf.PublishOff {
		pctx, pcancel := context.WithCancel(ctx)
		var pwg sync.WaitGroup
		pwg.Go(func() { a.disc.runPublisher(pctx, a.Bus) })
		defer func() { pcancel(); pwg.Wait() }()
	}
	if a.cfg.HomeAssistant.Discovery {
		// The leader reads the discovered devices: their readings stored
		// once, and seen by its detector and coordinator.
		a.disc.reload(ctx)
		put := func(ctx context.Context, ev telemetry.Event) error {
			a.Detector.Observe(ev)
			co.Observe(ev)
			return a.Telemetry.Put(ctx, ev, false)
		}
		if c, err := a.disc.start(a.Bus, put); err != nil {
			log.Error("lead: Home Assistant discovery", "error", err)
		} else {
			defer a.disc.stop(c)
		}
	}
	a.coord.set(co)
	bus.Release()
	rt.Known() // the nodes' states were among what the bus held
	log.Info("this node leads: it coordinates cameras and agents", "took", time.Since(start).Round(time.Millisecond))
	<-ctx.Done()
	// What comes from now on stays in the session, unacknowledged, for
	// the next leader, which adopts the agents and their streams.
	a.coord.set(nil)
	bus.Close()
	co.Abandon()
	log.Info("this node no longer leads")
}

// openHost runs the agents the leader asks this node for, on this node's
// runtime (agents.runtime).
func (a *App) openHost(ctx context.Context, log *slog.Logger) error {
	rt, err := a.newRuntime(ctx, log)
	if err != nil {
		return err
	}
	user, password, err := a.agentLogin()
	if err != nil {
		rt.Close()
		return err
	}
	h := &agentrt.Host{Node: a.node.ID, Runtime: rt, Bus: a.Bus, Username: user, Password: password, Log: log}
	if err := h.Start(); err != nil {
		rt.Close()
		return err
	}
	a.onClose(h.Close)
	// Now the leader may place agents here (and on every reconnection:
	// the bus's OnUp).
	a.hosting.Store(true)
	return a.Bus.Publish(agentrt.NodeStateTopic(a.node.ID), []byte("online"), true, 1)
}

// coordinator is the App's way to its coordinator: this node's own, or,
// among several nodes, the one it runs while it leads (nil otherwise).
type coordinator struct {
	app  *App
	mu   sync.RWMutex
	c    *coord.Coordinator
	last coord.View // the leader's, as last relayed (on a node that does not lead)
}

// relayed keeps the leader's view of the agents.
func (h *coordinator) relayed(v coord.View) {
	h.mu.Lock()
	h.last = v
	h.mu.Unlock()
}

func (h *coordinator) set(c *coord.Coordinator) {
	h.mu.Lock()
	h.c = c
	h.last = emptyView // what this node saw while leading is no one's now
	h.mu.Unlock()
}

// emptyView is the view before the leader's comes.
var emptyView = coord.View{Agents: []coord.AgentView{}, Queue: []coord.StreamView{}, Streams: []coord.StreamView{}}

func (h *coordinator) get() *coord.Coordinator {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.c
}

// running tells whether this node runs the coordinator now.
func (h *coordinator) running() bool { return h.get() != nil }

// notHere is the error of what only the coordinator's node can do.
func (h *coordinator) notHere(ctx context.Context) error {
	nodes, _ := h.app.Store.ListNodes(ctx, time.Now())
	for _, n := range nodes {
		if n.Coordinator && n.Up {
			return vigil.Errorf(vigil.EUnavailable, "node %s (%s) coordinates the cameras: ask it", n.Name, n.HTTP)
		}
	}
	return vigil.Errorf(vigil.EUnavailable, "no node coordinates the cameras right now; one takes over within seconds")
}

// View is the coordinator's view; where this node does not run it, the
// leader's as it last relayed it (every few seconds).
func (h *coordinator) View() coord.View {
	if c := h.get(); c != nil {
		v := c.View()
		if h.app.clustered() {
			v.Leader = h.app.node.ID
		}
		return v
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.last
}

// Alerts are the coordinator's (agents lost).
func (h *coordinator) Alerts(ctx context.Context) []alert.Alert {
	if c := h.get(); c != nil {
		return c.Alerts(ctx)
	}
	return nil
}

// Detected hands a detection to the coordinator; among several nodes only
// the leader detects (from its session), so there is one.
func (h *coordinator) Detected(d detect.Detection) {
	if c := h.get(); c != nil {
		c.Detected(d)
		return
	}
	h.app.log.Warn("a detection with no coordinator to serve it", "site", d.Site, "sensor", d.Sensor)
}

// PlanChanged tells the coordinator that a site's plan changed.
func (h *coordinator) PlanChanged(site string) {
	if c := h.get(); c != nil {
		c.PlanChanged(site)
	}
}

// Cameras lists the cameras the coordinator knows.
func (h *coordinator) Cameras(ctx context.Context) ([]coord.CameraView, error) {
	if c := h.get(); c != nil {
		return c.Cameras(ctx)
	}
	return nil, h.notHere(ctx)
}

// Live starts or joins a camera's live stream.
func (h *coordinator) Live(ctx context.Context, site, camera string) (coord.StreamView, error) {
	if c := h.get(); c != nil {
		return c.Live(ctx, site, camera)
	}
	return coord.StreamView{}, h.notHere(ctx)
}

// CameraStream is a camera's stream now.
func (h *coordinator) CameraStream(ctx context.Context, site, camera string) (coord.StreamView, bool, error) {
	if c := h.get(); c != nil {
		return c.CameraStream(ctx, site, camera)
	}
	return coord.StreamView{}, false, h.notHere(ctx)
}

// DeleteClip deletes a finished clip.
func (h *coordinator) DeleteClip(ctx context.Context, id, by string) error {
	if c := h.get(); c != nil {
		return c.DeleteClip(ctx, id, by)
	}
	return h.notHere(ctx)
}

// Watch counts a viewer of a stream until release.
func (h *coordinator) Watch(streamID string) (release func()) {
	if c := h.get(); c != nil {
		return c.Watch(streamID)
	}
	return func() {}
}
