package coord

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vigilhq/vigil/internal/ingest"
	"github.com/vigilhq/vigil/internal/rnd"
	"github.com/vigilhq/vigil/internal/telemetry"
)

// ErrNoCamera is returned for a camera the coordinator has not heard of.
var ErrNoCamera = errors.New("no such camera")

// ErrClosing is returned when the coordinator is shutting down.
var ErrClosing = errors.New("the coordinator is shutting down")

// livePriority puts live streams behind every recording when agents are
// scarce.
const livePriority = -1000

// liveIdle is how long a live-only stream runs with nobody watching (a
// page reconnecting, or opening it before it streams) before it ends, so
// that it frees its agent's slot.
const liveIdle = 15 * time.Second

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Watch counts a viewer of a stream until release is called: a live-only
// stream nobody watches ends after liveIdle.
func (c *Coordinator) Watch(streamID string) (release func()) {
	c.do(func() {
		if st := c.streams[streamID]; st != nil {
			st.viewers++
		}
	})
	var once sync.Once
	return func() {
		once.Do(func() {
			c.do(func() {
				if st := c.streams[streamID]; st != nil {
					st.viewers--
					st.lastViewer = c.now()
				}
			})
		})
	}
}

// CameraView is a camera the coordinator knows, and its stream if it has
// one.
type CameraView struct {
	Site     string `json:"site"`
	ID       string `json:"id"`
	Name     string `json:"name,omitempty"`
	Zone     string `json:"zone,omitempty"`
	Priority int    `json:"priority"`
	// Kind is jpeg (the camera pushes JPEG; live view is multipart JPEG)
	// or rtsp (an IP camera agents pull; live view is fragmented MP4).
	Kind   string      `json:"kind"`
	Stream *StreamView `json:"stream,omitempty"`
}

// Cameras lists the cameras that announced themselves, by site then id.
func (c *Coordinator) Cameras(ctx context.Context) ([]CameraView, error) {
	out := []CameraView{}
	err := c.call(ctx, func() {
		for _, d := range c.devices {
			if !d.meta.Has(telemetry.CapCamera) {
				continue
			}
			cv := CameraView{Site: d.site, ID: d.id, Name: d.meta.Name, Zone: d.meta.Zone, Priority: c.priority(d), Kind: ingest.KindJPEG}
			if c.rtspOf(d.site, d.id) != nil {
				cv.Kind = ingest.KindRTSP
			}
			if st := c.byCamera[key(d.site, d.id)]; st != nil {
				v := c.streamView(st)
				cv.Stream = &v
			}
			out = append(out, cv)
		}
	})
	slices.SortFunc(out, func(a, b CameraView) int {
		if a.Site != b.Site {
			return strings.Compare(a.Site, b.Site)
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, err
}

// Live asks for a camera's live pictures. A camera that is recording is
// watched on its recording stream; otherwise it is told to stream to an
// agent for recording.live_seconds, without storing anything. The stream
// may still be queued or starting: its view says where it is.
func (c *Coordinator) Live(ctx context.Context, site, camera string) (StreamView, error) {
	var v StreamView
	var err error
	cerr := c.call(ctx, func() {
		if c.closing {
			err = ErrClosing
			return
		}
		if st := c.byCamera[key(site, camera)]; st != nil {
			v = c.streamView(st)
			return
		}
		d := c.devices[camera]
		if d == nil || d.site != site || !d.meta.Has(telemetry.CapCamera) {
			err = ErrNoCamera
			return
		}
		r := c.rtspOf(site, camera)
		if ring := c.rings[key(site, camera)]; r != nil && r.SubURL == "" && ring != nil && ring.state == streamLive {
			v = c.streamView(ring) // its agent pulls the camera already
			return
		}
		_, plan := c.planFor(site)
		pool := ""
		if plan.DedicatedAgent {
			pool = site
		}
		st := &stream{
			id: newID(), ssrc: randomSSRC(), site: site, camera: camera, clientID: d.clientID, clientKnown: !d.guessed && d.clientID != "", pool: pool,
			priority: livePriority + c.priority(d), live: true, token: rnd.Hex(16),
			duration: time.Duration(c.cfg.Recording.LiveSeconds) * time.Second,
		}
		if r != nil { // the sub-stream, if the camera has one
			st.kind, st.rtsp = ingest.KindRTSP, source(r, true)
		}
		c.streams[st.id] = st
		c.byCamera[key(site, camera)] = st
		c.request(st)
		c.drainQueue()
		v = c.streamView(st)
	})
	if cerr != nil {
		return v, cerr
	}
	return v, err
}

// CameraStream returns a camera's stream under way, if it has one.
func (c *Coordinator) CameraStream(ctx context.Context, site, camera string) (StreamView, bool, error) {
	var v StreamView
	var ok bool
	err := c.call(ctx, func() {
		if st := c.byCamera[key(site, camera)]; st != nil {
			v, ok = c.streamView(st), true
		} else if r, ring := c.rtspOf(site, camera), c.rings[key(site, camera)]; r != nil && r.SubURL == "" && ring != nil && ring.state == streamLive {
			v, ok = c.streamView(ring), true
		}
	})
	return v, ok, err
}

// call runs f on the coordinator's goroutine and waits for it.
func (c *Coordinator) call(ctx context.Context, f func()) error {
	done := make(chan struct{})
	select {
	case c.in <- func() { f(); close(done) }:
	case <-c.stop:
		return ErrClosing
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-c.stop:
		return ErrClosing
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stopCamera tells a camera to end a stream.
func (c *Coordinator) stopCamera(st *stream) {
	c.publish(ingest.CameraTopic(st.site, st.camera, ingest.CameraCmd), ingest.StreamCommand{Action: ingest.ActionStop, StreamID: st.id})
}
