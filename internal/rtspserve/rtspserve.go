// Package rtspserve is a fake IP camera: an RTSP server that plays an
// MP4 file (H.264 or H.265 video, as ffmpeg makes it) in real time,
// looping forever, to any number of clients over TCP or UDP. Vigil's
// benchmark points many clients at one of these, and tests use it to
// measure live-view latency and to make a camera misbehave: disappear,
// stall, send garbage, or change resolution. The file is read into
// memory and only its video track is served; every keyframe carries the
// parameter sets in-band, as cameras send them.
//
// Timing: the video's PTS (90 kHz, the RTP timestamp) is 0 for the first
// frame sent after Start and keeps rising across loops and file
// switches. Frames go out in decode order; a frame whose DTS in this
// timeline is d is written at start + d/90000 s. Without B-frames PTS
// equals DTS; with them a frame's PTS may differ from its DTS by a frame
// or two. The RTP timestamp of every packet is the PTS modulo 2^32, with
// no random offset. Should the sender fall more than 250 ms behind (a
// Pause, or a starved machine), the timeline jumps forward rather than
// catching up with a burst of frames.
//
// A gortsplib client's PacketPTS is not this PTS: it counts from 0 at the
// first keyframe packet that client receives. To ask SendTime when a
// packet's frame was written, pass int64(pkt.Timestamp).
package rtspserve

import (
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v5"
	"github.com/bluenviron/gortsplib/v5/pkg/base"
	"github.com/bluenviron/gortsplib/v5/pkg/description"
	"github.com/bluenviron/gortsplib/v5/pkg/format"
	"github.com/bluenviron/gortsplib/v5/pkg/liberrors"
	"github.com/pion/rtp"
)

// Config says what to serve and where.
type Config struct {
	Listen string // RTSP TCP address; "127.0.0.1:0" when empty
	File   string // MP4 file with H.264 or H.265 video
	Path   string // "/cam" when empty
	UDP    bool   // also offer UDP, on a free RTP/RTCP port pair at Listen's host; TCP always works

	// Username and Password, when Username is set, are required from
	// clients (basic or digest authentication).
	Username string
	Password string
}

// history is how long SendTime remembers writes.
const history = 10 * time.Second

// maxLag is how late the sender may fall before it moves the timeline
// forward instead of catching up with a burst of frames.
const maxLag = 250 * time.Millisecond

// Server is a running fake camera.
type Server struct {
	cfg    Config
	url    string
	codec  string
	srv    *gortsplib.Server
	stream *gortsplib.ServerStream
	media  *description.Media
	enc    interface {
		Encode([][]byte) ([]*rtp.Packet, error)
	}
	payloadType uint8

	mu       sync.Mutex // guards conns and sessions
	conns    map[*gortsplib.ServerConn]struct{}
	sessions map[*gortsplib.ServerSession]struct{}

	frames      atomic.Uint64
	writeErrors atomic.Uint64 // packets dropped: a reader's write queue was full

	wmu        sync.Mutex // guards the fields below and the writes to the stream
	seq        uint16
	lastTS     uint32
	sent       []sentFrame // oldest first
	next       *clip       // from SwitchFile, taken at the next keyframe
	pauseUntil time.Time
	drop       int // packets still to lose (Drop)

	wake      chan struct{}
	done      chan struct{}
	loopDone  chan struct{}
	closeOnce sync.Once
}

type sentFrame struct {
	ts uint32 // PTS modulo 2^32
	at time.Time
}

