package rtspcam

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/media"
	"github.com/vigilhq/vigil/internal/rtspserve"
	"github.com/vigilhq/vigil/internal/testkit"
	"github.com/vigilhq/vigil/internal/testpeer"
)

// longVideo makes an MP4 of seconds with ffmpeg's libx264 defaults
// (B-frames included), a keyframe a second.
func longVideo(t *testing.T, w, h, fps, seconds int) string {
	t.Helper()
	ffmpeg := testpeer.Need(t, "ffmpeg")
	out := filepath.Join(t.TempDir(), "cam.mp4")
	args := []string{"-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=" + strconv.Itoa(w) + "x" + strconv.Itoa(h) + ":rate=" + strconv.Itoa(fps),
		"-t", strconv.Itoa(seconds), "-g", strconv.Itoa(fps), "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", out}
	if b, err := exec.Command(ffmpeg, args...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, b)
	}
	return out
}

// packets hashes each video packet of an MP4 as ffmpeg's demuxer reads it
// (framemd5 of the stream copied), and returns the stream's profile and
// level as ffprobe reports them.
func packets(t *testing.T, path string) (map[string]bool, string) {
	t.Helper()
	b, err := exec.Command(testpeer.Need(t, "ffmpeg"), "-v", "error", "-i", path, "-map", "0:v", "-c", "copy", "-f", "framemd5", "-").Output()
	if err != nil {
		t.Fatalf("ffmpeg framemd5 %s: %v", path, err)
	}
	out := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Split(line, ",")
		out[strings.TrimSpace(f[len(f)-1])] = true
	}
	p, err := exec.Command(testpeer.Need(t, "ffprobe"), "-v", "error", "-select_streams", "v", "-show_entries", "stream=codec_name,profile,level,width,height,pix_fmt,has_b_frames", "-of", "csv=p=0", path).Output()
	if err != nil {
		t.Fatal(err)
	}
	return out, strings.TrimSpace(string(p))
}

type probeOut struct {
	Streams []struct {
		CodecName string `json:"codec_name"`
		Width     int    `json:"width"`
		Height    int    `json:"height"`
	} `json:"streams"`
	Format struct {
		Duration string `json:"duration"`
		BitRate  string `json:"bit_rate"`
	} `json:"format"`
}

