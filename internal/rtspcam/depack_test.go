package rtspcam

import (
	"encoding/binary"
	"os/exec"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v5/pkg/format"
	"github.com/bluenviron/gortsplib/v5/pkg/format/rtph264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/pion/rtp"

	"github.com/vigilhq/vigil/internal/testpeer"
)

// The parameter sets of 64x64 pictures from ffmpeg's libx264 (baseline)
// and libx265, as cameras announce them.
var (
	testSPS264 = []byte{0x67, 0x42, 0xc0, 0x0a, 0xd9, 0x04, 0x26, 0xc0, 0x44, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0x50, 0x3c, 0x48, 0x99, 0x20}
	testPPS264 = []byte{0x68, 0xcb, 0x83, 0xcb, 0x20}
	testVPS265 = []byte{0x40, 0x01, 0x0c, 0x01, 0xff, 0xff, 0x04, 0x08, 0x00, 0x00, 0x03, 0x00, 0x9e, 0x08, 0x00, 0x00, 0x03, 0x00, 0x00, 0x1e, 0x95, 0x98, 0x09}
	testSPS265 = []byte{0x42, 0x01, 0x01, 0x04, 0x08, 0x00, 0x00, 0x03, 0x00, 0x9e, 0x08, 0x00, 0x00, 0x03, 0x00, 0x00, 0x1e, 0x90, 0x04, 0x10, 0x20, 0xb2, 0xca, 0xcd, 0x24, 0x99, 0x5e, 0x02, 0xdc, 0x08, 0x08, 0x00, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x00, 0xa0, 0x80}
	testPPS265 = []byte{0x44, 0x01, 0xc1, 0x72, 0x86, 0x0c, 0x42, 0x24}
)

// feedPackets splits data into RTP packets (a 2-byte length before each)
// and gives them to a depacketizer: the first byte picks the codec, the
// second whether a packet is audio. It checks what comes out: timestamps
// that go forward, formats that a segment can hold, samples that can be
// made.
func feedPackets(t *testing.T, data []byte) {
	if len(data) < 2 {
		return
	}
	var video format.Format = &format.H264{PayloadTyp: 96, PacketizationMode: 1, SPS: testSPS264, PPS: testPPS264}
	if data[0]&1 == 1 {
		video = &format.H265{PayloadTyp: 96, VPS: testVPS265, SPS: testSPS265, PPS: testPPS265}
	}
	audio := &format.MPEG4Audio{PayloadTyp: 97, Config: &mpeg4audio.AudioSpecificConfig{Type: 2, SampleRate: 8000, ChannelCount: 1}, SizeLength: 13, IndexLength: 3, IndexDeltaLength: 3}
	audioMask := data[1]
	data = data[2:]
	d, err := NewDepacketizer(video, audio)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	last := [2]int64{}
	for i := 0; len(data) >= 2; i++ {
		n := int(binary.BigEndian.Uint16(data))
		data = data[2:]
		n = min(n, len(data))
		var pkt rtp.Packet
		if pkt.Unmarshal(data[:n]) != nil {
			pkt = rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: uint16(i), Timestamp: uint32(i * 3000), Marker: true}, Payload: data[:n]}
		}
		data = data[n:]
		now = now.Add(33 * time.Millisecond)
		var out Output
		if audioMask>>(i%8)&1 == 1 {
			out = d.Audio(&pkt, int64(i)*1024, now)
		} else {
			out = d.Video(&pkt, int64(pkt.Timestamp), now)
		}
		if out.Format != nil {
			if out.Format.Width <= 0 || out.Format.Height <= 0 {
				t.Fatalf("format %v", out.Format)
			}
			if _, err := out.Format.InitSegment(); err != nil {
				t.Fatalf("format %v cannot be written: %v", out.Format, err)
			}
		}
		for _, au := range out.AUs {
			if au.DTS <= last[au.Track] {
				t.Fatalf("track %d went back: %d after %d", au.Track, au.DTS, last[au.Track])
			}
			last[au.Track] = au.DTS
			if f := d.Format(); f != nil {
				f.Sample(au) // an error is fine; a panic is not
			}
		}
	}
}

