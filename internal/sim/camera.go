package sim

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/vigilhq/vigil/internal/ingest"
	"github.com/vigilhq/vigil/internal/media"
)

// CameraConfig is how a simulated camera records.
type CameraConfig struct {
	Width   int           `yaml:"width"`
	Height  int           `yaml:"height"`
	FPS     int           `yaml:"fps"`
	Quality int           `yaml:"quality"`  // JPEG 1-100
	PreRoll time.Duration `yaml:"pre_roll"` // kept before a detection
}

// camera is the video side of a simulated Raspberry Pi: it answers stream
// commands by sending RTP/JPEG, pre-roll first.
type camera struct {
	d     *device
	cfg   CameraConfig
	scene *scene

	mu   sync.Mutex
	ring []ringEntry // the last PreRoll of instants, at FPS
	cur  *streamer
}

// ringEntry is one buffered frame: its instant and whether the intruder
// was in it (frames are rendered from these when sent).
type ringEntry struct {
	at       time.Time
	intruder bool
}

func newCamera(d *device, cfg CameraConfig) *camera {
	return &camera{d: d, cfg: cfg, scene: newScene(d.id)}
}

// capture keeps the pre-roll ring buffer filled until ctx ends.
func (c *camera) capture(ctx context.Context) {
	if c.cfg.PreRoll <= 0 {
		return
	}
	t := time.NewTicker(time.Second / time.Duration(c.cfg.FPS))
	defer t.Stop()
	limit := int(c.cfg.PreRoll.Seconds()*float64(c.cfg.FPS)) + 1
	for {
		select {
		case <-ctx.Done():
			c.stopStream(false)
			return
		case now := <-t.C:
			c.mu.Lock()
			c.ring = append(c.ring, ringEntry{at: now, intruder: c.d.intruderAt(now)})
			if len(c.ring) > limit {
				c.ring = c.ring[len(c.ring)-limit:]
			}
			c.mu.Unlock()
		}
	}
}

// meta is what the camera announces on its retained meta topic.
func (c *camera) meta() []byte {
	b, _ := json.Marshal(map[string]any{
		"capabilities": []string{"motion", "camera"},
		"name":         "simulated camera " + c.d.id,
		"camera":       map[string]int{"width": c.cfg.Width, "height": c.cfg.Height, "fps": c.cfg.FPS},
	})
	return b
}

// command handles a message on vigil/<site>/<id>/cmd.
func (c *camera) command(cm *autopaho.ConnectionManager, payload []byte) {
	var cmd ingest.StreamCommand
	if err := json.Unmarshal(payload, &cmd); err != nil {
		return
	}
	switch cmd.Action {
	case "stream":
		c.mu.Lock()
		cur := c.cur
		c.mu.Unlock()
		if cur != nil && cur.cmd.StreamID == cmd.StreamID {
			cur.moveTo(cmd) // the coordinator moved the stream to another agent
			return
		}
		c.stopStream(true)
		s := &streamer{c: c, cm: cm, cmd: cmd, stop: make(chan struct{}), done: make(chan struct{})}
		c.mu.Lock()
		c.cur = s
		pre := c.preRoll(time.Duration(cmd.PreRoll) * time.Second)
		c.mu.Unlock()
		go s.run(pre)
	case "stop":
		c.mu.Lock()
		cur := c.cur
		c.mu.Unlock()
		if cur != nil && cur.cmd.StreamID == cmd.StreamID {
			c.stopStream(true)
		}
	}
}

// preRoll returns the buffered instants of the last d; the caller holds mu.
func (c *camera) preRoll(d time.Duration) []ringEntry {
	if d <= 0 || len(c.ring) == 0 {
		return nil
	}
	cut := time.Now().Add(-d)
	for i, e := range c.ring {
		if !e.at.Before(cut) {
			return append([]ringEntry(nil), c.ring[i:]...)
		}
	}
	return nil
}

func (c *camera) stopStream(bye bool) {
	c.mu.Lock()
	s := c.cur
	c.cur = nil
	c.mu.Unlock()
	if s != nil {
		s.halt(bye)
	}
}