// Start loads the file and starts serving it.
func Start(cfg Config) (*Server, error) {
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Path == "" {
		cfg.Path = "/cam"
	}
	if !strings.HasPrefix(cfg.Path, "/") {
		cfg.Path = "/" + cfg.Path
	}
	c, err := loadClip(cfg.File)
	if err != nil {
		return nil, err
	}

	s := &Server{
		cfg:         cfg,
		codec:       c.codec,
		payloadType: 96,
		conns:       map[*gortsplib.ServerConn]struct{}{},
		sessions:    map[*gortsplib.ServerSession]struct{}{},
		wake:        make(chan struct{}, 1),
		done:        make(chan struct{}),
		loopDone:    make(chan struct{}),
	}
	var forma format.Format
	switch c.codec {
	case "H264":
		f := &format.H264{PayloadTyp: s.payloadType, PacketizationMode: 1, SPS: c.sps, PPS: c.pps}
		e, err := f.CreateEncoder()
		if err != nil {
			return nil, err
		}
		forma, s.enc = f, e
	case "H265":
		f := &format.H265{PayloadTyp: s.payloadType, VPS: c.vps, SPS: c.sps, PPS: c.pps}
		e, err := f.CreateEncoder()
		if err != nil {
			return nil, err
		}
		forma, s.enc = f, e
	}
	s.media = &description.Media{Type: description.MediaTypeVideo, Formats: []format.Format{forma}}

	s.srv = &gortsplib.Server{Handler: (*handler)(s), RTSPAddress: cfg.Listen}
	spare := map[string]net.PacketConn{}
	if cfg.UDP {
		host, _, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, err
		}
		rtpConn, rtcpConn, err := udpPair(host)
		if err != nil {
			return nil, err
		}
		s.srv.UDPRTPAddress = net.JoinHostPort(host, strconv.Itoa(port(rtpConn)))
		s.srv.UDPRTCPAddress = net.JoinHostPort(host, strconv.Itoa(port(rtcpConn)))
		spare[s.srv.UDPRTPAddress] = rtpConn
		spare[s.srv.UDPRTCPAddress] = rtcpConn
		// Hand gortsplib the sockets already bound, so no one takes the ports.
		s.srv.ListenPacket = func(network, address string) (net.PacketConn, error) {
			if pc, ok := spare[address]; ok {
				delete(spare, address)
				return pc, nil
			}
			return net.ListenPacket(network, address)
		}
	}
	err = s.srv.Start()
	for _, pc := range spare {
		pc.Close()
	}
	if err != nil {
		return nil, err
	}

	s.stream = &gortsplib.ServerStream{Server: s.srv, Desc: &description.Session{Medias: []*description.Media{s.media}}}
	if err := s.stream.Initialize(); err != nil {
		s.srv.Close()
		return nil, err
	}

	addr := s.srv.NetListener().Addr().(*net.TCPAddr)
	host := addr.IP.String()
	if addr.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	s.url = "rtsp://" + net.JoinHostPort(host, strconv.Itoa(addr.Port)) + cfg.Path

	go s.run(c)
	return s, nil
}

// udpPair binds an even RTP port and the RTCP port after it.
func udpPair(host string) (net.PacketConn, net.PacketConn, error) {
	var lastErr error
	for range 100 {
		a, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, nil, err
		}
		p := port(a)
		other := p + 1
		if p%2 == 1 {
			other = p - 1
		}
		b, err := net.ListenPacket("udp", net.JoinHostPort(host, strconv.Itoa(other)))
		if err != nil {
			a.Close()
			lastErr = err
			continue
		}
		if p%2 == 1 {
			return b, a, nil
		}
		return a, b, nil
	}
	return nil, nil, fmt.Errorf("no free UDP port pair: %w", lastErr)
}

func port(pc net.PacketConn) int { return pc.LocalAddr().(*net.UDPAddr).Port }

// URL is the stream's address, rtsp://host:port/path, without a login.
func (s *Server) URL() string { return s.url }

// Close stops sending and closes every connection.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.done)
		<-s.loopDone
		s.stream.Close()
		s.srv.Close()
	})
}

// Readers is how many clients are playing now.
func (s *Server) Readers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for ss := range s.sessions {
		if ss.State() == gortsplib.ServerSessionStatePlay {
			n++
		}
	}
	return n
}

// Frames is how many access units have been written to the stream (each
// once, however many clients there are).
func (s *Server) Frames() uint64 { return s.frames.Load() }

// WriteErrors counts the packets dropped because a reader's write queue
// was full: a reader too slow to take the stream.
func (s *Server) WriteErrors() uint64 { return s.writeErrors.Load() }

