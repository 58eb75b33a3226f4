// Package camera is the camera side of Vigil's video path: it answers the
// coordinator's stream commands (on vigil/<site>/<camera>/cmd) by sending
// RTP/JPEG to the agent it names, the pre-roll first, follows the stream
// when the coordinator moves it to another agent, and ends it with an RTCP
// BYE and a "quit" report (the seed's [Quit]). Where the frames come from
// is a Source: the simulator's rendered scene, or ffmpeg reading a real
// camera (`vigil camera`).
package camera

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/vigilhq/vigil/internal/ingest"
	"github.com/vigilhq/vigil/internal/media"
)

// Frame is one picture and the moment it shows.
type Frame struct {
	JPEG []byte
	At   time.Time
}

// Params are a stream's picture size, rate and JPEG quality.
type Params struct {
	Width, Height, FPS, Quality int
}

// Source produces a camera's frames.
type Source interface {
	// Stream sends the frames taken from `from` on: those already buffered
	// (the pre-roll) at once, then each as it is taken, until `until` or
	// the end of ctx; then it closes the channel.
	Stream(ctx context.Context, from, until time.Time, p Params) <-chan Frame
	// Limits are what the camera can do at most; a stream asks for less or
	// equal.
	Limits() Params
}

// Camera answers stream commands for one camera.
type Camera struct {
	Site, ID string
	Source   Source
	// Publish sends an MQTT message (QoS 1) for the camera.
	Publish func(topic string, payload []byte) error
	Log     *slog.Logger

	mu  sync.Mutex
	cur *stream
}

// Command handles a message on vigil/<site>/<camera>/cmd.
func (c *Camera) Command(payload []byte) {
	var cmd ingest.StreamCommand
	if err := json.Unmarshal(payload, &cmd); err != nil {
		c.Log.Warn("bad camera command", "error", err)
		return
	}
	switch cmd.Action {
	case ingest.ActionStream:
		c.mu.Lock()
		cur := c.cur
		c.mu.Unlock()
		if cur != nil && cur.cmd.StreamID == cmd.StreamID {
			go cur.moveTo(cmd) // the coordinator moved the stream to another agent
			return
		}
		c.Stop(true)
		ctx, cancel := context.WithCancel(context.Background())
		s := &stream{c: c, cmd: cmd, ctx: ctx, cancel: cancel, done: make(chan struct{})}
		c.mu.Lock()
		c.cur = s
		c.mu.Unlock()
		go s.run(ctx)
	case ingest.ActionStop:
		c.mu.Lock()
		cur := c.cur
		c.mu.Unlock()
		if cur != nil && cur.cmd.StreamID == cmd.StreamID {
			c.Stop(true)
		}
	}
}

// Stop ends the current stream, with an RTCP BYE if bye.
func (c *Camera) Stop(bye bool) {
	c.mu.Lock()
	s := c.cur
	c.cur = nil
	c.mu.Unlock()
	if s != nil {
		s.halt(bye)
	}
}

// params are what the command (the site's plan) asks for, within what the
// camera can do.
func params(cmd ingest.StreamCommand, lim Params) Params {
	p := lim
	if cmd.Width > 0 && cmd.Height > 0 && cmd.Width*cmd.Height < lim.Width*lim.Height {
		p.Width, p.Height = cmd.Width, cmd.Height
	}
	if cmd.FPS > 0 && cmd.FPS < p.FPS {
		p.FPS = cmd.FPS
	}
	if cmd.Quality > 0 {
		p.Quality = cmd.Quality
	}
	return p
}

// stream is one stream being sent.
type stream struct {
	c      *Camera
	cmd    ingest.StreamCommand
	ctx    context.Context // ends when the stream is halted
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	sender   *media.Sender
	lastSent time.Time // the newest frame sent
	ended    bool      // sent whole or halted: a move comes too late
}

