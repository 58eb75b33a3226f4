package bench

import (
	"testing"

	"github.com/vigilhq/vigil/internal/media"
)

func TestCheckSegment(t *testing.T) {
	const d = 3600 // 25 fps
	video := func(dts ...int64) []media.AVSample {
		var v []media.AVSample
		for i, t := range dts {
			v = append(v, media.AVSample{DTS: t, Key: i == 0})
		}
		return v
	}
	for _, tc := range []struct {
		name          string
		video         []media.AVSample
		end           int64
		frames, gaps  int
		missing       int
		stalls        int
		stalled       int64
		keyFirst      bool
		maxGap, first int64
	}{
		{"whole", video(0, d, 2*d, 3*d), 4 * d, 4, 0, 0, 0, 0, true, d, 0},
		{"end not checked", video(0, d, 2*d), 0, 3, 0, 0, 0, 0, true, d, 0},
		{"the end a moment after the last frame", video(0, d, 2*d), 3*d + 5, 3, 0, 0, 0, 0, true, d, 0},
		{"one frame lost", video(0, d, 3*d, 4*d), 5 * d, 4, 1, 1, 0, 0, true, 2 * d, 0},
		{"a second lost", video(0, d, 27*d), 28 * d, 3, 1, 25, 0, 0, true, 26 * d, 0},
		{"a lost frame, give or take a tick", video(0, d, 3*d+1, 4*d), 5 * d, 4, 1, 1, 0, 0, true, 2*d + 1, 0},
		{"jitter is no gap", video(0, d+100, 2*d, 3*d-200), 4 * d, 4, 0, 0, 0, 0, true, d + 100, 0},
		{"a server 300 ms late moves on", video(0, d, 2*d+27000, 3*d+27000), 4*d + 27000, 4, 0, 0, 1, 27000, true, d + 27000, 0},
		{"ended early", video(0, d, 2*d), 10 * d, 3, 1, 7, 0, 0, true, d, 0},
		{"empty", nil, 10 * d, 0, 0, 0, 0, 0, false, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := checkSegment(tc.video, d, tc.end)
			if c.Frames != tc.frames || c.Gaps != tc.gaps || c.Missing != tc.missing || c.Stalls != tc.stalls || c.Stalled != tc.stalled ||
				c.KeyFirst != tc.keyFirst || c.MaxGap != tc.maxGap || c.First != tc.first {
				t.Errorf("got %+v, want frames %d gaps %d missing %d stalls %d (%d) key first %v max gap %d first %d",
					c, tc.frames, tc.gaps, tc.missing, tc.stalls, tc.stalled, tc.keyFirst, tc.maxGap, tc.first)
			}
		})
	}
}
