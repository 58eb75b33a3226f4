package agent

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"

	"github.com/vigilhq/vigil/internal/ingest"
	"github.com/vigilhq/vigil/internal/media"
)

// Judging a stream's source. A stream has no source until one sends it a
// whole frame that decodes (media.ValidJPEG): until then each address
// that sends the stream's SSRC (from the expected IP, when the coordinator
// gave one) gets a receiver of its own, a trial. The first trial to yield
// a valid frame is latched: its receiver becomes the stream's, with every
// packet it had, and every other address is refused from then on. So a
// racer that sends junk with the SSRC before the camera does not capture
// the stream. Trials are bounded: at most maxTrials at once (packets from
// further addresses are refused while they last); each lasts trialWindow,
// and gives up early, its packets refused until the window ends, after
// trialBytes of payload or trialFrames frames that do not decode. Then
// its address may start over, when there is room. Packets of trials that
// lose count as wrong_source.
const (
	maxTrials   = 4
	trialWindow = 2 * time.Second // two frames of a 1 fps camera that starts mid-frame
	trialBytes  = 4 << 20         // a large JPEG frame
	trialFrames = 3               // pictures decoded per trial at most: decoding costs
)

// trial is one address sending a stream's SSRC before a source is latched.
type trial struct {
	rx      *media.Receiver
	started time.Time
	packets uint64
	bytes   int
	bad     int // frames that did not decode
}

// spent tells whether the trial has used up its chances before its window
// ends.
func (t *trial) spent() bool { return t.bytes > trialBytes || t.bad >= trialFrames }

// stream is one camera stream an agent receives.
type stream struct {
	a       *Agent
	cmd     ingest.AgentCommand
	rx      atomic.Pointer[media.Receiver] // the latched source's (replaced once, when one is latched)
	w       *media.SegmentWriter
	frames  chan media.Frame // reassembled frames, to the writer
	created time.Time
	done    chan struct{}
	// sourceIP is the only IP allowed, when the coordinator knows it. Set
	// before the stream is shared, then only read.
	sourceIP net.IP

	mu      sync.Mutex // orders receive, the latch and BYE against stop
	ended   bool
	reason  string
	latched netip.AddrPort            // the source; invalid until one sent a valid frame
	trials  map[netip.AddrPort]*trial // addresses judged until then

	liveMu   sync.Mutex
	watchers map[chan []byte]struct{} // live viewers; nil once the stream ended
	latest   []byte                   // the newest frame, for a viewer who just arrived

	lastPacket  atomic.Int64 // unix ns of the latched source's last packet
	wrongSource atomic.Uint64
	dropped     atomic.Uint64
}

// wrong counts n datagrams refused for their source, for the stream and
// the agent.
func (s *stream) wrong(n uint64) {
	s.wrongSource.Add(n)
	s.a.wrongSource.Add(n)
}

// receive takes an RTP packet of the stream's SSRC from from: from the
// latched source it is reassembled and complete frames go to the writer
// (never blocking: if the writer is far behind, frames are dropped and
// counted); before a source is latched it is judged; otherwise it is
// refused (wrong_source).
func (s *stream) receive(p *rtp.Packet, from *net.UDPAddr, now time.Time) {
	if s.sourceIP != nil && !s.sourceIP.Equal(from.IP) {
		s.wrong(1)
		return
	}
	src := from.AddrPort()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return
	}
	if !s.latched.IsValid() {
		s.judge(p, src, now)
		return
	}
	if src != s.latched {
		s.wrong(1)
		return
	}
	s.lastPacket.Store(now.UnixNano())
	if frames, err := s.rx.Load().Push(p, now); err == nil {
		s.deliver(frames)
	}
}

