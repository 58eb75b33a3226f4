package media

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// Parameter sets of ffmpeg's libx264 (baseline) at two sizes.
var (
	sps64  = []byte{0x67, 0x42, 0xc0, 0x0a, 0xd9, 0x04, 0x26, 0xc0, 0x44, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0x50, 0x3c, 0x48, 0x99, 0x20}
	sps320 = []byte{0x67, 0x42, 0xc0, 0x0b, 0xd9, 0x01, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x01, 0x40, 0xf1, 0x42, 0xa4, 0x80}
	pps    = []byte{0x68, 0xcb, 0x83, 0xcb, 0x20}
)

// segment writes pictures at 15 fps from `from` to `to` (seconds on a
// common timeline), a keyframe a second, in the format of sps.
func segment(t *testing.T, dir, name string, sps []byte, from, to float64) string {
	t.Helper()
	f, err := FormatOf(CodecH264, nil, sps, pps)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	w, err := CreateAVSegment(path, f)
	if err != nil {
		t.Fatal(err)
	}
	base := TicksAt(time.Unix(1_800_000_000, 0), VideoClock)
	for i := int(from * 15); i < int(to*15); i++ {
		key := i%15 == 0
		nalu := []byte{0x41, byte(i), byte(i >> 8)}
		if key {
			nalu[0] = 0x65
		}
		dts := base + int64(i)*VideoClock/15
		if err := w.Write(AU{Track: TrackVideo, DTS: dts, PTS: dts, Key: key, NALUs: [][]byte{nalu}, Size: 3}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// The finisher joins an RTSP clip's segments by time: overlaps once (the
// later segment from its first keyframe after the earlier one's end), a
// gap as the last picture held, and where the camera changed its format,
// the format that holds the most video.
func TestFinishAVJoinsSegmentsByTime(t *testing.T) {
	fin := &Finisher{}
	for _, tc := range []struct {
		name           string
		segs           [][3]any // sps, from, to
		frames         int
		duration, gap  time.Duration
		width, dropped int
	}{
		{"overlap", [][3]any{{sps64, 0.0, 2.0}, {sps64, 1.5, 4.0}}, 30 + 30, 4 * time.Second, 0, 64, 0},
		{"gap", [][3]any{{sps64, 0.0, 1.0}, {sps64, 3.0, 4.0}}, 30, 4 * time.Second, 2*time.Second + time.Second/15, 64, 0},
		{"new format", [][3]any{{sps64, 0.0, 1.0}, {sps320, 1.0, 4.0}}, 45, 3 * time.Second, 0, 320, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var paths []string
			for i, s := range tc.segs {
				paths = append(paths, segment(t, dir, fmt.Sprintf("seg-%d.mp4", i), s[0].([]byte), s[1].(float64), s[2].(float64)))
			}
			info, err := fin.Finish(context.Background(), paths, filepath.Join(dir, "clip.mp4"), "")
			if err != nil {
				t.Fatal(err)
			}
			if info.Frames != tc.frames || info.Duration.Round(time.Millisecond) != tc.duration || info.Width != tc.width || info.Dropped != tc.dropped || info.Codec != CodecH264 {
				t.Errorf("%+v, want %d frames, %v, %d wide, %d dropped", info, tc.frames, tc.duration, tc.width, tc.dropped)
			}
			if info.Gap.Round(time.Millisecond) != tc.gap.Round(time.Millisecond) {
				t.Errorf("gap %v, want %v", info.Gap, tc.gap)
			}
		})
	}
}
