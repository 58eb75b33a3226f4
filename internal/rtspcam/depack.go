package rtspcam

import (
	"bytes"
	"errors"
	"time"

	"github.com/bluenviron/gortsplib/v5/pkg/format"
	"github.com/bluenviron/gortsplib/v5/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v5/pkg/format/rtph265"
	"github.com/bluenviron/gortsplib/v5/pkg/format/rtpmpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/pion/rtp"

	"github.com/vigilhq/vigil/internal/media"
)

// maxAUBytes bounds an access unit: a 4K keyframe of a camera at a high
// bitrate is a few megabytes; beyond this it is junk.
const maxAUBytes = 16 << 20

// Depacketizer turns one RTSP session's RTP packets into access units with
// absolute timestamps, and notices the format: from the description first,
// then from the parameter sets the camera sends in-band, so that a
// resolution change is seen at its keyframe. It holds no goroutine; it is
// what fuzzing feeds (FuzzDepacketizer).
type Depacketizer struct {
	codec string
	h264  *rtph264.Decoder
	h265  *rtph265.Decoder
	aac   *rtpmpeg4audio.Decoder
	audio *mpeg4audio.AudioSpecificConfig

	format    *media.AVFormat // nil until parameter sets are known
	announced bool            // the format was in an Output
	vps       []byte
	sps       []byte
	pps       []byte
	dts264    *h264.DTSExtractor
	dts265    *h265.DTSExtractor
	// base is the wall-clock time of PTS 0 of the session, fixed by its
	// first packet.
	base      time.Time
	videoBase int64 // base in 90 kHz ticks
	audioBase int64 // base in the audio's clock
	lastDTS   int64

	// Bad counts packets and access units that could not be used.
	Bad uint64
}

// Output is what one packet gives: a new format (before the access units
// that use it), then access units.
type Output struct {
	Format *media.AVFormat
	AUs    []media.AU
}

// NewDepacketizer makes a depacketizer for a session's video format (H264
// or H265) and, if not nil, its AAC audio.
func NewDepacketizer(video format.Format, audio *format.MPEG4Audio) (*Depacketizer, error) {
	d := &Depacketizer{}
	var err error
	switch v := video.(type) {
	case *format.H264:
		d.codec = media.CodecH264
		d.sps, d.pps = v.SafeParams()
		if d.h264, err = v.CreateDecoder(); err != nil {
			return nil, err
		}
	case *format.H265:
		d.codec = media.CodecH265
		d.vps, d.sps, d.pps = v.SafeParams()
		if d.h265, err = v.CreateDecoder(); err != nil {
			return nil, err
		}
	default:
		return nil, errors.New("the video is not H.264 or H.265")
	}
	if audio != nil && audio.Config != nil && audio.Config.SampleRate > 0 && audio.Config.SampleRate <= 192000 {
		if d.aac, err = audio.CreateDecoder(); err != nil {
			return nil, err
		}
		cfg := *audio.Config
		d.audio = &cfg
	}
	d.setFormat()
	return d, nil
}

// Format returns the format known so far (nil before parameter sets).
func (d *Depacketizer) Format() *media.AVFormat { return d.format }

// setFormat makes the format from the parameter sets, if they are whole
// and readable; it tells whether it changed.
func (d *Depacketizer) setFormat() bool {
	if len(d.sps) == 0 || len(d.pps) == 0 || (d.codec == media.CodecH265 && len(d.vps) == 0) {
		return false
	}
	f, err := media.FormatOf(d.codec, clone(d.vps), clone(d.sps), clone(d.pps))
	if err != nil {
		return false
	}
	f.Audio = d.audio
	if d.format != nil && d.format.Equal(f) {
		return false
	}
	d.format = &f
	d.dts264, d.dts265 = nil, nil // a new format starts at a keyframe
	return true
}

// keep returns a parameter set seen in-band: the one held if equal, else a
// copy (packet buffers do not last).
func keep(held, n []byte) []byte {
	if bytes.Equal(held, n) {
		return held
	}
	return bytes.Clone(n)
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return bytes.Clone(b)
}

// anchor fixes the session's time base at its first packet.
func (d *Depacketizer) anchor(pts int64, rate int64, now time.Time) {
	if !d.base.IsZero() {
		return
	}
	d.base = now.Add(-time.Duration(pts) * time.Second / time.Duration(rate))
	d.videoBase = media.TicksAt(d.base, media.VideoClock)
	if d.audio != nil {
		d.audioBase = media.TicksAt(d.base, int64(d.audio.SampleRate))
	}
}

