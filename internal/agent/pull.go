package agent

// RTSP streams: the agent pulls an IP camera (rtspcam.Feed) and stores its
// H.264/H.265 (and AAC) as the camera encoded it. One feed per camera is
// shared by the streams that need it on this agent: a ring (the camera's
// last seconds, for pre-roll), a recording, a live-only stream.

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigilhq/vigil/internal/ingest"
	"github.com/vigilhq/vigil/internal/media"
	"github.com/vigilhq/vigil/internal/rtspcam"
)

// feedRef is a camera's feed and the streams holding it.
type feedRef struct {
	key   string
	feed  *rtspcam.Feed
	refs  int
	rings int // ring streams among them: the feed keeps their window
}

// pull is an RTSP stream on this agent.
type pull struct {
	a       *Agent
	cmd     ingest.AgentCommand
	ref     *feedRef
	created time.Time
	stopCh  chan string
	once    sync.Once
	done    chan struct{}
	frames  atomic.Uint64
	bytes   atomic.Int64
}

// feedKey names a camera's session: the same URL, login and transport.
func feedKey(s *ingest.RTSPSource) string {
	return s.URL + "\x00" + s.Username + "\x00" + s.Password + "\x00" + s.Transport
}

// checkRTSP refuses a source the agent cannot or must not pull.
func checkRTSP(s *ingest.RTSPSource) error {
	if s == nil || s.URL == "" {
		return errors.New("an RTSP stream without a camera URL")
	}
	u, err := url.Parse(s.URL)
	if err != nil || (u.Scheme != "rtsp" && u.Scheme != "rtsps") || u.Host == "" {
		return fmt.Errorf("%s is not an rtsp:// URL", rtspcam.Redact(s.URL))
	}
	if u.User != nil {
		return fmt.Errorf("%s: a login inside the URL", rtspcam.Redact(s.URL))
	}
	switch s.Transport {
	case "", "tcp", "udp":
	default:
		return fmt.Errorf("transport %q: tcp, udp or empty", s.Transport)
	}
	return nil
}

// acquire returns the camera's feed, started if no stream held it. a.mu
// is held.
func (a *Agent) acquire(c ingest.AgentCommand) *feedRef {
	k := feedKey(c.RTSP)
	r := a.feeds[k]
	if r == nil {
		r = &feedRef{key: k, feed: rtspcam.StartFeed(rtspcam.FeedConfig{
			Source:    rtspcam.Source{URL: c.RTSP.URL, Username: c.RTSP.Username, Password: c.RTSP.Password},
			Transport: c.RTSP.Transport, Log: a.log,
		})}
		a.feeds[k] = r
	}
	r.refs++
	if c.Kind == ingest.KindRing {
		r.rings++
		r.feed.SetWindow(max(time.Duration(c.PreRoll)*time.Second, a.window(r)))
	}
	return r
}

// window is what a feed keeps: the longest pre-roll its rings asked for.
// a.mu is held.
func (a *Agent) window(r *feedRef) time.Duration {
	var w time.Duration
	for _, p := range a.pulls {
		if p.ref == r && p.cmd.Kind == ingest.KindRing {
			w = max(w, time.Duration(p.cmd.PreRoll)*time.Second)
		}
	}
	return w
}

// release lets go of a stream's feed; the last one stops it.
func (a *Agent) release(p *pull) {
	a.mu.Lock()
	r := p.ref
	r.refs--
	if p.cmd.Kind == ingest.KindRing {
		r.rings--
	}
	last := r.refs == 0
	if last {
		delete(a.feeds, r.key)
	} else {
		r.feed.SetWindow(a.window(r))
	}
	a.mu.Unlock()
	if last {
		r.feed.Close()
	}
}

