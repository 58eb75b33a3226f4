// Package media moves camera video: RTP/JPEG (RFC 2435) packetising and
// reassembly with gortsplib's rtpmjpeg, reordering, duplicate removal, loss
// and jitter with its rtpreceiver; clip segments as fragmented MP4 with an
// M-JPEG track (mediacommon), which survive being cut short; and finished
// clips, as H.264 MP4 with ffmpeg or as the original JPEG frames in a
// progressive MP4 without it.
package media

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"image/jpeg"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v5/pkg/format/rtpmjpeg"
	"github.com/bluenviron/gortsplib/v5/pkg/rtpreceiver"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// ClockRate is the RTP clock of JPEG video (RFC 2435): 90 kHz.
const ClockRate = 90000

// PayloadTypeJPEG is RTP's static payload type for JPEG.
const PayloadTypeJPEG = 26

// Frame is one JPEG picture of a stream.
type Frame struct {
	JPEG []byte
	// RTP is the frame's RTP timestamp (90 kHz, wrapping).
	RTP uint32
	// Received is when its last packet arrived.
	Received time.Time
}

// ReceiverStats are a stream's counters.
type ReceiverStats struct {
	Packets      uint64  `json:"packets"`        // accepted, after duplicates were removed
	Lost         uint64  `json:"packets_lost"`   // gaps in sequence numbers
	Frames       uint64  `json:"frames"`         // complete JPEG frames
	Bytes        uint64  `json:"bytes"`          // of complete frames
	BadFrames    uint64  `json:"bad_frames"`     // frames that could not be reassembled (missing or bad fragments)
	Invalid      uint64  `json:"invalid"`        // packets that are not RTP/JPEG
	JitterMillis float64 `json:"jitter_ms"`      // RFC 3550 interarrival jitter
	Byes         uint64  `json:"rtcp_byes"`      // RTCP BYE received
	LastPacket   int64   `json:"last_packet_ms"` // unix ms of the last accepted packet
}

// Receiver reassembles one RTP/JPEG stream (one SSRC). It removes
// duplicates, reorders within 64 packets, counts loss and jitter, and
// returns complete JPEG frames. It is safe for concurrent use.
type Receiver struct {
	mu    sync.Mutex
	ssrc  uint32
	rr    *rtpreceiver.Receiver
	dec   *rtpmjpeg.Decoder
	stats ReceiverStats
	bye   bool
}

// NewReceiver returns a receiver for ssrc. rtcpOut, if not nil, is called
// with RTCP receiver reports for the sender, every second.
func NewReceiver(ssrc uint32, rtcpOut func(rtcp.Packet)) (*Receiver, error) {
	r := &Receiver{ssrc: ssrc, dec: &rtpmjpeg.Decoder{}}
	if err := r.dec.Init(); err != nil {
		return nil, err
	}
	if rtcpOut == nil {
		rtcpOut = func(rtcp.Packet) {}
	}
	r.rr = &rtpreceiver.Receiver{
		ClockRate:            ClockRate,
		LocalSSRC:            ssrc ^ 0x5a5a5a5a,
		UnrealiableTransport: true,
		Period:               time.Second,
		WritePacketRTCP:      rtcpOut,
	}
	if err := r.rr.Initialize(); err != nil {
		return nil, err
	}
	return r, nil
}

// Close stops the receiver's report timer.
func (r *Receiver) Close() { r.rr.Close() }

// ErrWrongSSRC is returned for a packet of another stream.
var ErrWrongSSRC = errors.New("packet of another SSRC")