// Video takes a video RTP packet, its PTS as the RTSP client decodes it
// (90 kHz, from the session's start) and when it arrived.
func (d *Depacketizer) Video(pkt *rtp.Packet, pts int64, now time.Time) Output {
	var out Output
	var au [][]byte
	var err error
	if d.h264 != nil {
		au, err = d.h264.Decode(pkt)
	} else {
		au, err = d.h265.Decode(pkt)
	}
	if err != nil {
		if !errors.Is(err, rtph264.ErrMorePacketsNeeded) && !errors.Is(err, rtph265.ErrMorePacketsNeeded) &&
			!errors.Is(err, rtph264.ErrNonStartingPacketAndNoPrevious) && !errors.Is(err, rtph265.ErrNonStartingPacketAndNoPrevious) {
			d.Bad++
		}
		return out
	}
	size := 0
	for _, n := range au {
		size += len(n)
	}
	if size == 0 || size > maxAUBytes {
		d.Bad++
		return out
	}
	d.anchor(pts, media.VideoClock, now)
	// In-band parameter sets: the format changes at this picture.
	for _, n := range au {
		if len(n) == 0 {
			continue
		}
		if d.codec == media.CodecH264 {
			switch h264.NALUType(n[0] & 0x1f) {
			case h264.NALUTypeSPS:
				d.sps = keep(d.sps, n)
			case h264.NALUTypePPS:
				d.pps = keep(d.pps, n)
			}
		} else {
			switch h265.NALUType((n[0] >> 1) & 0x3f) {
			case h265.NALUType_VPS_NUT:
				d.vps = keep(d.vps, n)
			case h265.NALUType_SPS_NUT:
				d.sps = keep(d.sps, n)
			case h265.NALUType_PPS_NUT:
				d.pps = keep(d.pps, n)
			}
		}
	}
	if d.setFormat() {
		d.announced = false // it goes out with the next picture delivered
	}
	if d.format == nil {
		d.Bad++
		return out
	}
	key := false
	if d.codec == media.CodecH264 {
		key = h264.IsRandomAccess(au)
	} else {
		key = h265.IsRandomAccess(au)
	}
	var dts int64
	if d.codec == media.CodecH264 {
		if d.dts264 == nil {
			if !key {
				return out
			}
			d.dts264 = &h264.DTSExtractor{}
			d.dts264.Initialize()
		}
		dts, err = d.dts264.Extract(au, pts)
	} else {
		if d.dts265 == nil {
			if !key {
				return out
			}
			d.dts265 = &h265.DTSExtractor{}
			d.dts265.Initialize()
		}
		dts, err = d.dts265.Extract(au, pts)
	}
	if err != nil {
		// The picture cannot be placed: start again at the next keyframe.
		d.Bad++
		d.dts264, d.dts265 = nil, nil
		return out
	}
	abs := d.videoBase + dts
	if d.lastDTS != 0 && abs <= d.lastDTS {
		d.Bad++
		return out
	}
	d.lastDTS = abs
	if !d.announced {
		out.Format, d.announced = d.format, true
	}
	// One copy of the picture, which the packets' buffers may not outlive.
	buf := make([]byte, 0, size)
	nalus := make([][]byte, len(au))
	for i, n := range au {
		buf = append(buf, n...)
		nalus[i] = buf[len(buf)-len(n):]
	}
	out.AUs = append(out.AUs, media.AU{Track: media.TrackVideo, DTS: abs, PTS: d.videoBase + pts, Key: key, NALUs: nalus, Size: size})
	return out
}

// Audio takes an AAC RTP packet, its PTS in the audio's clock and when it
// arrived. Audio before the session's first picture is dropped.
func (d *Depacketizer) Audio(pkt *rtp.Packet, pts int64, now time.Time) Output {
	var out Output
	if d.aac == nil {
		return out
	}
	aus, err := d.aac.Decode(pkt)
	if err != nil {
		if !errors.Is(err, rtpmpeg4audio.ErrMorePacketsNeeded) {
			d.Bad++
		}
		return out
	}
	if d.base.IsZero() || d.lastDTS == 0 {
		return out
	}
	for i, a := range aus {
		if len(a) == 0 || len(a) > 1<<16 {
			d.Bad++
			continue
		}
		t := d.audioBase + pts + int64(i)*mpeg4audio.SamplesPerAccessUnit
		out.AUs = append(out.AUs, media.AU{Track: media.TrackAudio, DTS: t, PTS: t, Audio: bytes.Clone(a), Size: len(a)})
	}
	return out
}