// SendTime is when the frame with this PTS was written, for frames of
// the last 10 s. The PTS is compared modulo 2^32, so both the stream's
// PTS and a packet's RTP timestamp (int64(pkt.Timestamp)) work.
func (s *Server) SendTime(pts int64) (time.Time, bool) {
	ts := uint32(pts)
	s.wmu.Lock()
	defer s.wmu.Unlock()
	for i := len(s.sent) - 1; i >= 0; i-- {
		if s.sent[i].ts == ts {
			return s.sent[i].at, true
		}
	}
	return time.Time{}, false
}

// DropSessions closes every client connection and session now, as if the
// camera went away; the server keeps listening, so clients can come back.
func (s *Server) DropSessions() {
	s.mu.Lock()
	sessions := make([]*gortsplib.ServerSession, 0, len(s.sessions))
	for ss := range s.sessions {
		sessions = append(sessions, ss)
	}
	conns := make([]*gortsplib.ServerConn, 0, len(s.conns))
	for sc := range s.conns {
		conns = append(conns, sc)
	}
	s.mu.Unlock()
	for _, ss := range sessions {
		ss.Close()
	}
	for _, sc := range conns {
		sc.Close()
	}
}

// Pause stops sending frames for d, as a stalled camera does, then goes
// on with the next frame of the file. The timeline does not stop: the
// first frame after the pause has a PTS about d later than it would have.
// Pause returns at once.
func (s *Server) Pause(d time.Duration) {
	s.wmu.Lock()
	if until := time.Now().Add(d); until.After(s.pauseUntil) {
		s.pauseUntil = until
	}
	s.wmu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Drop loses the next n RTP packets of the video, as a network would:
// their sequence numbers are skipped.
func (s *Server) Drop(n int) {
	s.wmu.Lock()
	s.drop += n
	s.wmu.Unlock()
}

// InjectGarbage writes n RTP packets with random payloads into the
// stream, with the video's payload type, SSRC, the next sequence numbers
// and the last frame's timestamp.
func (s *Server) InjectGarbage(n int) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	for range n {
		payload := make([]byte, 1+mrand.IntN(1200))
		_, _ = rand.Read(payload)
		pkt := &rtp.Packet{
			Header: rtp.Header{
				Version:        2,
				Marker:         mrand.IntN(2) == 0,
				PayloadType:    s.payloadType,
				SequenceNumber: s.seq,
				Timestamp:      s.lastTS,
			},
			Payload: payload,
		}
		s.seq++
		if s.stream.WritePacketRTPWithNTP(s.media, pkt, time.Now()) != nil {
			return
		}
	}
}

// SwitchFile plays another file from the current file's next keyframe
// on, continuing the timeline. The file must have the same codec. The
// SDP keeps the first file's parameters; the new ones go in-band in
// front of each keyframe, as always.
func (s *Server) SwitchFile(file string) error {
	c, err := loadClip(file)
	if err != nil {
		return err
	}
	if c.codec != s.codec {
		return fmt.Errorf("%s is %s, the stream is %s", file, c.codec, s.codec)
	}
	s.wmu.Lock()
	s.next = c
	s.wmu.Unlock()
	return nil
}

// run writes the frames at their time until Close.
func (s *Server) run(c *clip) {
	defer close(s.loopDone)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	start := time.Now()
	var base int64 // 90 kHz: where the current clip's pass started
	for i := 0; ; i++ {
		if i == len(c.frames) {
			base += c.duration
			i = 0
		}
		if c.frames[i].key {
			s.wmu.Lock()
			next := s.next
			s.next = nil
			s.wmu.Unlock()
			if next != nil {
				base += c.frames[i].dts
				c, i = next, 0
			}
		}
		f := c.frames[i]

		// Wait for the frame's time, or for the end of a pause.
		paused := false
		for {
			due := start.Add(ticks(base + f.dts))
			s.wmu.Lock()
			until := s.pauseUntil
			s.wmu.Unlock()
			if until.After(due) {
				due, paused = until, true
			}
			d := time.Until(due)
			if d <= 0 {
				break
			}
			timer.Reset(d)
			select {
			case <-s.done:
				return
			case <-s.wake:
			case <-timer.C:
			}
		}
		now := time.Now()
		if lag := now.Sub(start.Add(ticks(base + f.dts))); lag > maxLag || (paused && lag > 0) {
			base += int64(lag) * clockRate / int64(time.Second)
		}

		if err := s.write(f.au, base+f.pts, now); err != nil {
			if errors.Is(err, liberrors.ErrServerStreamClosed{}) {
				return
			}
			select {
			case <-s.done:
				return
			default:
			}
		}
	}
}

