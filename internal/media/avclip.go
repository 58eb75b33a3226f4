package media

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/mp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/pmp4"
)

// finishAV joins an RTSP clip's segments into one progressive MP4 (index
// first), copying the camera's samples: no decoding, no encoding.
//
// Segments are put end to end by their absolute timestamps. Where two hold
// the same moments (a ring's pre-roll, or a stream that moved to another
// agent), the later one's samples up to the end of the earlier one are
// left out, and its video resumes at its first keyframe after that. A
// moment nobody received (the camera was lost) is its last picture held,
// with the audio silent. Where the camera changed its format (its
// resolution), the clip keeps the format that holds the most video; the
// segments in another are left out and counted.
func (f *Finisher) finishAV(ctx context.Context, segments []string, out, thumb string) (ClipInfo, error) {
	var info ClipInfo
	var format *AVFormat
	var video, audio []AVSample
	var segs []*AVSegment
	for _, p := range segments {
		s, err := ReadAVSegment(p)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return info, err
		}
		if len(s.Video) > 0 {
			segs = append(segs, s)
		}
	}
	// An MP4 track has one format: the clip keeps the one that holds the
	// most video.
	var most time.Duration
	for _, s := range segs {
		var d time.Duration
		for _, o := range segs {
			if o.Format.Equal(s.Format) {
				d += o.Duration()
			}
		}
		if d > most {
			most, format = d, &s.Format
		}
	}
	for _, s := range segs {
		if !format.Equal(s.Format) {
			info.Dropped++
			continue
		}
		info.Truncated = info.Truncated || s.Truncated
		video = appendAV(video, s.Video, true)
		if format.Audio != nil {
			audio = appendAV(audio, s.Audio, false)
		}
	}
	if format == nil || len(video) == 0 {
		return info, errors.New("no video in the clip's segments")
	}
	info.Codec, info.Width, info.Height, info.Frames = format.Codec, format.Width, format.Height, len(video)
	for i := 0; i+1 < len(video); i++ {
		video[i].Duration = uint32(video[i+1].DTS - video[i].DTS)
		if d := time.Duration(video[i].Duration) * time.Second / VideoClock; d > 2*time.Second && d > info.Gap {
			info.Gap = d
		}
	}
	for i := 0; i+1 < len(audio); i++ {
		audio[i].Duration = uint32(audio[i+1].DTS - audio[i].DTS)
	}
	start := video[0].DTS
	last := video[len(video)-1]
	info.Duration = time.Duration(last.DTS-start+int64(last.Duration)) * time.Second / VideoClock

	vt := &pmp4.Track{ID: 1, TimeScale: VideoClock, Codec: format.mp4Codec(), TimeOffset: -video[0].PTSOffset}
	for i := range video {
		s := video[i]
		vt.Samples = append(vt.Samples, &pmp4.Sample{
			Duration: s.Duration, PTSOffset: s.PTSOffset, IsNonSyncSample: !s.Key, PayloadSize: uint32(len(s.Payload)),
			GetPayload: func() ([]byte, error) { return s.Payload, nil },
		})
	}
	pres := pmp4.Presentation{Tracks: []*pmp4.Track{vt}}
	if format.Audio != nil {
		rate := int64(format.Audio.SampleRate)
		// Audio from before the first picture is left out; audio that
		// starts later is delayed to its place.
		begin := (start*rate + VideoClock - 1) / VideoClock // the first picture, in the audio's clock
		for len(audio) > 0 && audio[0].DTS < begin {
			audio = audio[1:]
		}
		if len(audio) > 0 {
			at := &pmp4.Track{ID: 2, TimeScale: uint32(rate), Codec: &mp4.CodecMPEG4Audio{Config: *format.Audio}, TimeOffset: int32(audio[0].DTS - begin)}
			for i := range audio {
				s := audio[i]
				at.Samples = append(at.Samples, &pmp4.Sample{
					Duration: s.Duration, PayloadSize: uint32(len(s.Payload)),
					GetPayload: func() ([]byte, error) { return s.Payload, nil },
				})
			}
			pres.Tracks = append(pres.Tracks, at)
		}
	}
	tmp := out + ".tmp"
	defer os.Remove(tmp)
	fh, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return info, err
	}
	if err := pres.Marshal(fh); err != nil {
		fh.Close()
		return info, err
	}
	if err := fh.Close(); err != nil {
		return info, err
	}
	if thumb != "" && f.FFmpeg != "" {
		// A picture from a third of the way in, decoded by ffmpeg: the
		// clip itself is not touched.
		if err := f.thumbnail(ctx, tmp, thumb, info.Duration/3); err != nil {
			return info, err
		}
	}
	if err := os.Rename(tmp, out); err != nil {
		return info, err
	}
	st, err := os.Stat(out)
	if err != nil {
		return info, err
	}
	info.Bytes = st.Size()
	return info, nil
}

// appendAV appends a segment's samples to the clip's: those up to the last
// one there are left out, and (video) the rest starts at a keyframe.
func appendAV(all, next []AVSample, video bool) []AVSample {
	waitKey := video
	for _, s := range next {
		if n := len(all); n > 0 && s.DTS <= all[n-1].DTS {
			continue
		}
		if waitKey {
			if !s.Key {
				continue
			}
			waitKey = false
		}
		all = append(all, s)
	}
	return all
}

// thumbnail writes a JPEG of the picture at `at` into thumb.
func (f *Finisher) thumbnail(ctx context.Context, clip, thumb string, at time.Duration) error {
	tmp := thumb + ".tmp.jpg"
	defer os.Remove(tmp)
	cmd := exec.CommandContext(ctx, f.FFmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
		"-ss", fmt.Sprintf("%.3f", at.Seconds()), "-i", clip, "-frames:v", "1", "-vf", "scale='min(640,iw)':-2", "-q:v", "5",
		"-threads", "1", "-f", "image2", tmp)
	var output bytes.Buffer
	cmd.Stdout, cmd.Stderr = &output, &output
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("thumbnail: ffmpeg: %v: %s", err, bytes.TrimSpace(output.Bytes()))
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, thumb)
}
