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
// whole frame that decodes (media.ValidJPEG): until then each sender of
// the stream's SSRC gets a receiver of its own, a trial. The first trial to
// yield a valid frame is latched: its receiver becomes the stream's, with
// every packet it had, and every other address is refused from then on. So
// a racer that sends junk with the SSRC before the camera does not capture
// the stream.
//
// Trials are bounded, so that judging costs little, and bounded so that
// junk cannot keep the camera out:
//   - At most maxTrials at once, and one per IP: a host has one trial at a
//     time however many ports it sends from (its other ports are refused
//     while the trial lasts), so it cannot take every trial. When the
//     coordinator gave the camera's IP, packets from every other IP are
//     refused before they are judged: every trial is the camera's IP's, and
//     there each port may have one, so that one other port of the camera's
//     host (or of a sender spoofing it) cannot hold the camera out.
//   - A trial lasts trialWindow from its first packet. It is spent after
//     trialBytes of payload or trialFrames frames that do not decode: it
//     gives its place up at once (to another host, or another port of its
//     own), while its address stays refused until its window ends, so that
//     it cannot start over with a fresh budget. At most maxSpent addresses
//     are remembered so; beyond, the oldest is forgotten (it may start
//     over).
//
// Packets of trials that lose count as wrong_source.
const (
	maxTrials   = 4
	maxSpent    = 64
	trialWindow = 2 * time.Second // two frames of a 1 fps camera that starts mid-frame
	trialBytes  = 4 << 20         // a large JPEG frame
	trialFrames = 3               // pictures decoded per trial at most: decoding costs
)

// trial is one sender of a stream's SSRC, judged before a source is
// latched.
type trial struct {
	rx      *media.Receiver // nil once spent
	started time.Time
	packets uint64 // counted as wrong_source if it loses
	bytes   int
	bad     int // frames that did not decode
}

// usedUp tells whether the trial has used up its budget.
func (t *trial) usedUp() bool { return t.bytes > trialBytes || t.bad >= trialFrames }

// stream is one camera stream an agent receives.
type stream struct {
	a       *Agent
	cmd     ingest.AgentCommand
	rx      atomic.Pointer[media.Receiver] // the latched source's (replaced once, when one is latched)
	w       *media.SegmentWriter
	frames  chan media.Frame // reassembled frames, to the writer
	created time.Time
	done    chan struct{}
	// source is the only IP allowed, when the coordinator knows it (the
	// zero Addr otherwise). Set before the stream is shared, then only read.
	source netip.Addr

	mu      sync.Mutex // orders receive, the latch and BYE against stop
	ended   bool
	reason  string
	latched netip.AddrPort            // the source; invalid until one sent a valid frame
	trials  map[netip.AddrPort]*trial // senders judged until then

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
	src := plain(from.AddrPort())
	if s.source.IsValid() && src.Addr() != s.source {
		s.wrong(1)
		return
	}
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

// plain is a sender's address as it is compared: IPv4 received on an IPv6
// socket as IPv4, without an IPv6 zone (the coordinator gives none).
func plain(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap().WithZone(""), a.Port())
}

// judge feeds a packet to its sender's trial, and latches the sender if
// that completes a valid frame. s.mu is held.
func (s *stream) judge(p *rtp.Packet, src netip.AddrPort, now time.Time) {
	live, spent, hostBusy := 0, 0, false
	for k, t := range s.trials {
		switch {
		case now.Sub(t.started) > trialWindow:
			s.dropTrial(k, t) // it had its chance; it may start over
		case t.rx == nil:
			spent++
		default:
			live++
			hostBusy = hostBusy || (k != src && k.Addr() == src.Addr() && !s.source.IsValid())
		}
	}
	t := s.trials[src]
	if t == nil {
		if live >= maxTrials || hostBusy {
			s.wrong(1)
			return
		}
		if spent >= maxSpent {
			s.forgetOldestSpent()
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
	if t.rx == nil { // spent
		s.wrong(1)
		return
	}
	t.packets++ // counted as wrong_source if it loses
	t.bytes += len(p.Payload)
	if frames, err := t.rx.Push(p, now); err == nil {
		for i, f := range frames {
			if media.ValidJPEG(f.JPEG) {
				s.latch(src, t, now)
				s.deliver(frames[i:])
				return
			}
			if t.bad++; t.usedUp() {
				break
			}
		}
	}
	if t.usedUp() {
		s.spend(t)
	}
}

// spend ends a trial that used up its budget: its packets count as
// wrong_source and its place is free, but it stays in s.trials, refusing
// its sender, until its window ends. s.mu is held.
func (s *stream) spend(t *trial) {
	t.rx.Close()
	t.rx = nil
	s.wrong(t.packets)
	t.packets = 0
}

// forgetOldestSpent drops the spent trial that started first. s.mu is
// held.
func (s *stream) forgetOldestSpent() {
	var oldest netip.AddrPort
	var first time.Time
	for k, t := range s.trials {
		if t.rx == nil && (first.IsZero() || t.started.Before(first)) {
			oldest, first = k, t.started
		}
	}
	delete(s.trials, oldest)
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
	if t.rx != nil {
		t.rx.Close()
	}
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
func (s *stream) byeFrom(ip netip.Addr) bool {
	ip = ip.Unmap().WithZone("")
	if s.source.IsValid() {
		return s.source == ip
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.latched.IsValid() && s.latched.Addr() == ip
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
		r := report(ingest.SegmentDone)
		r.Reason, r.Ended = s.reason, time.Now()
		a.log.Info("live stream ended", "stream", s.cmd.StreamID, "reason", s.reason, "frames", r.Frames, "packets_lost", r.Lost)
		a.publish(ingest.AgentTopic(a.cfg.ID, ingest.AgentSegment), r, 1)
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
			r := report(ingest.SegmentRecording)
			r.FirstStored = firstStored
			a.publish(ingest.AgentTopic(a.cfg.ID, ingest.AgentSegment), r, 1)
		}
	}
	if err := s.w.Close(); err != nil {
		writeErrors++
		a.log.Error("cannot finish segment", "stream", s.cmd.StreamID, "error", err)
	}
	s.rx.Load().Close()
	r := report(ingest.SegmentDone)
	r.Reason, r.FirstStored, r.Ended, r.WriteErrors = s.reason, firstStored, time.Now(), writeErrors
	a.log.Info("stream ended", "stream", s.cmd.StreamID, "reason", s.reason, "frames", r.Frames, "packets_lost", r.Lost,
		"duration", time.Duration(r.DurationMS)*time.Millisecond, "dropped_frames", s.dropped.Load())
	a.publish(ingest.AgentTopic(a.cfg.ID, ingest.AgentSegment), r, 1)
}
