package e2e_test

import (
	"bufio"
	"bytes"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/coord"
	"github.com/vigilhq/vigil/internal/ingest"
	"github.com/vigilhq/vigil/internal/rtspcam"
	"github.com/vigilhq/vigil/internal/testkit"
	"github.com/vigilhq/vigil/internal/testpeer"
)

// cameraFile makes what an IP camera's encoder sends: ffmpeg's libx264 (or
// libx265) with its defaults (B-frames too), a keyframe a second.
func cameraFile(t *testing.T, codec string, w, h, fps, seconds int) string {
	t.Helper()
	enc := map[string][]string{"h264": {"-c:v", "libx264", "-preset", "veryfast"}, "h265": {"-c:v", "libx265", "-preset", "veryfast", "-x265-params", "log-level=error"}}[codec]
	out := filepath.Join(t.TempDir(), codec+".mp4")
	args := append([]string{"-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=" + strconv.Itoa(w) + "x" + strconv.Itoa(h) + ":rate=" + strconv.Itoa(fps),
		"-t", strconv.Itoa(seconds), "-g", strconv.Itoa(fps), "-pix_fmt", "yuv420p"}, enc...)
	if b, err := exec.Command(testpeer.Need(t, "ffmpeg"), append(args, out)...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, b)
	}
	return out
}

// packetHashes lists the MD5 of each video packet of an MP4 as ffmpeg's
// demuxer reads it (stream copy: the bytes as stored), in order, and the
// stream's parameters as ffprobe says them.
func packetHashes(t *testing.T, path string) ([]string, string) {
	t.Helper()
	b, err := exec.Command(testpeer.Need(t, "ffmpeg"), "-v", "error", "-i", path, "-map", "0:v", "-c", "copy", "-f", "framemd5", "-").Output()
	if err != nil {
		t.Fatalf("ffmpeg framemd5 %s: %v", path, err)
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Split(line, ",")
		out = append(out, strings.TrimSpace(f[len(f)-1]))
	}
	p, err := exec.Command(testpeer.Need(t, "ffprobe"), "-v", "error", "-select_streams", "v", "-show_entries",
		"stream=codec_name,profile,level,width,height,pix_fmt,has_b_frames", "-of", "csv=p=0", path).Output()
	if err != nil {
		t.Fatal(err)
	}
	return out, strings.TrimSpace(string(p))
}

// rtspConfig is a Vigil with one RTSP camera, porch, in zone porch of
// site home, where the sensor porch-ir detects.
func rtspConfig(t *testing.T, url string, clip, preRoll int) func(*conf.Config) {
	return func(c *conf.Config) {
		intrusionConfig(t, c)
		c.Recording.ClipSeconds = clip
		c.Recording.PreRollSeconds = preRoll
		c.Cameras["porch"] = conf.Camera{Name: "Porch", Site: "home", Zone: "porch", Priority: 5, RTSP: &conf.RTSPCamera{URL: url, Transport: "tcp"}}
		c.Detection.Zones = map[string]conf.Zone{"porch": {Sensors: []string{"porch-ir"}}}
	}
}

// ringOn is the agent holding the porch camera's ring, "" if none does
// yet.
func ringOn(t *testing.T, ta *testApp) string {
	for _, st := range ta.view(t).Streams {
		if st.Kind == ingest.KindRing && st.Camera == "porch" && st.State == "streaming" {
			return st.Agent
		}
	}
	return ""
}

// An RTSP camera served by GStreamer's RTSP server (Debian's, which nobody
// here wrote) from an ffmpeg libx264 file: a detection in its zone gives a
// clip that ffprobe reads as H.264 of the clip's length plus its pre-roll
// (±10%), whose first picture was sent before the trigger, and whose
// every packet is one of the camera's, byte for byte, with the camera's
// stream parameters: nothing was decoded or encoded.
func TestAnRTSPCameraIsRecordedAsItSends(t *testing.T) {
	for _, codec := range []string{"h264", "h265"} {
		t.Run(codec, func(t *testing.T) {
			file := cameraFile(t, codec, 640, 360, 15, 90)
			cam := testpeer.StartRTSPCamera(t, file, codec)
			// A viewer of our own starts the server's playback (its media
			// is shared): picture i of the file is sent at (its start +
			// i/15 s), and it started no later than our first picture.
			watch := rtspcam.StartFeed(rtspcam.FeedConfig{Source: rtspcam.Source{URL: cam.URL}, Transport: "tcp"})
			defer watch.Close()
			testkit.WaitFor(t, 20*time.Second, "the camera's first picture", func() bool { return watch.Stats().Frames > 0 })
			served := time.Now()
			ta := startApp(t, rtspConfig(t, cam.URL, 4, 2))
			testkit.WaitFor(t, 30*time.Second, "the porch camera's ring on an agent", func() bool { return ringOn(t, ta) != "" })
			time.Sleep(3500 * time.Millisecond) // the ring fills: 2 s of pre-roll from a keyframe
			trigger := time.Now()
			ta.detect(t, "home", "porch-ir")
			var clip coord.Clip
			testkit.WaitFor(t, 40*time.Second, "the clip", func() bool {
				cs := ta.clips(t, "home")
				if len(cs) == 1 && (cs[0].State == coord.ClipReady || cs[0].State == coord.ClipFailed) {
					clip = cs[0]
					return true
				}
				return false
			})
			if clip.State != coord.ClipReady || clip.Codec != codec || clip.Interrupted {
				t.Fatalf("clip %+v", clip)
			}
			preRoll := time.Duration(clip.PreRollMS) * time.Millisecond
			if preRoll < 2*time.Second || preRoll > 3500*time.Millisecond {
				t.Errorf("pre-roll %v, want 2 s from a keyframe (keyframes 1 s apart)", preRoll)
			}
			want := 4 + preRoll.Seconds()
			path := filepath.Join(ta.Storage, filepath.FromSlash(clip.File))
			gotCodec, dur := ffprobe(t, path)
			wantCodec := map[string]string{"h264": "h264", "h265": "hevc"}[codec]
			if gotCodec != wantCodec || dur < want*0.9 || dur > want*1.1 {
				t.Errorf("ffprobe: %s, %.2f s; want %s, %.2f s ±10%%", gotCodec, dur, wantCodec, want)
			}
			// The camera's bytes, and its first picture's time.
			src, srcParams := packetHashes(t, file)
			got, gotParams := packetHashes(t, path)
			if srcParams != gotParams {
				t.Errorf("stream parameters %q; the camera's %q", gotParams, srcParams)
			}
			index := map[string]int{}
			for i, h := range src {
				if _, ok := index[h]; !ok {
					index[h] = i
				}
			}
			for n, h := range got {
				if _, ok := index[h]; !ok {
					t.Fatalf("packet %d of the clip is not one of the camera's: re-encoded or damaged", n)
				}
			}
			first := index[got[0]]
			sentBy := served.Add(time.Duration(first) * time.Second / 15)
			if !sentBy.Before(trigger.Add(-time.Second)) {
				t.Errorf("the clip's first picture (the file's #%d) was sent by %v, not a second before the trigger", first, sentBy.Sub(trigger))
			}
			// Bitrate: the clip's packets are the camera's, so its rate is
			// the file's over the same pictures.
			t.Logf("clip %s: %s, %d frames, %d bytes, %.2f s (pre-roll %v), first picture the file's #%d, sent %v before the trigger at the latest",
				clip.ID, gotCodec, clip.Frames, clip.Bytes, dur, preRoll, first, trigger.Sub(sentBy).Round(time.Millisecond))
		})
	}
}
