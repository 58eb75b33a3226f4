package media

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/mp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/pmp4"
)

// ClipInfo describes a finished clip.
type ClipInfo struct {
	Duration  time.Duration
	Frames    int
	Bytes     int64 // of the clip file
	Codec     string
	Truncated bool // a segment was cut short (its agent died)
	// RTSP clips: segments left out because the camera's format changed
	// (the clip keeps the first format), and the longest gap in the video.
	Dropped int
	Gap     time.Duration
	Width   int
	Height  int
}

// Finisher turns a clip's segments into one MP4 that plays everywhere:
// H.264 with the index first (faststart) when ffmpeg is there, else the
// original JPEG frames in a progressive MP4 (VLC and ffprobe read it;
// browsers do not decode M-JPEG).
type Finisher struct {
	// FFmpeg is the ffmpeg binary; "" means none.
	FFmpeg string
	// Threads limits ffmpeg's encoder threads, so that transcoding never
	// takes the machine from ingest.
	Threads int
}

// NewFinisher finds ffmpeg on PATH.
func NewFinisher() *Finisher {
	p, _ := exec.LookPath("ffmpeg")
	return &Finisher{FFmpeg: p, Threads: 1}
}

// Finish writes out (clip.mp4) and thumb (a JPEG from a third of the way
// in) from the segments, in order. It replaces out atomically.
//
// A camera keeps one RTP timeline for a stream, whichever agents receive
// it, and a stream that moves on resends what the agent it leaves may not
// have stored: where two segments hold the same moments, the later one's
// frames up to the end of the earlier one are left out. Each frame lasts
// until the next one's timestamp, so that a moment no agent received is a
// still picture of its length, not a jump.
func (f *Finisher) Finish(ctx context.Context, segments []string, out, thumb string) (ClipInfo, error) {
	for _, p := range segments {
		codec, err := segmentCodec(p)
		if errors.Is(err, os.ErrNotExist) || (err == nil && codec == "") {
			continue
		}
		if err != nil {
			return ClipInfo{}, err
		}
		if codec == CodecH264 || codec == CodecH265 {
			return f.finishAV(ctx, segments, out, thumb)
		}
		break
	}
	var info ClipInfo
	var all []Sample
	width, height := 0, 0
	for _, p := range segments {
		s, err := ReadSegment(p)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return info, err
		}
		if len(s.Samples) == 0 {
			continue
		}
		if width == 0 {
			width, height = s.Width, s.Height
		}
		info.Truncated = info.Truncated || s.Truncated
		all = appendAfter(all, s.Samples)
	}
	info.Frames = len(all)
	if len(all) == 0 {
		return info, errors.New("no frames in the clip's segments")
	}
	var total uint64
	for _, s := range all {
		total += uint64(s.Duration)
	}
	info.Duration = time.Duration(total) * time.Second / ClockRate
	if thumb != "" {
		if err := writeAtomic(thumb, all[len(all)/3].JPEG); err != nil {
			return info, err
		}
	}
	tmp := out + ".tmp"
	defer os.Remove(tmp)
	if err := writeMJPEG(tmp, all, width, height); err != nil {
		return info, err
	}
	info.Codec = "mjpeg"
	if f.FFmpeg != "" {
		info.Codec = "h264"
		h264 := out + ".h264.tmp"
		defer os.Remove(h264)
		if err := f.transcode(ctx, tmp, h264); err != nil {
			return info, err
		}
		if err := os.Chmod(h264, 0o600); err != nil { // ffmpeg makes it 0666 less the umask
			return info, err
		}
		tmp = h264
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

// maxFrameGap is the longest a frame is shown for: timestamps further
// apart than this are not one timeline (a camera that restarted).
const maxFrameGap = 10 * ClockRate

// appendAfter appends the samples of a segment to those of the segments
// before it: those at or before the last one already there are left out,
// and each frame's duration becomes the time to the next frame.
func appendAfter(all, next []Sample) []Sample {
	for _, s := range next {
		if n := len(all); n > 0 {
			d := s.RTP - all[n-1].RTP // wraps correctly
			if int32(d) <= 0 && -int32(d) < maxFrameGap {
				continue // held already
			}
			if d > 0 && d <= maxFrameGap {
				all[n-1].Duration = d
			}
		}
		all = append(all, s)
	}
	return all
}

// transcode makes an H.264 MP4 with faststart from an M-JPEG one.
func (f *Finisher) transcode(ctx context.Context, in, out string) error {
	threads := fmt.Sprint(max(f.Threads, 1))
	cmd := exec.CommandContext(ctx, f.FFmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
		"-i", in,
		"-c:v", "libx264", "-preset", "veryfast", "-crf", "26", "-pix_fmt", "yuv420p",
		"-threads", threads, "-movflags", "+faststart", "-an", "-f", "mp4", out)
	var output bytes.Buffer
	cmd.Stdout, cmd.Stderr = &output, &output
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("ffmpeg: %w", err)
	}
	// Transcoding yields to ingest: at a lower priority (nice 10), ffmpeg
	// only uses what the agents leave of the CPU.
	syscall.Setpriority(syscall.PRIO_PROCESS, cmd.Process.Pid, 10)
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("ffmpeg: %v: %s", err, bytes.TrimSpace(output.Bytes()))
	}
	return nil
}

// writeMJPEG writes the frames as a progressive MP4 (index first).
func writeMJPEG(out string, samples []Sample, width, height int) error {
	track := &pmp4.Track{ID: 1, TimeScale: ClockRate, Codec: &mp4.CodecMJPEG{Width: width, Height: height}}
	for i := range samples {
		s := samples[i]
		track.Samples = append(track.Samples, &pmp4.Sample{
			Duration:    s.Duration,
			PayloadSize: uint32(len(s.JPEG)),
			GetPayload:  func() ([]byte, error) { return s.JPEG, nil },
		})
	}
	f, err := os.OpenFile(out, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	p := pmp4.Presentation{Tracks: []*pmp4.Track{track}}
	if err := p.Marshal(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func writeAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