func ticks(t int64) time.Duration {
	return time.Duration(t/clockRate)*time.Second + time.Duration(t%clockRate)*time.Second/clockRate
}

// write sends one access unit and notes when.
func (s *Server) write(au [][]byte, pts int64, now time.Time) error {
	pkts, err := s.enc.Encode(au)
	if err != nil {
		return err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	ts := uint32(pts)
	for _, pkt := range pkts {
		pkt.Timestamp = ts
		pkt.SequenceNumber = s.seq
		s.seq++
		if s.drop > 0 { // lost on the way: its sequence number is skipped
			s.drop--
			continue
		}
		if err := s.stream.WritePacketRTPWithNTP(s.media, pkt, now); err != nil {
			return err
		}
	}
	s.lastTS = ts
	s.frames.Add(1)
	old := 0
	for old < len(s.sent) && now.Sub(s.sent[old].at) > history {
		old++
	}
	if old > 0 {
		s.sent = append(s.sent[:0], s.sent[old:]...)
	}
	s.sent = append(s.sent, sentFrame{ts: ts, at: now})
	return nil
}

// handler takes gortsplib's callbacks, so they stay off Server's API.
type handler Server

// OnStreamWriteError counts a packet dropped because a reader's write
// queue was full (gortsplib would log each one).
func (h *handler) OnStreamWriteError(*gortsplib.ServerHandlerOnStreamWriteErrorCtx) {
	h.writeErrors.Add(1)
}

func (h *handler) OnConnOpen(ctx *gortsplib.ServerHandlerOnConnOpenCtx) {
	h.mu.Lock()
	h.conns[ctx.Conn] = struct{}{}
	h.mu.Unlock()
}

func (h *handler) OnConnClose(ctx *gortsplib.ServerHandlerOnConnCloseCtx) {
	h.mu.Lock()
	delete(h.conns, ctx.Conn)
	h.mu.Unlock()
}

func (h *handler) OnSessionOpen(ctx *gortsplib.ServerHandlerOnSessionOpenCtx) {
	h.mu.Lock()
	h.sessions[ctx.Session] = struct{}{}
	h.mu.Unlock()
}

func (h *handler) OnSessionClose(ctx *gortsplib.ServerHandlerOnSessionCloseCtx) {
	h.mu.Lock()
	delete(h.sessions, ctx.Session)
	h.mu.Unlock()
}

// check answers a request for a path with an error response, or nil.
func (h *handler) check(conn *gortsplib.ServerConn, req *base.Request, path string) (*base.Response, error) {
	if h.cfg.Username != "" && !conn.VerifyCredentials(req, h.cfg.Username, h.cfg.Password) {
		return &base.Response{StatusCode: base.StatusUnauthorized}, liberrors.ErrServerAuth{}
	}
	if path != h.cfg.Path {
		return &base.Response{StatusCode: base.StatusNotFound}, fmt.Errorf("no stream at %q", path)
	}
	return nil, nil
}

func (h *handler) OnDescribe(ctx *gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if res, err := h.check(ctx.Conn, ctx.Request, ctx.Path); res != nil {
		return res, nil, err
	}
	return &base.Response{StatusCode: base.StatusOK}, h.stream, nil
}

func (h *handler) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if res, err := h.check(ctx.Conn, ctx.Request, ctx.Path); res != nil {
		return res, nil, err
	}
	return &base.Response{StatusCode: base.StatusOK}, h.stream, nil
}

func (h *handler) OnPlay(*gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	return &base.Response{StatusCode: base.StatusOK}, nil
}
