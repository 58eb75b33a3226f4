package media

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"image/jpeg"
	"os"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mp4"
)

// FragmentDuration is how much video a segment holds in memory before
// writing it out: a crash loses at most this much.
const FragmentDuration = time.Second

// defaultFrameDuration is assumed for a frame whose successor never came
// (the last one) or whose timestamps make no sense: 1/15 s.
const defaultFrameDuration = ClockRate / 15

// SegmentWriter writes JPEG frames to a fragmented MP4 file with one M-JPEG
// track. Each fragment is written whole, once a second, so a file cut short
// by a crash is still readable up to its last whole fragment.
type SegmentWriter struct {
	f        *os.File
	path     string
	started  bool
	seq      uint32
	baseTime uint64 // of the next fragment, 90 kHz
	written  uint64 // the duration of the fragments written, 90 kHz
	pending  []*fmp4.Sample
	lastRTP  uint32
	lastDur  uint32

	Frames int
	Bytes  int64
	Width  int
	Height int
}

// CreateSegment creates a segment file at path (its directory must exist).
func CreateSegment(path string) (*SegmentWriter, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	return &SegmentWriter{f: f, path: path, lastDur: defaultFrameDuration}, nil
}

// Path returns the file's path.
func (w *SegmentWriter) Path() string { return w.path }

// Write adds a frame. Frames must come in order.
func (w *SegmentWriter) Write(fr Frame) error {
	if !w.started {
		cfg, err := jpeg.DecodeConfig(bytes.NewReader(fr.JPEG))
		if err != nil {
			return fmt.Errorf("first frame is not a JPEG: %w", err)
		}
		w.Width, w.Height = cfg.Width, cfg.Height
		init := fmp4.Init{Tracks: []*fmp4.InitTrack{{
			ID: 1, TimeScale: ClockRate, Codec: &mp4.CodecMJPEG{Width: cfg.Width, Height: cfg.Height},
		}}}
		var buf seekablebuffer.Buffer
		if err := init.Marshal(&buf); err != nil {
			return err
		}
		if _, err := w.f.Write(buf.Bytes()); err != nil {
			return err
		}
		w.started = true
		// The first fragment starts at the frame's RTP timestamp: a
		// camera keeps one timeline for a stream across agents, so that
		// the finisher can put their segments end to end without the
		// frames two of them hold (see Finisher.Finish).
		w.baseTime = uint64(fr.RTP)
	} else {
		d := fr.RTP - w.lastRTP // wraps correctly
		if d == 0 || d > 10*ClockRate {
			d = w.lastDur
		}
		w.pending[len(w.pending)-1].Duration = d
		w.lastDur = d
	}
	w.lastRTP = fr.RTP
	w.pending = append(w.pending, &fmp4.Sample{Payload: fr.JPEG})
	w.Frames++
	w.Bytes += int64(len(fr.JPEG))
	// Every sample but the newest has its duration: write them once they
	// make a fragment.
	var dur uint64
	for _, s := range w.pending[:len(w.pending)-1] {
		dur += uint64(s.Duration)
	}
	// The first fragment goes out as soon as it has a whole frame, so that
	// a clip is on disk within a frame of its start.
	if dur >= uint64(FragmentDuration.Seconds()*ClockRate) || (w.seq == 0 && len(w.pending) >= 2) {
		last := w.pending[len(w.pending)-1]
		if err := w.flush(w.pending[:len(w.pending)-1]); err != nil {
			return err
		}
		w.pending = append(w.pending[:0], last)
	}
	return nil
}

func (w *SegmentWriter) flush(samples []*fmp4.Sample) error {
	if len(samples) == 0 {
		return nil
	}
	w.seq++
	part := fmp4.Part{SequenceNumber: w.seq, Tracks: []*fmp4.PartTrack{{ID: 1, BaseTime: w.baseTime, Samples: samples}}}
	var buf seekablebuffer.Buffer
	if err := part.Marshal(&buf); err != nil {
		return err
	}
	if _, err := w.f.Write(buf.Bytes()); err != nil {
		return err
	}
	for _, s := range samples {
		w.baseTime += uint64(s.Duration)
		w.written += uint64(s.Duration)
	}
	return nil
}

// Duration returns the length of the video written or pending.
func (w *SegmentWriter) Duration() time.Duration {
	t := w.written
	for _, s := range w.pending {
		if s.Duration == 0 {
			t += uint64(w.lastDur)
		} else {
			t += uint64(s.Duration)
		}
	}
	return time.Duration(t) * time.Second / ClockRate
}

// Close writes what is pending and closes the file.
func (w *SegmentWriter) Close() error {
	if len(w.pending) > 0 {
		w.pending[len(w.pending)-1].Duration = w.lastDur
	}
	err := w.flush(w.pending)
	w.pending = nil
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Sample is one frame read back from a segment.
type Sample struct {
	JPEG     []byte
	Duration uint32 // 90 kHz
	RTP      uint32 // its RTP timestamp (90 kHz, wrapping)
}

// Segment is what a segment file holds.
type Segment struct {
	Width, Height int
	Samples       []Sample
	Truncated     bool // the file ended inside a fragment (its writer died)
}

// Duration returns the segment's length.
func (s *Segment) Duration() time.Duration {
	var t uint64
	for _, x := range s.Samples {
		t += uint64(x.Duration)
	}
	return time.Duration(t) * time.Second / ClockRate
}

// ReadSegment reads a segment file, up to its last whole fragment.
func ReadSegment(path string) (*Segment, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	whole := wholeBoxes(b)
	seg := &Segment{Truncated: len(whole) < len(b)}
	if !bytes.Contains(whole, []byte("moov")) {
		return seg, nil // no frame ever reached it
	}
	var init fmp4.Init
	if err := init.Unmarshal(bytes.NewReader(whole)); err != nil {
		return nil, fmt.Errorf("%s: no MP4 header: %w", path, err)
	}
	if len(init.Tracks) != 1 {
		return nil, fmt.Errorf("%s: %d tracks, want 1", path, len(init.Tracks))
	}
	if c, ok := init.Tracks[0].Codec.(*mp4.CodecMJPEG); ok {
		seg.Width, seg.Height = c.Width, c.Height
	} else {
		return nil, fmt.Errorf("%s: the track is not M-JPEG", path)
	}
	var parts fmp4.Parts
	if err := parts.Unmarshal(whole); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, p := range parts {
		for _, t := range p.Tracks {
			ts := uint32(t.BaseTime)
			for _, s := range t.Samples {
				seg.Samples = append(seg.Samples, Sample{JPEG: s.Payload, Duration: s.Duration, RTP: ts})
				ts += s.Duration
			}
		}
	}
	return seg, nil
}

// wholeBoxes returns b up to the end of its last complete fragment (mdat)
// or, before any, its last complete top-level box.
func wholeBoxes(b []byte) []byte {
	end, lastMdat := 0, -1
	for off := 0; off+8 <= len(b); {
		size := int(binary.BigEndian.Uint32(b[off:]))
		typ := string(b[off+4 : off+8])
		if size == 1 && off+16 <= len(b) { // 64-bit size
			size = int(binary.BigEndian.Uint64(b[off+8:]))
		}
		if size < 8 || off+size > len(b) {
			break
		}
		off += size
		end = off
		if typ == "mdat" {
			lastMdat = off
		}
	}
	if lastMdat >= 0 {
		return b[:lastMdat]
	}
	return b[:end]
}
