package media

// Segments of RTSP cameras: H.264 or H.265 video (and AAC audio when the
// camera sends it) stored as the camera encoded it, in fragmented MP4, one
// fragment a second, so that a file cut short by a crash is still readable
// up to its last whole fragment (as the JPEG segments in segment.go).
//
// Timestamps are absolute: a sample's decode time is its time since the
// Unix epoch in its track's clock (90 kHz video, the sample rate for
// audio), from when the agent received it. Segments of one clip written by
// several agents, or by one agent across a camera's reconnections, are
// then put end to end by time (Finisher.Finish).

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mp4"
)

// Video codecs of RTSP cameras, as clips name them.
const (
	CodecH264 = "h264"
	CodecH265 = "h265"
)

// VideoClock is the clock rate of video timestamps (RTP's, for H.264 and
// H.265).
const VideoClock = 90000

// Track numbers of an AU.
const (
	TrackVideo = 0
	TrackAudio = 1
)

// AVFormat is what an RTSP camera's stream is: its video codec and
// parameter sets, and its audio if any.
type AVFormat struct {
	Codec         string // CodecH264 or CodecH265
	VPS, SPS, PPS []byte // VPS for H.265 only
	Width, Height int
	// Audio is the AAC configuration; nil without audio.
	Audio *mpeg4audio.AudioSpecificConfig
}

// Equal tells whether two formats can share a file: the same codec and
// parameter sets, and the same audio.
func (f AVFormat) Equal(o AVFormat) bool {
	if f.Codec != o.Codec || !bytes.Equal(f.VPS, o.VPS) || !bytes.Equal(f.SPS, o.SPS) || !bytes.Equal(f.PPS, o.PPS) {
		return false
	}
	if (f.Audio == nil) != (o.Audio == nil) {
		return false
	}
	return f.Audio == nil || *f.Audio == *o.Audio
}

// String describes the format for logs: "h264 1920x1080 +aac".
func (f AVFormat) String() string {
	s := fmt.Sprintf("%s %dx%d", f.Codec, f.Width, f.Height)
	if f.Audio != nil {
		s += " +aac"
	}
	return s
}

// MIME is the format's type for Media Source Extensions, with the codecs
// parameter (RFC 6381): video/mp4; codecs="avc1.64001f,mp4a.40.2".
func (f AVFormat) MIME() string {
	var codecs string
	switch f.Codec {
	case CodecH264:
		codecs = "avc1.42e01e"
		if len(f.SPS) >= 4 {
			codecs = fmt.Sprintf("avc1.%02x%02x%02x", f.SPS[1], f.SPS[2], f.SPS[3])
		}
	case CodecH265:
		codecs = "hvc1.1.6.L93.B0"
		var s h265.SPS
		if s.Unmarshal(f.SPS) == nil {
			codecs = fmt.Sprintf("hvc1.%d.%X.L%d.B0", s.ProfileTierLevel.GeneralProfileIdc, 6, s.ProfileTierLevel.GeneralLevelIdc)
		}
	}
	if f.Audio != nil {
		codecs += fmt.Sprintf(",mp4a.40.%d", int(f.Audio.Type))
	}
	return `video/mp4; codecs="` + codecs + `"`
}

// FormatOf returns the format a video parameter set describes: codec
// parameters, width and height. An SPS that cannot be read is an error.
func FormatOf(codec string, vps, sps, pps []byte) (AVFormat, error) {
	f := AVFormat{Codec: codec, VPS: vps, SPS: sps, PPS: pps}
	switch codec {
	case CodecH264:
		var s h264.SPS
		if err := s.Unmarshal(sps); err != nil {
			return f, fmt.Errorf("H.264 SPS: %w", err)
		}
		f.Width, f.Height = s.Width(), s.Height()
	case CodecH265:
		var s h265.SPS
		if err := s.Unmarshal(sps); err != nil {
			return f, fmt.Errorf("H.265 SPS: %w", err)
		}
		f.Width, f.Height = s.Width(), s.Height()
	default:
		return f, fmt.Errorf("codec %q is not H.264 or H.265", codec)
	}
	if f.Width <= 0 || f.Height <= 0 || f.Width > 16384 || f.Height > 16384 {
		return f, fmt.Errorf("%s SPS says %dx%d", codec, f.Width, f.Height)
	}
	return f, nil
}

