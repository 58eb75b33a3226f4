package agent

// Receiving: RTP and RTCP datagrams, handed to their streams.

import (
	"net"
	"time"

	"github.com/pion/rtp"

	"github.com/vigilhq/vigil/internal/ingest"
	"github.com/vigilhq/vigil/internal/media"
)

// readRTP receives RTP (and multiplexed RTCP) datagrams.
func (a *Agent) readRTP() {
	buf := make([]byte, 65536)
	for {
		n, from, err := a.rtpConn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		now := time.Now()
		if media.IsRTCP(buf[:n]) {
			a.rtcpPacket(buf[:n], from)
			continue
		}
		data := append([]byte(nil), buf[:n]...) // the receiver may hold it to reorder
		var p rtp.Packet
		if err := p.Unmarshal(data); err != nil || p.Version != 2 {
			a.notRTP.Add(1)
			continue
		}
		a.mu.Lock()
		s := a.bySSRC[p.SSRC]
		a.mu.Unlock()
		if s == nil {
			a.unknownSSRC.Add(1)
			continue
		}
		s.receive(&p, from, now)
	}
}

func (a *Agent) readRTCP() {
	buf := make([]byte, 65536)
	for {
		n, from, err := a.rtcp.ReadFromUDP(buf)
		if err != nil {
			return
		}
		a.rtcpPacket(buf[:n], from)
	}
}

// rtcpPacket ends the streams an RTCP BYE from from names, if it comes
// from their source (stream.byeFrom; otherwise it counts as wrong_source).
// A datagram whose BYEs name more than media.MaxByeSSRCs sources is
// refused whole (bye_refused).
func (a *Agent) rtcpPacket(b []byte, from *net.UDPAddr) {
	ssrcs, err := media.ByeSSRCs(b)
	if err != nil {
		a.byeRefused.Add(1)
		return
	}
	for _, ssrc := range ssrcs {
		a.mu.Lock()
		s := a.bySSRC[ssrc]
		a.mu.Unlock()
		if s == nil {
			continue
		}
		if !s.byeFrom(from.AddrPort().Addr()) {
			s.wrong(1)
			continue
		}
		s.bye()
		a.end(s, ingest.EndBye)
	}
}