// FuzzDepacketizer feeds garbage RTP (and garbage inside well-formed RTP)
// to the depacketizers agents use on a camera's packets: gortsplib's
// H.264, H.265 and AAC decoders, mediacommon's DTS extractors, and ours.
// Nothing may panic, and what comes out must be usable.
func FuzzDepacketizer(f *testing.F) {
	pkt := func(payload []byte) []byte {
		b, _ := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: 1, Timestamp: 3000, Marker: true}, Payload: payload}).Marshal()
		return append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)
	}
	idr := append([]byte{0x65, 0x88, 0x84}, make([]byte, 40)...)
	stap := append([]byte{24}, binary.BigEndian.AppendUint16(nil, uint16(len(testSPS264)))...)
	stap = append(stap, testSPS264...)
	stap = append(binary.BigEndian.AppendUint16(stap, uint16(len(testPPS264))), testPPS264...)
	f.Add(append([]byte{0, 0}, append(pkt(stap), pkt(idr)...)...))
	f.Add(append([]byte{0, 0}, append(pkt([]byte{28, 0x85, 1, 2, 3}), pkt([]byte{28, 0x45, 4, 5})...)...))
	f.Add(append([]byte{1, 0}, pkt(append([]byte{0x26, 0x01, 0xaf}, make([]byte, 30)...))...))
	f.Add(append([]byte{0, 0xff}, pkt([]byte{0x00, 0x10, 0x00, 0x20, 1, 2, 3, 4})...))
	f.Fuzz(func(t *testing.T, data []byte) { feedPackets(t, data) })
}

// pictures encodes two 64x64 pictures with ffmpeg's libx264 and returns
// the NAL units of each.
func pictures(t *testing.T) [][][]byte {
	t.Helper()
	b, err := exec.Command(testpeer.Need(t, "ffmpeg"), "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=10", "-frames:v", "2",
		"-pix_fmt", "yuv420p", "-c:v", "libx264", "-profile:v", "baseline", "-x264-params", "sei=0", "-f", "h264", "-").Output()
	if err != nil {
		t.Fatal(err)
	}
	var nalus h264.AnnexB
	if err := nalus.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	var aus [][][]byte
	var cur [][]byte
	for _, n := range nalus {
		cur = append(cur, n)
		if typ := h264.NALUType(n[0] & 0x1f); typ == h264.NALUTypeIDR || typ == h264.NALUTypeNonIDR {
			aus, cur = append(aus, cur), nil
		}
	}
	return aus
}

// Packets of junk, a lone fragment, and a picture before any keyframe give
// nothing and are counted; a keyframe after them is delivered with the
// format, and the picture after it too.
func TestDepacketizerSkipsJunk(t *testing.T) {
	aus := pictures(t)
	d, err := NewDepacketizer(&format.H264{PayloadTyp: 96, PacketizationMode: 1, SPS: testSPS264, PPS: testPPS264}, nil)
	if err != nil {
		t.Fatal(err)
	}
	enc := rtph264.Encoder{PayloadType: 96, PacketizationMode: 1}
	if err := enc.Init(); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	var junk []*rtp.Packet
	for i, p := range [][]byte{{0xff, 0xff, 0xff}, {28, 0x45, 1, 2}} {
		junk = append(junk, &rtp.Packet{Header: rtp.Header{SequenceNumber: uint16(i), Timestamp: uint32(i * 3000), Marker: true}, Payload: p})
	}
	p, err := enc.Encode(aus[1]) // a picture that is not a keyframe
	if err != nil {
		t.Fatal(err)
	}
	for _, pkt := range append(junk, p...) {
		if out := d.Video(pkt, 6000, now); len(out.AUs) != 0 || out.Format != nil {
			t.Fatalf("%+v", out)
		}
	}
	if d.Bad == 0 {
		t.Error("junk was not counted")
	}
	var got []Output
	for i, au := range aus {
		pkts, err := enc.Encode(au)
		if err != nil {
			t.Fatal(err)
		}
		for _, pkt := range pkts {
			if out := d.Video(pkt, int64(9000+i*9000), now); len(out.AUs) > 0 {
				got = append(got, out)
			}
		}
	}
	if len(got) != 2 || got[0].Format == nil || got[0].Format.Width != 64 || !got[0].AUs[0].Key || got[1].Format != nil || got[1].AUs[0].Key {
		t.Fatalf("the keyframe and the picture after it: %+v", got)
	}
	if got[1].AUs[0].DTS-got[0].AUs[0].DTS != 9000 {
		t.Errorf("decode times %d then %d, want 9000 (100 ms) apart", got[0].AUs[0].DTS, got[1].AUs[0].DTS)
	}
}