// AU is an access unit: a video picture (its NAL units) or an AAC frame.
type AU struct {
	Track int   // TrackVideo or TrackAudio
	DTS   int64 // decode time: since the Unix epoch, in the track's clock
	PTS   int64 // presentation time (video with B-frames differs; audio: DTS)
	Key   bool  // a video picture a decoder may start at
	NALUs [][]byte
	Audio []byte // one AAC frame
	Size  int    // payload bytes
}

// mp4Codec is the format's video codec as mediacommon writes it.
func (f AVFormat) mp4Codec() mp4.Codec {
	if f.Codec == CodecH265 {
		return &mp4.CodecH265{VPS: f.VPS, SPS: f.SPS, PPS: f.PPS}
	}
	return &mp4.CodecH264{SPS: f.SPS, PPS: f.PPS}
}

// init is the format's fMP4 header.
func (f AVFormat) init() fmp4.Init {
	init := fmp4.Init{Tracks: []*fmp4.InitTrack{{ID: 1, TimeScale: VideoClock, Codec: f.mp4Codec()}}}
	if f.Audio != nil {
		init.Tracks = append(init.Tracks, &fmp4.InitTrack{ID: 2, TimeScale: uint32(f.Audio.SampleRate), Codec: &mp4.CodecMPEG4Audio{Config: *f.Audio}})
	}
	return init
}

