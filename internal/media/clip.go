package media

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
func (f *Finisher) Finish(ctx context.Context, segments []string, out, thumb string) (ClipInfo, error) {
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
		all = append(all, s.Samples...)
		info.Duration += s.Duration()
	}
	info.Frames = len(all)
	if len(all) == 0 {
		return info, errors.New("no frames in the clip's segments")
	}
	if thumb != "" {
		if err := writeAtomic(thumb, all[len(all)/3].JPEG); err != nil {
			return info, err
		}
	}
	tmp := out + ".tmp"
	defer os.Remove(tmp)
	if f.FFmpeg != "" {
		info.Codec = "h264"
		if err := f.transcode(ctx, segments, tmp); err != nil {
			return info, err
		}
		if err := os.Chmod(tmp, 0o600); err != nil { // ffmpeg makes it 0666 less the umask
			return info, err
		}
	} else {
		info.Codec = "mjpeg"
		if err := writeMJPEG(tmp, all, width, height); err != nil {
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

// transcode makes an H.264 MP4 with faststart from the segments.
func (f *Finisher) transcode(ctx context.Context, segments []string, out string) error {
	var list bytes.Buffer
	for _, s := range segments {
		if _, err := os.Stat(s); err != nil {
			continue
		}
		abs, _ := filepath.Abs(s)
		fmt.Fprintf(&list, "file '%s'\n", strings.ReplaceAll(abs, "'", `'\''`))
	}
	listFile := out + ".list"
	if err := os.WriteFile(listFile, list.Bytes(), 0o600); err != nil {
		return err
	}
	defer os.Remove(listFile)
	threads := fmt.Sprint(max(f.Threads, 1))
	cmd := exec.CommandContext(ctx, f.FFmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
		"-f", "concat", "-safe", "0", "-i", listFile,
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
