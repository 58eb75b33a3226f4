package agent

import (
	"net"

	"github.com/pion/rtp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigilhq/vigil/internal/ingest"
	"github.com/vigilhq/vigil/internal/media"
)

// stream is one camera stream an agent receives.
type stream struct {
	a       *Agent
	cmd     ingest.AgentCommand
	rx      *media.Receiver
	w       *media.SegmentWriter
	frames  chan media.Frame // reassembled frames, to the writer
	created time.Time
	done    chan struct{}

	sendMu sync.Mutex // orders push against stop
	ended  bool
	reason string

	mu       sync.Mutex
	sourceIP net.IP       // the only IP allowed, when the coordinator knows it
	latched  *net.UDPAddr // the first source seen; later packets must match it

	liveMu   sync.Mutex
	watchers map[chan []byte]struct{} // live viewers; nil once the stream ended
	latest   []byte                   // the newest frame, for a viewer who just arrived

	lastPacket  atomic.Int64 // unix ns
	wrongSource atomic.Uint64
	dropped     atomic.Uint64
}

// accepts checks a datagram's source: the expected IP if one was given,
// and always the address (IP and port) the stream's first packet came
// from, so that nobody else can inject into a stream they have sniffed the
// SSRC of once it has started.
func (s *stream) accepts(from *net.UDPAddr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sourceIP != nil && !s.sourceIP.Equal(from.IP) {
		return false
	}
	if s.latched == nil {
		s.latched = &net.UDPAddr{IP: from.IP, Port: from.Port}
		return true
	}
	return s.latched.IP.Equal(from.IP) && s.latched.Port == from.Port
}

// push reassembles a packet and hands complete frames to the writer. It
// never blocks: if the writer is far behind, frames are dropped (counted).
func (s *stream) push(p *rtp.Packet, now time.Time) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.ended {
		return
	}
	frames, err := s.rx.Push(p, now)
	if err != nil {
		return
	}
	for _, f := range frames {
		s.broadcast(f.JPEG)
		select {
		case s.frames <- f:
		default:
			s.dropped.Add(1)
		}
	}
}

// stop ends the stream's input; the writer then finishes.
func (s *stream) stop(reason string) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if !s.ended {
		s.ended, s.reason = true, reason
		close(s.frames)
		s.liveMu.Lock()
		for ch := range s.watchers {
			close(ch)
		}
		s.watchers = nil
		s.liveMu.Unlock()
	}
}

// broadcast hands a frame to every live viewer. A viewer who is behind
// loses its older frame, never the newest one, so a slow browser sees a
// lower frame rate rather than a growing delay.
func (s *stream) broadcast(jpeg []byte) {
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	s.latest = jpeg
	for ch := range s.watchers {
		select {
		case ch <- jpeg:
		default:
			select {
			case <-ch:
			default:
			}
			select {
			case ch <- jpeg:
			default:
			}
		}
	}
}

// watch registers a live viewer; the channel carries the newest frame
// first (if any) and is closed when the stream ends.
func (s *stream) watch() (ch chan []byte, cancel func(), ok bool) {
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	if s.watchers == nil {
		return nil, nil, false
	}
	ch = make(chan []byte, 1)
	if s.latest != nil {
		ch <- s.latest
	}
	s.watchers[ch] = struct{}{}
	return ch, func() {
		s.liveMu.Lock()
		defer s.liveMu.Unlock()
		if _, ok := s.watchers[ch]; ok {
			delete(s.watchers, ch)
		}
	}, true
}

// write stores frames until the stream ends, then finishes the segment and
// reports it. It runs on its own goroutine so that a slow disk never holds
// up the socket.
func (s *stream) write() {
	defer close(s.done)
	a := s.a
	report := func(state string) ingest.SegmentReport {
		st := s.rx.Stats()
		r := ingest.SegmentReport{
			StreamID: s.cmd.StreamID, Dir: s.cmd.Dir, Segment: s.cmd.Segment, State: state,
			Frames: int(st.Frames), Packets: st.Packets, Lost: st.Lost, BadFrames: st.BadFrames,
			WrongSource: s.wrongSource.Load(), JitterMS: st.JitterMillis,
		}
		if s.w != nil {
			r.Frames, r.Bytes, r.DurationMS = s.w.Frames, s.w.Bytes, s.w.Duration().Milliseconds()
		}
		return r
	}
	if s.w == nil { // live only: frames go to viewers, nothing is stored
		for range s.frames {
		}
		s.rx.Close()
		r := report("done")
		r.Reason, r.Ended = s.reason, time.Now()
		a.log.Info("live stream ended", "stream", s.cmd.StreamID, "reason", s.reason, "frames", r.Frames, "packets_lost", r.Lost)
		a.publish(ingest.AgentTopic(a.cfg.ID, "segment"), r, 1)
		return
	}
	var firstStored time.Time
	writeErrors := 0
	for f := range s.frames {
		if err := s.w.Write(f); err != nil {
			writeErrors++
			if writeErrors == 1 {
				a.log.Error("cannot store frame", "stream", s.cmd.StreamID, "error", err)
			}
			continue
		}
		if firstStored.IsZero() && s.w.Frames >= 2 { // the first fragment is on disk
			firstStored = time.Now()
			r := report("recording")
			r.FirstStored = firstStored
			a.publish(ingest.AgentTopic(a.cfg.ID, "segment"), r, 1)
		}
	}
	if err := s.w.Close(); err != nil {
		writeErrors++
		a.log.Error("cannot finish segment", "stream", s.cmd.StreamID, "error", err)
	}
	s.rx.Close()
	r := report("done")
	r.Reason, r.FirstStored, r.Ended, r.WriteErrors = s.reason, firstStored, time.Now(), writeErrors
	a.log.Info("stream ended", "stream", s.cmd.StreamID, "reason", s.reason, "frames", r.Frames, "packets_lost", r.Lost,
		"duration", time.Duration(r.DurationMS)*time.Millisecond, "dropped_frames", s.dropped.Load())
	a.publish(ingest.AgentTopic(a.cfg.ID, "segment"), r, 1)
}