// InitSegment returns the fMP4 header of a stream of this format (for live
// view).
func (f AVFormat) InitSegment() ([]byte, error) {
	var buf seekablebuffer.Buffer
	init := f.init()
	if err := init.Marshal(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// parameterSet tells whether a NAL unit is a parameter set or delimiter,
// which MP4 keeps in the header rather than in the samples.
func parameterSet(codec string, nalu []byte) bool {
	if len(nalu) == 0 {
		return true
	}
	if codec == CodecH265 {
		switch h265.NALUType((nalu[0] >> 1) & 0x3f) {
		case h265.NALUType_VPS_NUT, h265.NALUType_SPS_NUT, h265.NALUType_PPS_NUT, h265.NALUType_AUD_NUT:
			return true
		}
		return false
	}
	switch h264.NALUType(nalu[0] & 0x1f) {
	case h264.NALUTypeSPS, h264.NALUTypePPS, h264.NALUTypeAccessUnitDelimiter:
		return true
	}
	return false
}

// Sample turns an AU into an fMP4 sample (without its duration), the
// video's parameter sets left out.
func (f AVFormat) Sample(au AU) (*fmp4.Sample, error) {
	if au.Track == TrackAudio {
		return &fmp4.Sample{Payload: au.Audio}, nil
	}
	nalus := make([][]byte, 0, len(au.NALUs))
	for _, n := range au.NALUs {
		if !parameterSet(f.Codec, n) {
			nalus = append(nalus, n)
		}
	}
	if len(nalus) == 0 {
		return nil, errors.New("an access unit of parameter sets only")
	}
	payload, err := h264.AVCC(nalus).Marshal()
	if err != nil {
		return nil, err
	}
	off := au.PTS - au.DTS
	if off < -VideoClock*10 || off > VideoClock*10 {
		off = 0
	}
	return &fmp4.Sample{Payload: payload, PTSOffset: int32(off), IsNonSyncSample: !au.Key}, nil
}

// avPending is a track's samples not written yet, with their decode
// times; the newest waits for the next to know its duration.
type avPending struct {
	samples []*fmp4.Sample
	dts     []int64
	lastDur uint32
}

// AVSegmentWriter writes an RTSP camera's access units to a fragmented MP4
// file, as they are.
type AVSegmentWriter struct {
	f      *os.File
	path   string
	format AVFormat
	seq    uint32
	tracks [2]avPending
	first  int64 // the first video DTS
	last   int64 // the newest video DTS

	Frames int
	Bytes  int64
}

// CreateAVSegment creates a segment file at path (its directory must
// exist) for a stream of format f, and writes its header.
func CreateAVSegment(path string, f AVFormat) (*AVSegmentWriter, error) {
	if f.Codec != CodecH264 && f.Codec != CodecH265 {
		return nil, fmt.Errorf("codec %q is not H.264 or H.265", f.Codec)
	}
	if f.Audio != nil && (f.Audio.SampleRate <= 0 || f.Audio.SampleRate > 192000) {
		return nil, fmt.Errorf("AAC sample rate %d", f.Audio.SampleRate)
	}
	init, err := f.InitSegment()
	if err != nil {
		return nil, err
	}
	fh, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	if _, err := fh.Write(init); err != nil {
		fh.Close()
		os.Remove(path)
		return nil, err
	}
	w := &AVSegmentWriter{f: fh, path: path, format: f, first: -1}
	w.tracks[TrackVideo].lastDur = VideoClock / 15
	if f.Audio != nil {
		w.tracks[TrackAudio].lastDur = mpeg4audio.SamplesPerAccessUnit
	}
	return w, nil
}

// Path returns the file's path.
func (w *AVSegmentWriter) Path() string { return w.path }

// Format returns the format the file holds.
func (w *AVSegmentWriter) Format() AVFormat { return w.format }

// Write adds an access unit. Each track's must come in decode order; the
// first video AU must be a keyframe (earlier ones are dropped). Audio
// before the first picture is dropped too.
func (w *AVSegmentWriter) Write(au AU) error {
	if au.Track == TrackAudio && w.format.Audio == nil {
		return nil
	}
	if au.Track != TrackVideo && au.Track != TrackAudio {
		return fmt.Errorf("track %d", au.Track)
	}
	if w.first < 0 {
		if au.Track != TrackVideo || !au.Key {
			return nil
		}
		w.first = au.DTS
	}
	s, err := w.format.Sample(au)
	if err != nil {
		return err
	}
	t := &w.tracks[au.Track]
	if n := len(t.samples); n > 0 {
		d := au.DTS - t.dts[n-1]
		if d <= 0 {
			return fmt.Errorf("track %d: decode time %d not after %d", au.Track, au.DTS, t.dts[n-1])
		}
		if d > 1<<31 {
			d = int64(t.lastDur)
		}
		t.samples[n-1].Duration = uint32(d)
		t.lastDur = uint32(d)
	}
	t.samples = append(t.samples, s)
	t.dts = append(t.dts, au.DTS)
	if au.Track == TrackVideo {
		w.Frames++
		w.last = au.DTS
	}
	w.Bytes += int64(len(s.Payload))
	// A fragment a second of video (its newest picture waits for its
	// duration); the first as soon as it has a whole picture, so that a
	// clip is on disk within a frame of its start.
	v := &w.tracks[TrackVideo]
	if n := len(v.dts); au.Track == TrackVideo && n >= 2 && (v.dts[n-1]-v.dts[0] >= int64(FragmentDuration.Seconds()*VideoClock) || w.seq == 0) {
		return w.flush(false)
	}
	return nil
}

// flush writes a fragment of every sample that has its duration (all of
// them when closing).
func (w *AVSegmentWriter) flush(all bool) error {
	part := fmp4.Part{SequenceNumber: w.seq + 1}
	for i := range w.tracks {
		t := &w.tracks[i]
		n := len(t.samples)
		if !all {
			n--
		} else if n > 0 {
			t.samples[n-1].Duration = t.lastDur
		}
		if n <= 0 {
			continue
		}
		// The part gets its own slice: the one sample held back moves to
		// the front of t.samples before the part is written.
		part.Tracks = append(part.Tracks, &fmp4.PartTrack{ID: i + 1, BaseTime: uint64(t.dts[0]), Samples: slices.Clone(t.samples[:n])})
		t.samples = append(t.samples[:0], t.samples[n:]...)
		t.dts = append(t.dts[:0], t.dts[n:]...)
	}
	if len(part.Tracks) == 0 {
		return nil
	}
	w.seq++
	var buf seekablebuffer.Buffer
	if err := part.Marshal(&buf); err != nil {
		return err
	}
	_, err := w.f.Write(buf.Bytes())
	return err
}

// Duration returns the length of the video written or pending.
func (w *AVSegmentWriter) Duration() time.Duration {
	if w.first < 0 {
		return 0
	}
	return time.Duration(w.last-w.first+int64(w.tracks[TrackVideo].lastDur)) * time.Second / VideoClock
}

// Close writes what is pending and closes the file.
func (w *AVSegmentWriter) Close() error {
	err := w.flush(true)
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// AVSample is a sample read back from a segment.
type AVSample struct {
	DTS       int64 // in its track's clock, since the Unix epoch
	PTSOffset int32
	Key       bool
	Duration  uint32
	Payload   []byte // AVCC (video) or an AAC frame
}

// AVSegment is what an RTSP segment file holds.
type AVSegment struct {
	Format    AVFormat
	Video     []AVSample
	Audio     []AVSample
	Truncated bool // the file ended inside a fragment (its writer died)
}

// Duration returns the length of the segment's video.
func (s *AVSegment) Duration() time.Duration {
	if len(s.Video) == 0 {
		return 0
	}
	last := s.Video[len(s.Video)-1]
	return time.Duration(last.DTS-s.Video[0].DTS+int64(last.Duration)) * time.Second / VideoClock
}

// segmentCodec tells what a segment file holds: "mjpeg", CodecH264,
// CodecH265, or "" for a file without a header (no frame reached it).
func segmentCodec(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	whole := wholeBoxes(b)
	if !bytes.Contains(whole, []byte("moov")) {
		return "", nil
	}
	var init fmp4.Init
	if err := init.Unmarshal(bytes.NewReader(whole)); err != nil {
		return "", fmt.Errorf("%s: no MP4 header: %w", path, err)
	}
	if len(init.Tracks) == 0 {
		return "", fmt.Errorf("%s: no track", path)
	}
	switch init.Tracks[0].Codec.(type) {
	case *mp4.CodecMJPEG:
		return "mjpeg", nil
	case *mp4.CodecH264:
		return CodecH264, nil
	case *mp4.CodecH265:
		return CodecH265, nil
	}
	return "", fmt.Errorf("%s: the first track is not M-JPEG, H.264 or H.265", path)
}

// ReadAVSegment reads an RTSP segment file, up to its last whole fragment.
func ReadAVSegment(path string) (*AVSegment, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	whole := wholeBoxes(b)
	seg := &AVSegment{Truncated: len(whole) < len(b)}
	if !bytes.Contains(whole, []byte("moov")) {
		return seg, nil
	}
	var init fmp4.Init
	if err := init.Unmarshal(bytes.NewReader(whole)); err != nil {
		return nil, fmt.Errorf("%s: no MP4 header: %w", path, err)
	}
	if len(init.Tracks) == 0 || len(init.Tracks) > 2 {
		return nil, fmt.Errorf("%s: %d tracks", path, len(init.Tracks))
	}
	switch c := init.Tracks[0].Codec.(type) {
	case *mp4.CodecH264:
		seg.Format, err = FormatOf(CodecH264, nil, c.SPS, c.PPS)
	case *mp4.CodecH265:
		seg.Format, err = FormatOf(CodecH265, c.VPS, c.SPS, c.PPS)
	default:
		return nil, fmt.Errorf("%s: the first track is not H.264 or H.265", path)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(init.Tracks) == 2 {
		c, ok := init.Tracks[1].Codec.(*mp4.CodecMPEG4Audio)
		if !ok {
			return nil, fmt.Errorf("%s: the second track is not AAC", path)
		}
		cfg := c.Config
		seg.Format.Audio = &cfg
	}
	var parts fmp4.Parts
	if err := parts.Unmarshal(whole); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, p := range parts {
		for _, t := range p.Tracks {
			ts := int64(t.BaseTime)
			for _, s := range t.Samples {
				x := AVSample{DTS: ts, PTSOffset: s.PTSOffset, Key: !s.IsNonSyncSample, Duration: s.Duration, Payload: s.Payload}
				switch t.ID {
				case 1:
					seg.Video = append(seg.Video, x)
				case 2:
					seg.Audio = append(seg.Audio, x)
				}
				ts += int64(s.Duration)
			}
		}
	}
	return seg, nil
}

// TicksAt is a wall-clock time in a clock of rate per second since the
// Unix epoch, as AU timestamps are.
func TicksAt(t time.Time, rate int64) int64 {
	ns := t.UnixNano()
	return ns/1e9*rate + ns%1e9*rate/1e9
}

// TimeOfTicks is the wall-clock time of ticks in a clock of rate.
func TimeOfTicks(ticks, rate int64) time.Time {
	return time.Unix(ticks/rate, ticks%rate*1e9/rate)
}
