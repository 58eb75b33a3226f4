package agent

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/ingest"
	"github.com/vigilhq/vigil/internal/rtspserve"
	"github.com/vigilhq/vigil/internal/testkit"
	"github.com/vigilhq/vigil/internal/testpeer"
)

// cameraVideo makes an H.264 file of w x h at 15 fps, a keyframe a second.
func cameraVideo(t *testing.T, w, h int) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "cam.mp4")
	args := []string{"-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=" + strconv.Itoa(w) + "x" + strconv.Itoa(h) + ":rate=15",
		"-t", "10", "-g", "15", "-bf", "0", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", out}
	if b, err := exec.Command(testpeer.Need(t, "ffmpeg"), args...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, b)
	}
	return out
}

// When an RTSP camera changes its format, its segment ends; the
// coordinator answers that report with the stream's next segment (the same
// stream id) at once. The agent must record it, not take it for a
// repeated command of the segment that just ended.
func TestTheNextSegmentOfAnRTSPStreamIsRecorded(t *testing.T) {
	h := start(t, 3)
	srv, err := rtspserve.Start(rtspserve.Config{File: cameraVideo(t, 320, 240)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	small := cameraVideo(t, 160, 120)
	cmd := func(seg string) []byte {
		b, _ := json.Marshal(ingest.AgentCommand{Action: ingest.ActionExpect, StreamID: "s1", Kind: ingest.KindRTSP, Dir: "lab/s1", Segment: seg, Duration: 20,
			RTSP: &ingest.RTSPSource{URL: srv.URL(), Transport: "tcp"}})
		return b
	}
	// The coordinator's side: the next segment as soon as one ends for
	// the format.
	h.b.Subscribe(ingest.AgentTopic("a1", ingest.AgentSegment), func(_ string, payload []byte, _ string) {
		var r ingest.SegmentReport
		if json.Unmarshal(payload, &r) == nil && r.Segment == "seg-1.mp4" && r.State == ingest.SegmentDone && r.Reason == ingest.EndFormat {
			h.b.Publish(ingest.AgentTopic("a1", ingest.AgentCmd), cmd("seg-2.mp4"), false, 1)
		}
	})
	if err := h.b.Publish(ingest.AgentTopic("a1", ingest.AgentCmd), cmd("seg-1.mp4"), false, 1); err != nil {
		t.Fatal(err)
	}
	recording := func(seg string) bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, r := range h.segments {
			if r.Segment == seg && r.State == ingest.SegmentRecording {
				return true
			}
		}
		return false
	}
	testkit.WaitFor(t, 15*time.Second, "seg-1 recording", func() bool { return recording("seg-1.mp4") })
	if err := srv.SwitchFile(small); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 15*time.Second, "seg-2 recording, after seg-1 ended for the format", func() bool { return recording("seg-2.mp4") })
}
