package media

import (
	"fmt"
	"net"
	"time"

	"github.com/bluenviron/gortsplib/v5/pkg/format/rtpmjpeg"
	"github.com/pion/rtcp"
)

// DefaultPayloadSize is the largest RTP payload a Sender puts in one UDP
// datagram unless told otherwise: safe under common MTUs.
const DefaultPayloadSize = 1200

// Sender streams JPEG frames as RTP/JPEG to one address, and RTCP (a BYE at
// the end) to the next port, as RTP senders such as ffmpeg do.
type Sender struct {
	ssrc  uint32
	enc   *rtpmjpeg.Encoder
	rtp   *net.UDPConn
	rtcp  *net.UDPConn
	start time.Time
	base  uint32

	Packets, Bytes uint64
}

// NewSender dials host:port (RTP) and host:port+1 (RTCP).
func NewSender(host string, port int, ssrc uint32, payloadSize int) (*Sender, error) {
	if payloadSize <= 0 {
		payloadSize = DefaultPayloadSize
	}
	enc := &rtpmjpeg.Encoder{SSRC: &ssrc, PayloadMaxSize: payloadSize}
	if err := enc.Init(); err != nil {
		return nil, err
	}
	dial := func(p int) (*net.UDPConn, error) {
		addr, err := net.ResolveUDPAddr("udp", net.JoinHostPort(host, fmt.Sprint(p)))
		if err != nil {
			return nil, err
		}
		return net.DialUDP("udp", nil, addr)
	}
	rtpConn, err := dial(port)
	if err != nil {
		return nil, fmt.Errorf("rtp: %w", err)
	}
	rtcpConn, err := dial(port + 1)
	if err != nil {
		rtpConn.Close()
		return nil, fmt.Errorf("rtcp: %w", err)
	}
	rtpConn.SetWriteBuffer(4 << 20)
	return &Sender{ssrc: ssrc, enc: enc, rtp: rtpConn, rtcp: rtcpConn, base: ssrc * 7919}, nil
}

// Follow puts s on prev's timeline: the same frame time makes the same
// RTP timestamp, so that the segments agents write for a stream that
// moves between them can be put end to end (Finisher.Finish).
func (s *Sender) Follow(prev *Sender) {
	s.start, s.base = prev.start, prev.base
}

// Send sends one frame taken at time at; the RTP timestamp follows at.
func (s *Sender) Send(jpeg []byte, at time.Time) error {
	if s.start.IsZero() {
		s.start = at
	}
	pkts, err := s.enc.Encode(jpeg)
	if err != nil {
		return err
	}
	ts := s.base + uint32(at.Sub(s.start).Seconds()*ClockRate)
	for _, p := range pkts {
		p.Timestamp = ts
		b, err := p.Marshal()
		if err != nil {
			return err
		}
		if _, err := s.rtp.Write(b); err != nil {
			return err
		}
		s.Packets++
		s.Bytes += uint64(len(b))
	}
	return nil
}

// Bye sends an RTCP BYE and closes the sockets.
func (s *Sender) Bye(reason string) error {
	b, _ := rtcp.Marshal([]rtcp.Packet{&rtcp.Goodbye{Sources: []uint32{s.ssrc}, Reason: reason}})
	_, err := s.rtcp.Write(b)
	s.rtp.Close()
	s.rtcp.Close()
	return err
}

// Close closes the sockets without a BYE.
func (s *Sender) Close() {
	s.rtp.Close()
	s.rtcp.Close()
}