// expectPull starts an RTSP stream: a ring, a recording or a live-only
// stream.
func (a *Agent) expectPull(c ingest.AgentCommand) error {
	if err := checkRTSP(c.RTSP); err != nil {
		return err
	}
	if c.RTSP.Sealed != "" {
		pw, err := ingest.Unseal(a.cfg.Password, c.RTSP.Sealed)
		if err != nil {
			return err
		}
		src := *c.RTSP
		src.Password, src.Sealed = pw, ""
		c.RTSP = &src
	}
	record := c.Kind == ingest.KindRTSP && !c.LiveOnly
	var dir string
	if record {
		var err error
		if dir, err = safeJoin(a.cfg.Storage, c.Dir); err != nil {
			return err
		}
		if c.Segment == "" || c.Segment != filepath.Base(c.Segment) || strings.HasPrefix(c.Segment, ".") {
			return fmt.Errorf("bad segment name %q", c.Segment)
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
	}
	a.mu.Lock()
	if a.closing {
		a.mu.Unlock()
		return errors.New("agent is stopping")
	}
	if a.pulls[c.StreamID] != nil || a.byID[c.StreamID] != nil {
		a.mu.Unlock()
		return nil // a repeated command
	}
	p := &pull{a: a, cmd: c, created: time.Now(), stopCh: make(chan string, 1), done: make(chan struct{})}
	p.ref = a.acquire(c)
	a.pulls[c.StreamID] = p
	a.mu.Unlock()
	var sub *rtspcam.Sub
	if record {
		sub = p.ref.feed.Subscribe(time.Duration(c.PreRoll)*time.Second, 4096)
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer close(p.done)
		var r ingest.SegmentReport
		if record {
			r = p.record(sub, filepath.Join(dir, c.Segment))
		} else {
			r = p.hold()
		}
		// The stream is gone from the agent before its report goes out:
		// the coordinator may answer it with the next segment of the same
		// stream, which must not be taken for a repeated command.
		p.finished()
		a.publish(ingest.AgentTopic(a.cfg.ID, ingest.AgentSegment), r, 1)
	}()
	a.log.Info("pulling camera", "stream", c.StreamID, "kind", c.Kind, "camera", c.Camera, "url", rtspcam.Redact(c.RTSP.URL),
		"pre_roll_s", c.PreRoll, "duration_s", c.Duration, "live_only", c.LiveOnly)
	a.publishState(false)
	return nil
}

// stop ends the stream.
func (p *pull) stop(reason string) {
	p.once.Do(func() { p.stopCh <- reason })
}

// endPull stops a pull stream and waits for its report.
func (a *Agent) endPull(p *pull, reason string) {
	a.mu.Lock()
	if a.pulls[p.cmd.StreamID] != p {
		a.mu.Unlock()
		return
	}
	a.mu.Unlock()
	p.stop(reason)
	<-p.done
}

// finished removes the stream from the agent once its goroutine is done.
func (p *pull) finished() {
	a := p.a
	a.mu.Lock()
	if a.pulls[p.cmd.StreamID] == p {
		delete(a.pulls, p.cmd.StreamID)
	}
	a.mu.Unlock()
	a.release(p)
	a.publishState(false)
}

// hold keeps a ring or a live-only stream's feed open until the stream is
// stopped or (live-only) runs its duration; it returns its last report.
func (p *pull) hold() ingest.SegmentReport {
	var limit <-chan time.Time
	if p.cmd.Duration > 0 {
		t := time.NewTimer(time.Duration(p.cmd.Duration)*time.Second + p.a.cfg.Grace)
		defer t.Stop()
		limit = t.C
	}
	reason := ingest.EndDuration
	select {
	case reason = <-p.stopCh:
	case <-limit:
	}
	st := p.ref.feed.Stats()
	p.a.log.Info("camera stream ended", "stream", p.cmd.StreamID, "kind", p.cmd.Kind, "reason", reason)
	return ingest.SegmentReport{StreamID: p.cmd.StreamID, State: ingest.SegmentDone, Reason: reason, Ended: time.Now(), Reconnects: st.Reconnects, Frames: int(st.Frames)}
}

// record stores the camera's access units into the segment until the
// stream's duration is covered or it is stopped. The first are the feed's
// held seconds (pre-roll). A change of format ends the segment
// (EndFormat): the coordinator goes on in another. It returns the last
// report.
func (p *pull) record(sub *rtspcam.Sub, path string) ingest.SegmentReport {
	defer sub.Close()
	a := p.a
	start := p.created
	feed := p.ref.feed
	before := feed.Stats()
	end := start.Add(time.Duration(p.cmd.Duration) * time.Second)
	endTicks := media.TicksAt(end, media.VideoClock)
	var w *media.AVSegmentWriter
	var firstStored time.Time
	writeErrors := 0
	reason := ""
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	report := func(state string) ingest.SegmentReport {
		st := feed.Stats()
		r := ingest.SegmentReport{StreamID: p.cmd.StreamID, Dir: p.cmd.Dir, Segment: p.cmd.Segment, State: state,
			Reconnects: st.Reconnects - before.Reconnects, BadFrames: st.Bad - before.Bad, Lost: st.Lost - before.Lost, PreRollMS: sub.PreRoll.Milliseconds()}
		if st.Gap > before.Gap {
			r.GapMS = st.Gap.Milliseconds()
		}
		if w != nil {
			r.Frames, r.Bytes, r.DurationMS, r.Codec = w.Frames, w.Bytes, w.Duration().Milliseconds(), w.Format().Codec
		}
		return r
	}
loop:
	for {
		select {
		case reason = <-p.stopCh:
			break loop
		case now := <-tick.C:
			if p.cmd.Duration > 0 && now.After(end.Add(a.cfg.Grace)) {
				// The camera sends nothing (it is lost, and stayed so).
				reason = ingest.EndLost
				break loop
			}
		case it, ok := <-sub.C():
			if !ok {
				reason = ingest.EndShutdown
				break loop
			}
			if it.Format != nil {
				if w != nil && !w.Format().Equal(*it.Format) {
					a.log.Warn("camera format changed; segment ends", "stream", p.cmd.StreamID, "from", w.Format().String(), "to", it.Format.String())
					reason = ingest.EndFormat
					break loop
				}
				if w == nil {
					var err error
					if w, err = media.CreateAVSegment(path, *it.Format); err != nil {
						a.log.Error("cannot create segment", "stream", p.cmd.StreamID, "error", err)
						reason = "error: " + err.Error()
						break loop
					}
				}
				continue
			}
			if w == nil {
				continue
			}
			if it.AU.Track == media.TrackVideo && p.cmd.Duration > 0 && it.AU.DTS >= endTicks {
				reason = ingest.EndDuration
				break loop
			}
			if err := w.Write(it.AU); err != nil {
				if writeErrors++; writeErrors == 1 {
					a.log.Error("cannot store picture", "stream", p.cmd.StreamID, "error", err)
				}
				continue
			}
			p.frames.Store(uint64(w.Frames))
			p.bytes.Store(w.Bytes)
			if firstStored.IsZero() && w.Frames >= 2 {
				firstStored = time.Now()
				r := report(ingest.SegmentRecording)
				r.FirstStored = firstStored
				a.publish(ingest.AgentTopic(a.cfg.ID, ingest.AgentSegment), r, 1)
			}
		}
	}
	if w != nil {
		if err := w.Close(); err != nil {
			writeErrors++
			a.log.Error("cannot finish segment", "stream", p.cmd.StreamID, "error", err)
		}
	}
	r := report(ingest.SegmentDone)
	r.Reason, r.FirstStored, r.Ended, r.WriteErrors = reason, firstStored, time.Now(), writeErrors
	if dropped := sub.Dropped(); dropped > 0 {
		r.Lost += dropped
	}
	a.log.Info("camera stream ended", "stream", p.cmd.StreamID, "reason", reason, "frames", r.Frames,
		"duration", time.Duration(r.DurationMS)*time.Millisecond, "pre_roll", sub.PreRoll.Round(time.Millisecond), "reconnects", r.Reconnects)
	return r
}
