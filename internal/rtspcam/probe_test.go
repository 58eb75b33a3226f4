package rtspcam

import (
	"context"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/testpeer"
)

// video makes an MP4 with ffmpeg (libx264 or libx265), as a camera's
// encoder would.
func video(t *testing.T, codec string, w, h, fps int) string {
	t.Helper()
	ffmpeg := testpeer.Need(t, "ffmpeg")
	out := filepath.Join(t.TempDir(), codec+".mp4")
	enc := map[string][]string{"h264": {"-c:v", "libx264"}, "h265": {"-c:v", "libx265", "-x265-params", "log-level=error"}}[codec]
	args := append([]string{"-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=" + strconv.Itoa(w) + "x" + strconv.Itoa(h) + ":rate=" + strconv.Itoa(fps), "-t", "5", "-g", strconv.Itoa(fps), "-pix_fmt", "yuv420p"}, enc...)
	if b, err := exec.Command(ffmpeg, append(args, out)...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, b)
	}
	return out
}

// A camera served by GStreamer's RTSP server answers with its codec,
// resolution and frame rate, for H.264 and H.265.
func TestProbeARealRTSPServer(t *testing.T) {
	for _, c := range []struct {
		codec, want string
		w, h, fps   int
	}{{"h264", "H264", 640, 360, 15}, {"h265", "H265", 320, 240, 10}} {
		t.Run(c.codec, func(t *testing.T) {
			cam := testpeer.StartRTSPCamera(t, video(t, c.codec, c.w, c.h, c.fps), c.codec)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			info, err := Probe(ctx, Source{URL: cam.URL}, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if info.Video != c.want || info.Width != c.w || info.Height != c.h || !info.Recordable {
				t.Errorf("%+v, want %s %dx%d", info, c.want, c.w, c.h)
			}
			if info.FPS != 0 && info.FPS != float64(c.fps) {
				t.Errorf("fps %v, want %d (or unknown)", info.FPS, c.fps)
			}
		})
	}
}

// A camera that is not there, a URL with a login in it, and a wrong path
// each say what is wrong, without the password.
func TestProbeErrors(t *testing.T) {
	ctx := context.Background()
	port := testpeer.FreePort(t)
	if _, err := Probe(ctx, Source{URL: "rtsp://127.0.0.1:" + strconv.Itoa(port) + "/cam"}, time.Second); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("nothing listening: %v", err)
	}
	if _, err := Probe(ctx, Source{URL: "rtsp://admin:hunter22@127.0.0.1:554/cam"}, time.Second); err == nil || strings.Contains(err.Error(), "hunter22") || !strings.Contains(err.Error(), "not in its URL") {
		t.Errorf("a login in the URL: %v", err)
	}
	if got := Redact("rtsp://admin:hunter22@cam.lan/stream1"); got != "rtsp://cam.lan/stream1" {
		t.Errorf("redacted %q", got)
	}
}
