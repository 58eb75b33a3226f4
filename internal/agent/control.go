package agent

// The agent's side of the MQTT protocol: its connection, state and
// heartbeats, and the coordinator's commands.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/vigilhq/vigil/internal/ingest"
	"github.com/vigilhq/vigil/internal/media"
	"github.com/vigilhq/vigil/internal/mqttconn"
	"github.com/vigilhq/vigil/internal/version"
)

// connect connects to the broker; it waits for the first connection until
// wait ends, and the connection lives until ctx ends.
func (a *Agent) connect(wait, ctx context.Context) error {
	wait, cancel := context.WithTimeout(wait, 30*time.Second)
	defer cancel()
	cm, err := mqttconn.Connect(wait, ctx, mqttconn.Client{
		Brokers: a.cfg.Brokers, TLS: a.cfg.TLS, Username: a.cfg.Username, Password: a.cfg.Password,
		ClientID: ingest.AgentClientID(a.cfg.ID), KeepAlive: 10, ConnectTimeout: 5 * time.Second, MinBackoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second,
		Will:          &paho.WillMessage{Topic: ingest.AgentTopic(a.cfg.ID, ingest.AgentState), Payload: []byte(ingest.StateOffline), QoS: 1},
		Subscriptions: []paho.SubscribeOptions{{Topic: ingest.AgentTopic(a.cfg.ID, ingest.AgentCmd), QoS: 1}},
		OnUp: func(_ context.Context, cm *autopaho.ConnectionManager) error {
			a.cm.Store(cm)
			a.publishState(true)
			a.heartbeat()
			return nil
		},
		OnMessage:      func(p *paho.Publish) { a.command(p.Payload) },
		OnConnectError: func(err error) { a.log.Debug("broker connection failed", "error", err) },
	})
	if cm != nil {
		a.cm.Store(cm)
	}
	return err
}

func (a *Agent) publish(topic string, v any, qos byte) {
	b, _ := json.Marshal(v)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cm := a.cm.Load()
	if cm == nil {
		a.log.Debug("publish before the first connection", "topic", topic)
		return
	}
	if _, err := cm.Publish(ctx, &paho.Publish{Topic: topic, Payload: b, QoS: qos}); err != nil {
		a.log.Debug("publish failed", "topic", topic, "error", err)
	}
}

// capacity is the agent's capacity per kind of stream.
func (a *Agent) capacity() ingest.Capacity {
	return ingest.Capacity{JPEG: a.cfg.Capacity, RTSP: a.cfg.RTSPCapacity, Ring: a.cfg.RingCapacity}
}

// kinds lists the kind of each stream the agent has. a.mu is held.
func (a *Agent) kinds() []string {
	k := make([]string, 0, len(a.byID)+len(a.pulls))
	for range a.byID {
		k = append(k, ingest.KindJPEG)
	}
	for _, p := range a.pulls {
		k = append(k, p.cmd.Kind)
	}
	return k
}

// full tells whether no stream of any kind the agent takes fits any more
// (the seed's [Full]).
func (a *Agent) full(kinds []string) bool {
	c := a.capacity()
	for _, k := range []string{ingest.KindJPEG, ingest.KindRTSP, ingest.KindRing} {
		if c.Of(k) > 0 && c.Fits(k, kinds...) {
			return false
		}
	}
	return true
}

// publishState sends the state if it changed (or always, when forced).
func (a *Agent) publishState(force bool) {
	a.mu.Lock()
	kinds := a.kinds()
	n := len(kinds)
	s := ingest.StateBusy
	switch {
	case n == 0:
		s = ingest.StateEmpty
	case a.full(kinds):
		s = ingest.StateFull
	}
	changed := s != a.state
	a.state = s
	a.mu.Unlock()
	if changed || force {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if cm := a.cm.Load(); cm != nil { // nil before the first connection, which says it
			cm.Publish(ctx, &paho.Publish{Topic: ingest.AgentTopic(a.cfg.ID, ingest.AgentState), Payload: []byte(s), QoS: 1})
		}
		if changed {
			a.log.Info("agent state", "state", s, "streams", n, "capacity", a.cfg.Capacity)
		}
	}
}

func (a *Agent) heartbeats(ctx context.Context) {
	t := time.NewTicker(a.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.heartbeat()
		}
	}
}

func (a *Agent) heartbeat() {
	a.mu.Lock()
	caps := a.capacity()
	hb := ingest.Heartbeat{
		ID: a.cfg.ID, Addr: a.addr, HTTPAddr: a.hAddr, Capacity: a.cfg.Capacity, Capacities: &caps, State: a.state, Streams: []ingest.StreamStatus{},
		UnknownSSRC: a.unknownSSRC.Load(), WrongSource: a.wrongSource.Load(), NotRTP: a.notRTP.Load(), ByeRefused: a.byeRefused.Load(),
		Started: a.started, Version: version.Version,
	}
	for _, s := range a.byID {
		st := s.rx.Load().Stats()
		hb.Streams = append(hb.Streams, ingest.StreamStatus{StreamID: s.cmd.StreamID, Site: s.cmd.Site, Camera: s.cmd.Camera, Dir: s.cmd.Dir, LiveOnly: s.cmd.LiveOnly,
			Frames: st.Frames, Packets: st.Packets, Lost: st.Lost, JitterMS: st.JitterMillis})
	}
	for _, p := range a.pulls {
		ss := ingest.StreamStatus{StreamID: p.cmd.StreamID, Site: p.cmd.Site, Camera: p.cmd.Camera, Dir: p.cmd.Dir, LiveOnly: p.cmd.LiveOnly, Kind: p.cmd.Kind, Frames: p.frames.Load()}
		if p.cmd.Kind != ingest.KindRTSP || p.cmd.LiveOnly {
			fs := p.ref.feed.Stats()
			ss.Frames, ss.Lost = fs.Frames, fs.Lost
		}
		hb.Streams = append(hb.Streams, ss)
	}
	a.mu.Unlock()
	a.publish(ingest.AgentTopic(a.cfg.ID, ingest.AgentHeartbeat), hb, 0)
}