// Push adds one RTP packet and returns the frames it completes.
func (r *Receiver) Push(pkt *rtp.Packet, now time.Time) ([]Frame, error) {
	if pkt.SSRC != r.ssrc {
		return nil, ErrWrongSSRC
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if pkt.PayloadType != PayloadTypeJPEG {
		r.stats.Invalid++
		return nil, fmt.Errorf("payload type %d is not JPEG (26)", pkt.PayloadType)
	}
	pkts, lost := r.rr.ProcessPacket2(pkt, now, true)
	r.stats.Lost += lost
	r.stats.Packets += uint64(len(pkts))
	r.stats.LastPacket = now.UnixMilli()
	var frames []Frame
	for _, p := range pkts {
		jpeg, err := r.dec.Decode(p)
		switch {
		case err == nil:
			r.stats.Frames++
			r.stats.Bytes += uint64(len(jpeg))
			frames = append(frames, Frame{JPEG: jpeg, RTP: p.Timestamp, Received: now})
		case errors.Is(err, rtpmjpeg.ErrMorePacketsNeeded):
		case errors.Is(err, rtpmjpeg.ErrNonStartingPacketAndNoPrevious):
			r.stats.BadFrames++ // the rest of a frame whose start was lost
		default:
			r.stats.BadFrames++
		}
	}
	return frames, nil
}

// Bye records an RTCP BYE from the sender.
func (r *Receiver) Bye() {
	r.mu.Lock()
	r.bye = true
	r.stats.Byes++
	r.mu.Unlock()
}

// Ended reports whether the sender said BYE.
func (r *Receiver) Ended() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bye
}

// Stats returns the counters.
func (r *Receiver) Stats() ReceiverStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	if st := r.rr.Stats(); st != nil {
		s.JitterMillis = st.Jitter / ClockRate * 1000
	}
	return s
}

// IsRTCP tells RTCP from RTP on a multiplexed port (RFC 5761): RTCP packet
// types 192-223 sit where RTP has its marker bit and payload types 64-95.
func IsRTCP(b []byte) bool {
	return len(b) >= 2 && b[0]>>6 == 2 && b[1] >= 192 && b[1] <= 223
}

// MaxByeSSRCs is the most sources the BYEs of one RTCP datagram may name:
// as many as one BYE packet can hold (its count has 5 bits). A camera names
// one, its own. More is no sender's goodbye but a way to end every stream
// of an agent with one datagram (one can name some 16,000), so such a
// datagram is refused whole.
const MaxByeSSRCs = 31

// ErrTooManyByes is returned for an RTCP datagram whose BYEs name more
// than MaxByeSSRCs sources.
var ErrTooManyByes = fmt.Errorf("rtcp: the BYEs name more than %d sources", MaxByeSSRCs)

// ByeSSRCs returns the SSRCs that an RTCP compound packet says goodbye for:
// none if it is not valid RTCP, and ErrTooManyByes if they are more than
// MaxByeSSRCs (counted from the packets' headers before anything is
// parsed).
func ByeSSRCs(b []byte) ([]uint32, error) {
	n := 0
	for off := 0; off+4 <= len(b) && b[off]>>6 == 2; off += 4 * (int(binary.BigEndian.Uint16(b[off+2:])) + 1) {
		if b[off+1] == rtcpBye {
			n += int(b[off] & 0x1f)
		}
	}
	if n > MaxByeSSRCs {
		return nil, ErrTooManyByes
	}
	pkts, err := rtcp.Unmarshal(b)
	if err != nil {
		return nil, nil
	}
	var out []uint32
	for _, p := range pkts {
		if g, ok := p.(*rtcp.Goodbye); ok {
			out = append(out, g.Sources...)
		}
	}
	if len(out) > MaxByeSSRCs {
		return nil, ErrTooManyByes
	}
	return out, nil
}

// rtcpBye is the RTCP packet type of a BYE (RFC 3550).
const rtcpBye = 203

// ValidJPEG tells whether b decodes as a picture. An agent takes a
// stream's source to be whoever first sends it a frame that does, so that
// junk sent first does not capture the stream.
func ValidJPEG(b []byte) bool {
	_, err := jpeg.Decode(bytes.NewReader(b))
	return err == nil
}