// streamer sends one stream.
type streamer struct {
	c    *camera
	cm   *autopaho.ConnectionManager
	cmd  ingest.StreamCommand
	stop chan struct{}
	done chan struct{}
	once sync.Once

	mu     sync.Mutex
	sender *media.Sender
	bye    bool
}

// params are the stream's size, rate and quality: what the command (the
// site's plan) asks for, within what the camera can do.
func (s *streamer) params() (w, h, fps, q int) {
	w, h, fps, q = s.c.cfg.Width, s.c.cfg.Height, s.c.cfg.FPS, s.c.cfg.Quality
	if s.cmd.Width > 0 && s.cmd.Height > 0 && s.cmd.Width*s.cmd.Height < w*h {
		w, h = s.cmd.Width, s.cmd.Height
	}
	if s.cmd.FPS > 0 {
		fps = min(fps, s.cmd.FPS)
	}
	if s.cmd.Quality > 0 {
		q = s.cmd.Quality
	}
	return
}

func (s *streamer) run(pre []ringEntry) {
	defer close(s.done)
	sender, err := media.NewSender(s.cmd.Host, s.cmd.Port, s.cmd.SSRC, s.cmd.MaxPacket)
	if err != nil {
		s.report("error", err.Error())
		return
	}
	s.mu.Lock()
	s.sender = sender
	s.mu.Unlock()
	s.report("started", "")
	w, h, fps, q := s.params()
	interval := time.Second / time.Duration(fps)
	// Live frames are taken at t0, t0+1/fps, ... until t0+duration, like a
	// camera filling its buffer while the pre-roll goes out: each is sent
	// as soon as it is due, or at once if sending is behind, never skipped.
	t0 := time.Now()
	end := t0.Add(time.Duration(s.cmd.Duration) * time.Second)
	send := func(at time.Time, intruder bool) {
		frame := s.c.scene.render(at, intruder, w, h, q)
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.sender != nil {
			s.sender.Send(frame, at)
		}
	}
	// The pre-roll first, at three times real speed so that the receiver's
	// socket is not flooded.
	for _, e := range pre {
		select {
		case <-s.stop:
			return
		case <-time.After(interval / 3):
		}
		send(e.at, e.intruder)
	}
	for i := 0; ; i++ {
		at := t0.Add(time.Duration(i) * interval)
		if at.After(end) {
			s.finish()
			return
		}
		if wait := time.Until(at); wait > 0 {
			select {
			case <-s.stop:
				return
			case <-time.After(wait):
			}
		} else {
			select {
			case <-s.stop:
				return
			default:
			}
		}
		send(at, s.c.d.intruderAt(at))
	}
}

// moveTo sends the rest of the stream to another address.
func (s *streamer) moveTo(cmd ingest.StreamCommand) {
	sender, err := media.NewSender(cmd.Host, cmd.Port, cmd.SSRC, cmd.MaxPacket)
	if err != nil {
		s.report("error", err.Error())
		return
	}
	s.mu.Lock()
	old := s.sender
	s.sender = sender
	s.mu.Unlock()
	if old != nil {
		old.Close() // its agent is gone: no BYE
	}
}

// finish ends a stream that ran its duration: RTCP BYE and "quit" (the
// seed's [Quit]).
func (s *streamer) finish() {
	s.mu.Lock()
	if s.sender != nil {
		s.sender.Bye("done")
		s.sender = nil
	}
	s.mu.Unlock()
	s.report("quit", "duration")
	s.c.mu.Lock()
	if s.c.cur == s {
		s.c.cur = nil
	}
	s.c.mu.Unlock()
}

// halt stops the stream early.
func (s *streamer) halt(bye bool) {
	s.once.Do(func() { close(s.stop) })
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sender != nil {
		if bye {
			s.sender.Bye("stopped")
		} else {
			s.sender.Close()
		}
		s.sender = nil
	}
}

func (s *streamer) report(state, reason string) {
	b, _ := json.Marshal(ingest.CameraStreamEvent{StreamID: s.cmd.StreamID, State: state, Reason: reason})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.cm.Publish(ctx, &paho.Publish{Topic: ingest.CameraTopic(s.c.d.fleet.Site, s.c.d.id, "stream"), Payload: b, QoS: 1})
}