// judge feeds a packet to its address's trial, and latches the address if
// that completes a valid frame. s.mu is held.
func (s *stream) judge(p *rtp.Packet, src netip.AddrPort, now time.Time) {
	for k, t := range s.trials {
		if now.Sub(t.started) > trialWindow {
			s.dropTrial(k, t) // it had its chance; it may start over
		}
	}
	t := s.trials[src]
	if t == nil {
		if len(s.trials) >= maxTrials {
			s.wrong(1)
			return
		}
		rx, err := media.NewReceiver(s.cmd.SSRC, nil)
		if err != nil {
			s.wrong(1)
			return
		}
		t = &trial{rx: rx, started: now}
		if s.trials == nil {
			s.trials = map[netip.AddrPort]*trial{}
		}
		s.trials[src] = t
	}
	t.packets++ // counted as wrong_source if it loses
	if t.spent() {
		return
	}
	t.bytes += len(p.Payload)
	frames, err := t.rx.Push(p, now)
	if err != nil {
		return
	}
	for i, f := range frames {
		if media.ValidJPEG(f.JPEG) {
			s.latch(src, t, now)
			s.deliver(frames[i:])
			return
		}
		if t.bad++; t.spent() {
			return
		}
	}
}

// latch makes src the stream's source and t's receiver the stream's. s.mu
// is held.
func (s *stream) latch(src netip.AddrPort, t *trial, now time.Time) {
	s.latched = src
	delete(s.trials, src)
	for k, o := range s.trials {
		s.dropTrial(k, o)
	}
	old := s.rx.Swap(t.rx)
	if old.Ended() {
		t.rx.Bye()
	}
	old.Close()
	s.lastPacket.Store(now.UnixNano())
	s.a.log.Info("stream source latched", "stream", s.cmd.StreamID, "source", src.String())
}

// dropTrial ends a trial; its packets count as wrong_source. s.mu is held.
func (s *stream) dropTrial(k netip.AddrPort, t *trial) {
	delete(s.trials, k)
	t.rx.Close()
	s.wrong(t.packets)
}

// deliver hands frames to live viewers and the writer. s.mu is held.
func (s *stream) deliver(frames []media.Frame) {
	for _, f := range frames {
		s.broadcast(f.JPEG)
		select {
		case s.frames <- f:
		default:
			s.dropped.Add(1)
		}
	}
}

// byeFrom tells whether an RTCP BYE from ip may end the stream: only from
// its source, the expected IP when the coordinator gave one, else the
// latched source's IP (RTCP comes from another port than RTP). Before a
// source is latched, a BYE from an unknown source ends nothing.
func (s *stream) byeFrom(ip net.IP) bool {
	if s.sourceIP != nil {
		return s.sourceIP.Equal(ip)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.latched.IsValid() && net.IP(s.latched.Addr().AsSlice()).Equal(ip)
}

// bye records the source's RTCP BYE.
func (s *stream) bye() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rx.Load().Bye()
}

// stop ends the stream's input; the writer then finishes.
func (s *stream) stop(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ended {
		s.ended, s.reason = true, reason
		for k, t := range s.trials {
			s.dropTrial(k, t)
		}
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
		delete(s.watchers, ch)
	}, true
}

// write stores frames until the stream ends, then finishes the segment and
// reports it. It runs on its own goroutine so that a slow disk never holds
// up the socket.
func (s *stream) write() {
	defer close(s.done)
	a := s.a
	report := func(state string) ingest.SegmentReport {
		st := s.rx.Load().Stats()
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
		s.rx.Load().Close()
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
	s.rx.Load().Close()
	r := report("done")
	r.Reason, r.FirstStored, r.Ended, r.WriteErrors = s.reason, firstStored, time.Now(), writeErrors
	a.log.Info("stream ended", "stream", s.cmd.StreamID, "reason", s.reason, "frames", r.Frames, "packets_lost", r.Lost,
		"duration", time.Duration(r.DurationMS)*time.Millisecond, "dropped_frames", s.dropped.Load())
	a.publish(ingest.AgentTopic(a.cfg.ID, "segment"), r, 1)
}