// command handles a message on vigil/agents/<id>/cmd.
func (a *Agent) command(payload []byte) {
	var c ingest.AgentCommand
	if err := json.Unmarshal(payload, &c); err != nil {
		a.log.Warn("bad command", "error", err)
		return
	}
	switch c.Action {
	case ingest.ActionExpect:
		expect := a.expect
		if c.Kind == ingest.KindRTSP || c.Kind == ingest.KindRing {
			expect = a.expectPull
		} else if c.Kind != "" && c.Kind != ingest.KindJPEG {
			expect = func(ingest.AgentCommand) error { return fmt.Errorf("stream kind %q", c.Kind) }
		}
		if err := expect(c); err != nil {
			a.log.Warn("cannot receive stream", "stream", c.StreamID, "error", err)
			a.publish(ingest.AgentTopic(a.cfg.ID, ingest.AgentSegment), ingest.SegmentReport{StreamID: c.StreamID, Dir: c.Dir, Segment: c.Segment, State: ingest.SegmentDone, Reason: "error: " + err.Error()}, 1)
			return
		}
		// Ready: the coordinator may now tell the camera to send.
		a.publish(ingest.AgentTopic(a.cfg.ID, ingest.AgentSegment), ingest.SegmentReport{StreamID: c.StreamID, Dir: c.Dir, Segment: c.Segment, State: ingest.SegmentExpecting}, 1)
	case ingest.ActionStop:
		a.mu.Lock()
		s := a.byID[c.StreamID]
		p := a.pulls[c.StreamID]
		a.mu.Unlock()
		if s != nil {
			a.end(s, ingest.EndQuit)
		}
		if p != nil {
			a.endPull(p, ingest.EndQuit)
		}
	default:
		a.log.Warn("unknown command", "action", c.Action)
	}
}

// expect starts receiving a stream.
func (a *Agent) expect(c ingest.AgentCommand) error {
	var dir string
	if !c.LiveOnly {
		var err error
		if dir, err = safeJoin(a.cfg.Storage, c.Dir); err != nil {
			return err
		}
		if c.Segment == "" || c.Segment != filepath.Base(c.Segment) || strings.HasPrefix(c.Segment, ".") {
			return fmt.Errorf("bad segment name %q", c.Segment)
		}
	}
	var source netip.Addr
	if c.Source != "" {
		var err error
		if source, err = netip.ParseAddr(c.Source); err != nil {
			return fmt.Errorf("bad source %q: not an IP address", c.Source)
		}
	}
	a.mu.Lock()
	if a.closing {
		a.mu.Unlock()
		return errors.New("agent is stopping")
	}
	if old := a.byID[c.StreamID]; old != nil {
		a.mu.Unlock()
		return nil // a repeated command
	}
	if old := a.bySSRC[c.SSRC]; old != nil {
		a.mu.Unlock()
		return fmt.Errorf("SSRC %d is in use by stream %s", c.SSRC, old.cmd.StreamID)
	}
	a.mu.Unlock()

	var w *media.SegmentWriter
	var err error
	if !c.LiveOnly {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		if w, err = media.CreateSegment(filepath.Join(dir, c.Segment)); err != nil {
			return err
		}
	}
	rx, err := media.NewReceiver(c.SSRC, nil)
	if err != nil {
		if w != nil {
			w.Close()
		}
		return err
	}
	s := &stream{a: a, cmd: c, w: w, frames: make(chan media.Frame, 1024), created: time.Now(), done: make(chan struct{}),
		watchers: map[chan []byte]struct{}{}}
	s.rx.Store(rx)
	s.source = source.Unmap().WithZone("")
	a.mu.Lock()
	a.bySSRC[c.SSRC] = s
	a.byID[c.StreamID] = s
	a.mu.Unlock()
	a.wg.Add(1)
	go func() { defer a.wg.Done(); s.write() }()
	a.log.Info("expecting stream", "stream", c.StreamID, "ssrc", c.SSRC, "camera", c.Camera, "source", c.Source, "duration_s", c.Duration)
	a.publishState(false)
	return nil
}

// safeJoin joins a relative path under root, refusing escapes.
func safeJoin(root, rel string) (string, error) {
	if rel == "" || filepath.IsAbs(rel) {
		return "", fmt.Errorf("bad clip directory %q", rel)
	}
	clean := filepath.Clean(rel)
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("clip directory %q leaves the storage", rel)
	}
	return filepath.Join(root, clean), nil
}
