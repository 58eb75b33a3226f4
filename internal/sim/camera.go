package sim

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/vigilhq/vigil/internal/camera"
	"github.com/vigilhq/vigil/internal/telemetry"
)

// CameraConfig is how a simulated camera records.
type CameraConfig struct {
	Width   int           `yaml:"width"`
	Height  int           `yaml:"height"`
	FPS     int           `yaml:"fps"`
	Quality int           `yaml:"quality"`  // JPEG 1-100
	PreRoll time.Duration `yaml:"pre_roll"` // kept before a detection
}

// simCamera is the video side of a simulated Raspberry Pi: a camera.Source
// that renders its scene. A frame is a pure function of its instant and of
// the intruder's presence, so the pre-roll ring buffer keeps instants and
// renders them at the size a stream asks for when it is sent.
type simCamera struct {
	d     *device
	cfg   CameraConfig
	scene *scene
	cam   *camera.Camera

	mu   sync.Mutex
	ring []instant // the last PreRoll or camera.Backfill, at FPS
}

type instant struct {
	at       time.Time
	intruder bool
}

func newCamera(d *device, cfg CameraConfig, log *slog.Logger) *simCamera {
	c := &simCamera{d: d, cfg: cfg, scene: newScene(d.id)}
	c.cam = &camera.Camera{Site: d.fleet.Site, ID: d.id, Source: c, Log: log.With("camera", d.id), Publish: d.publishQoS1}
	return c
}

// Limits returns the configured size, rate and quality.
func (c *simCamera) Limits() camera.Params {
	return camera.Params{Width: c.cfg.Width, Height: c.cfg.Height, FPS: c.cfg.FPS, Quality: c.cfg.Quality}
}

// capture keeps the ring buffer (pre-roll and backfill) filled until ctx
// ends.
func (c *simCamera) capture(ctx context.Context) {
	defer c.cam.Stop(false)
	t := time.NewTicker(time.Second / time.Duration(c.cfg.FPS))
	defer t.Stop()
	limit := int(max(c.cfg.PreRoll, camera.Backfill).Seconds()*float64(c.cfg.FPS)) + 1
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			c.mu.Lock()
			c.ring = append(c.ring, instant{at: now, intruder: c.d.intruderAt(now)})
			if len(c.ring) > limit {
				c.ring = c.ring[len(c.ring)-limit:]
			}
			c.mu.Unlock()
		}
	}
}

// Stream renders the buffered instants from `from`, then a frame every
// 1/fps from now until `until`: each is rendered as soon as it is due, or
// at once when rendering is behind, never skipped.
func (c *simCamera) Stream(ctx context.Context, from, until time.Time, p camera.Params) <-chan camera.Frame {
	out := make(chan camera.Frame, 4)
	c.mu.Lock()
	var pre []instant
	for _, in := range c.ring {
		if !in.at.Before(from) {
			pre = append(pre, in)
		}
	}
	c.mu.Unlock()
	go func() {
		defer close(out)
		send := func(at time.Time, intruder bool) bool {
			f := camera.Frame{JPEG: c.scene.render(at, intruder, p.Width, p.Height, p.Quality), At: at}
			select {
			case out <- f:
				return true
			case <-ctx.Done():
				return false
			}
		}
		for _, in := range pre {
			if !send(in.at, in.intruder) {
				return
			}
		}
		interval := time.Second / time.Duration(max(p.FPS, 1))
		t0 := time.Now()
		for i := 0; ; i++ {
			at := t0.Add(time.Duration(i) * interval)
			if at.After(until) {
				return
			}
			if wait := time.Until(at); wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
			if !send(at, c.d.intruderAt(at)) {
				return
			}
		}
	}()
	return out
}

// meta is what the camera announces on its retained meta topic.
func (c *simCamera) meta() []byte {
	b, _ := json.Marshal(telemetry.Meta{
		Capabilities: []string{telemetry.CapMotion, telemetry.CapCamera},
		Name:         "simulated camera " + c.d.id,
		Camera:       &telemetry.CameraInfo{Width: c.cfg.Width, Height: c.cfg.Height, FPS: c.cfg.FPS},
	})
	return b
}