func (s *stream) run(ctx context.Context) {
	defer close(s.done)
	sender, err := media.NewSender(s.cmd.Host, s.cmd.Port, s.cmd.SSRC, s.cmd.MaxPacket)
	if err != nil {
		s.report(ingest.CameraError, err.Error())
		return
	}
	s.mu.Lock()
	s.sender = sender
	s.mu.Unlock()
	s.report(ingest.CameraStarted, "")
	p := params(s.cmd, s.c.Source.Limits())
	t0 := time.Now()
	from := t0.Add(-time.Duration(s.cmd.PreRoll) * time.Second)
	until := t0.Add(time.Duration(s.cmd.Duration) * time.Second)
	catchUp := time.Second / time.Duration(max(p.FPS, 1)) / 3
	for f := range s.c.Source.Stream(ctx, from, until, p) {
		if f.At.Before(t0) {
			// The pre-roll goes out at three times real speed, so that
			// the agent's socket is not flooded.
			select {
			case <-ctx.Done():
			case <-time.After(catchUp):
			}
		}
		s.mu.Lock()
		if s.sender != nil && f.At.After(s.lastSent) { // not sent by moveTo already
			s.sender.Send(f.JPEG, f.At)
			s.lastSent = f.At
		}
		s.mu.Unlock()
	}
	if ctx.Err() != nil {
		return // halted: halt says goodbye
	}
	s.mu.Lock()
	if s.sender != nil {
		s.sender.Bye("done")
		s.sender = nil
	}
	s.ended = true
	s.mu.Unlock()
	s.report(ingest.CameraQuit, "duration")
	s.c.mu.Lock()
	if s.c.cur == s {
		s.c.cur = nil
	}
	s.c.mu.Unlock()
}

// Backfill is how much video a camera keeps to send again when a stream
// moves to another agent (ingest.StreamCommand.Since): more than the
// coordinator takes to find an agent silent (agents.heartbeat_timeout,
// 5 s by default) and the second of video an agent holds before writing
// it. A Source keeps at least this much, or the pre-roll if longer.
const Backfill = 10 * time.Second

// moveTo sends the rest of the stream to another agent, on the same RTP
// timeline, starting with the frames taken since cmd.Since (those the
// agent it leaves may not have stored). Frames taken meanwhile wait for
// them.
func (s *stream) moveTo(cmd ingest.StreamCommand) {
	sender, err := media.NewSender(cmd.Host, cmd.Port, cmd.SSRC, cmd.MaxPacket)
	if err != nil {
		s.report(ingest.CameraError, err.Error())
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		sender.Close() // the stream ended meanwhile
		return
	}
	old := s.sender
	if old != nil {
		sender.Follow(old)
		old.Close() // its agent is gone: no BYE
	}
	s.sender = sender
	sent := 0
	if cmd.Since > 0 {
		// Halting the stream ends the resend (halt waits for run, which
		// waits for this lock).
		ctx, cancel := context.WithCancel(s.ctx)
		defer cancel()
		p := params(s.cmd, s.c.Source.Limits())
		pace := time.Second / time.Duration(max(p.FPS, 1)) / 3 // as the pre-roll
		now := time.Now()
		for f := range s.c.Source.Stream(ctx, time.UnixMilli(cmd.Since), now, p) {
			if f.At.After(now) {
				break
			}
			sender.Send(f.JPEG, f.At)
			s.lastSent = later(s.lastSent, f.At)
			sent++
			select {
			case <-ctx.Done():
			case <-time.After(pace):
			}
		}
	}
	s.c.Log.Info("stream moved", "stream", cmd.StreamID, "to", cmd.Host, "resent_frames", sent)
}

func (s *stream) halt(bye bool) {
	s.cancel()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ended = true
	if s.sender != nil {
		if bye {
			s.sender.Bye("stopped")
		} else {
			s.sender.Close()
		}
		s.sender = nil
	}
}

func (s *stream) report(state, reason string) {
	b, _ := json.Marshal(ingest.CameraStreamEvent{StreamID: s.cmd.StreamID, State: state, Reason: reason})
	if err := s.c.Publish(ingest.CameraTopic(s.c.Site, s.c.ID, ingest.CameraStream), b); err != nil {
		s.c.Log.Debug("stream report", "error", err)
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