func ffprobe(t *testing.T, path string) probeOut {
	t.Helper()
	b, err := exec.Command(testpeer.Need(t, "ffprobe"), "-v", "error", "-show_streams", "-show_format", "-of", "json", path).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", path, err)
	}
	var p probeOut
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// A feed of a camera served by GStreamer keeps its last seconds; a
// recording that subscribes gets them first (pre-roll, from a keyframe),
// and the clip the finisher makes holds the camera's own samples, byte for
// byte, with its parameter sets.
func TestFeedRecordsTheCamerasBytesWithPreRoll(t *testing.T) {
	file := longVideo(t, 640, 360, 15, 30)
	cam := testpeer.StartRTSPCamera(t, file, "h264")
	f := StartFeed(FeedConfig{Source: Source{URL: cam.URL}, Window: 2 * time.Second, Transport: "tcp"})
	defer f.Close()
	testkit.WaitFor(t, 15*time.Second, "4 s of video", func() bool { return f.Stats().Frames >= 60 })
	held, bytes := f.Held()
	if held < 2*time.Second || held > 4*time.Second || bytes <= 0 {
		t.Errorf("the feed holds %v (%d bytes), want 2-3 s: the window plus at most a group of pictures", held, bytes)
	}

	sub := f.Subscribe(2*time.Second, 1024)
	if sub.PreRoll < 2*time.Second {
		t.Errorf("pre-roll %v, want at least 2 s", sub.PreRoll)
	}
	dir := t.TempDir()
	var w *media.AVSegmentWriter
	deadline := time.After(3 * time.Second)
loop:
	for {
		select {
		case it := <-sub.C():
			if it.Format != nil {
				if w != nil {
					t.Fatal("format changed")
				}
				var err error
				if w, err = media.CreateAVSegment(filepath.Join(dir, "seg-01.mp4"), *it.Format); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if err := w.Write(it.AU); err != nil {
				t.Fatal(err)
			}
		case <-deadline:
			break loop
		}
	}
	sub.Close()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "clip.mp4")
	fin := media.NewFinisher()
	info, err := fin.Finish(context.Background(), []string{filepath.Join(dir, "seg-01.mp4")}, out, filepath.Join(dir, "thumb.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	want := sub.PreRoll + 3*time.Second
	if info.Codec != media.CodecH264 || info.Duration < want*9/10 || info.Duration > want*11/10 {
		t.Errorf("clip %+v, want h264 of about %v", info, want)
	}
	p := ffprobe(t, out)
	d, _ := strconv.ParseFloat(p.Format.Duration, 64)
	if len(p.Streams) != 1 || p.Streams[0].CodecName != "h264" || p.Streams[0].Width != 640 || p.Streams[0].Height != 360 || d < want.Seconds()*0.9 || d > want.Seconds()*1.1 {
		t.Errorf("ffprobe: %+v, want one h264 640x360 stream of %.1f s", p, want.Seconds())
	}
	if _, err := os.Stat(filepath.Join(dir, "thumb.jpg")); err != nil {
		t.Errorf("no thumbnail: %v", err)
	}

	// The camera's bytes: the same stream parameters, every packet one of
	// the source file's, as ffmpeg reads both.
	srcPackets, srcParams := packets(t, file)
	clipPackets, clipParams := packets(t, out)
	if srcParams != clipParams {
		t.Errorf("stream parameters %q, the camera's %q", clipParams, srcParams)
	}
	for h := range clipPackets {
		if !srcPackets[h] {
			t.Fatalf("a packet of the clip is not one of the camera's: re-encoded or damaged")
		}
	}
	if len(clipPackets) < int(want.Seconds()*15*0.9) {
		t.Errorf("%d distinct packets in %v at 15 fps", len(clipPackets), want)
	}
}

// A camera that disappears is reached again when it comes back; the feed
// counts the reconnection and the gap, and goes on.
func TestFeedReconnects(t *testing.T) {
	cam := testpeer.StartRTSPCamera(t, longVideo(t, 320, 240, 10, 30), "h264")
	f := StartFeed(FeedConfig{Source: Source{URL: cam.URL}, Timeout: 2 * time.Second, MinBackoff: 200 * time.Millisecond, MaxBackoff: time.Second})
	defer f.Close()
	testkit.WaitFor(t, 15*time.Second, "frames", func() bool { return f.Stats().Frames >= 10 })
	cam.Stop()
	testkit.WaitFor(t, 10*time.Second, "the loss noticed", func() bool { return !f.Stats().Connected })
	time.Sleep(time.Second)
	cam.Restart()
	before := f.Stats().Frames
	testkit.WaitFor(t, 20*time.Second, "frames again", func() bool { return f.Stats().Frames >= before+10 })
	st := f.Stats()
	if st.Reconnects != 1 || st.Gap < time.Second || !st.Connected {
		t.Errorf("stats %+v, want 1 reconnection with a gap of more than 1 s", st)
	}
}

// A camera over UDP (RTP on its own ports) feeds as one over TCP does, and
// a login the camera asks for is given.
func TestFeedOverUDPWithALogin(t *testing.T) {
	srv, err := rtspserve.Start(rtspserve.Config{File: longVideo(t, 320, 240, 15, 10), UDP: true, Username: "admin", Password: "pw-9"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	f := StartFeed(FeedConfig{Source: Source{URL: srv.URL(), Username: "admin", Password: "pw-9"}, Transport: "udp"})
	defer f.Close()
	testkit.WaitFor(t, 15*time.Second, "15 pictures over UDP", func() bool { return f.Stats().Frames >= 15 })
	if st := f.Stats(); st.Lost != 0 || st.Bad != 0 || f.Format() == nil || f.Format().Width != 320 {
		t.Errorf("stats %+v, format %v", st, f.Format())
	}
	bad := StartFeed(FeedConfig{Source: Source{URL: srv.URL(), Username: "admin", Password: "wrong"}, Transport: "udp"})
	defer bad.Close()
	testkit.WaitFor(t, 10*time.Second, "the refusal", func() bool { return bad.Stats().LastError != "" })
	if st := bad.Stats(); st.Frames != 0 || strings.Contains(st.LastError, "wrong") {
		t.Errorf("a wrong password: %+v", st)
	}
}

// Packets lost on the way are counted as they are lost, while the session
// still runs (a recording's report is made before its session ends).
func TestFeedCountsLostPacketsAsTheyAreLost(t *testing.T) {
	srv, err := rtspserve.Start(rtspserve.Config{File: longVideo(t, 320, 240, 15, 10), UDP: true})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	f := StartFeed(FeedConfig{Source: Source{URL: srv.URL()}, Transport: "udp"})
	defer f.Close()
	testkit.WaitFor(t, 15*time.Second, "pictures", func() bool { return f.Stats().Frames >= 5 })
	srv.Drop(3)
	testkit.WaitFor(t, 10*time.Second, "3 packets counted lost", func() bool { return f.Stats().Lost >= 3 })
	if st := f.Stats(); !st.Connected || st.Sessions != 1 {
		t.Errorf("stats %+v: the session should still run", st)
	}
}
