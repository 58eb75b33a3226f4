package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"os"
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
	"github.com/vigilhq/vigil/internal/rtspserve"
	"github.com/vigilhq/vigil/internal/sub"
	"github.com/vigilhq/vigil/internal/testkit"
	"github.com/vigilhq/vigil/internal/testpeer"
	"github.com/vigilhq/vigil/internal/users"
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

// waitClip waits for the only clip of site home to be finished.
func waitClip(t *testing.T, ta *testApp, within time.Duration) coord.Clip {
	t.Helper()
	var clip coord.Clip
	testkit.WaitFor(t, within, "the clip", func() bool {
		cs := ta.clips(t, "home")
		if len(cs) == 1 && (cs[0].State == coord.ClipReady || cs[0].State == coord.ClipFailed) {
			clip = cs[0]
			return true
		}
		return false
	})
	return clip
}

// agentsLost counts the agents the coordinator lost.
func agentsLost(t *testing.T, ta *testApp) int {
	n := 0
	for _, a := range ta.view(t).Agents {
		if a.Status == coord.AgentLost {
			n++
		}
	}
	return n
}

// The camera disappears in the middle of a recording (its server dies)
// and comes back 1.5 s later: the agent reaches it again, and the clip is
// kept, whole but for the gap, and marked interrupted.
func TestAnRTSPCameraLostMidRecording(t *testing.T) {
	cam := testpeer.StartRTSPCamera(t, cameraFile(t, "h264", 320, 240, 15, 90), "h264")
	ta := startApp(t, rtspConfig(t, cam.URL, 8, 0))
	testkit.WaitFor(t, 30*time.Second, "an agent", func() bool { return liveAgents(ta.view(t)) == 1 && ta.view(t).Agents[0].Status == "ready" })
	ta.detect(t, "home", "porch-ir")
	testkit.WaitFor(t, 20*time.Second, "the recording", func() bool {
		cs := ta.clips(t, "home")
		return len(cs) == 1 && cs[0].State == coord.ClipRecording && len(cs[0].Segments) == 1
	})
	time.Sleep(2500 * time.Millisecond)
	cam.Stop()
	lost := time.Now()
	time.Sleep(1500 * time.Millisecond)
	cam.Restart()
	t.Logf("camera gone for %v", time.Since(lost).Round(time.Millisecond))
	clip := waitClip(t, ta, 40*time.Second)
	if clip.State != coord.ClipReady || !clip.Interrupted || clip.Codec != "h264" {
		t.Fatalf("clip %+v, want a ready h264 clip marked interrupted", clip)
	}
	codec, dur := ffprobe(t, filepath.Join(ta.Storage, filepath.FromSlash(clip.File)))
	// The gap is held on the last picture before it: the clip still
	// spans the 8 s, less what came before the first keyframe.
	if codec != "h264" || dur < 6.5 || dur > 8.8 {
		t.Errorf("ffprobe: %s, %.2f s; want h264, about 8 s", codec, dur)
	}
	if n := agentsLost(t, ta); n != 0 {
		t.Errorf("%d agent(s) lost", n)
	}
	t.Logf("clip: %.2f s, %d frames, interrupted", dur, clip.Frames)
}

// A camera that sends garbage RTP, then changes its resolution mid-stream
// (a new SPS at a keyframe), then drops the session: the agent stays up,
// the clip is kept and plays (ffprobe reads it whole), and a second
// recording after all that is whole too.
func TestAnRTSPCameraThatMisbehaves(t *testing.T) {
	first := cameraFile(t, "h264", 640, 360, 15, 30)
	second := cameraFile(t, "h264", 320, 240, 15, 30)
	srv, err := rtspserve.Start(rtspserve.Config{File: first})
	must(t, err)
	t.Cleanup(srv.Close)
	ta := startApp(t, rtspConfig(t, srv.URL(), 6, 1))
	detectAfterPreRoll(t, ta, 2*time.Second)
	testkit.WaitFor(t, 20*time.Second, "the recording", func() bool {
		cs := ta.clips(t, "home")
		return len(cs) == 1 && cs[0].State == coord.ClipRecording
	})
	time.Sleep(time.Second)
	srv.InjectGarbage(500)
	time.Sleep(time.Second)
	must(t, srv.SwitchFile(second))
	time.Sleep(1500 * time.Millisecond)
	srv.DropSessions()
	clip := waitClip(t, ta, 40*time.Second)
	if clip.State != coord.ClipReady || clip.Codec != "h264" || !clip.Interrupted {
		t.Fatalf("clip %+v, want a ready h264 clip marked interrupted", clip)
	}
	path := filepath.Join(ta.Storage, filepath.FromSlash(clip.File))
	out, err := exec.Command(testpeer.Need(t, "ffmpeg"), "-v", "error", "-i", path, "-f", "null", "-").CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("the clip does not decode cleanly: %v: %s", err, out)
	}
	if n := agentsLost(t, ta); n != 0 {
		t.Errorf("%d agent(s) lost", n)
	}
	// And the camera, at its new resolution, records again: the sensor
	// sees nobody, then someone.
	must(t, ta.Broker.Publish("vigil/home/porch-ir/motion", []byte(`{"distance_m":5}`), false, 1))
	time.Sleep(2 * time.Second)
	ta.detect(t, "home", "porch-ir")
	testkit.WaitFor(t, 40*time.Second, "a second clip", func() bool {
		cs := ta.clips(t, "home")
		return len(cs) == 2 && cs[0].State == coord.ClipReady
	})
	again := ta.clips(t, "home")[0]
	_, params := packetHashes(t, filepath.Join(ta.Storage, filepath.FromSlash(again.File)))
	if !strings.Contains(params, "320,240") {
		t.Errorf("the second clip is %q, want 320x240", params)
	}
	t.Logf("clips: %+v / %+v", clip, again)
}

// An RTSP camera with a login: its agent records it; the test-connection
// action reports what it serves; and the password is nowhere else: not in
// what a viewer's MQTT client receives (agent commands included), not in
// the API, the logs or any file under data.dir.
func TestAnRTSPCamerasPasswordStaysSecret(t *testing.T) {
	const password = "cam-secret-4f9d1"
	srv, err := rtspserve.Start(rtspserve.Config{File: cameraFile(t, "h264", 320, 240, 15, 30), Username: "admin", Password: password})
	must(t, err)
	t.Cleanup(srv.Close)
	ta := startApp(t, func(c *conf.Config) {
		rtspConfig(t, srv.URL(), 3, 1)(c)
		cam := c.Cameras["porch"]
		r := *cam.RTSP
		r.Username, r.Password = "admin", password // as read from password_env
		cam.RTSP = &r
		c.Cameras["porch"] = cam
	})
	addUser(t, ta, "watcher", users.RoleViewer, "watcher-password-1", nil, nil)
	var seen testkit.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := sub.Subscribe(ctx, sub.Options{Brokers: []string{ta.mqttAddr()}, Filters: []string{"vigil/#"}, QoS: 1, Username: "watcher", Password: "watcher-password-1"},
		func(m sub.Message) { seen.Write(append([]byte(m.Topic+" "), m.Payload...)) })
	must(t, err)
	t.Cleanup(func() { s.Close() })

	detectAfterPreRoll(t, ta, 1500*time.Millisecond)
	clip := waitClip(t, ta, 40*time.Second)
	if clip.State != coord.ClipReady || clip.Codec != "h264" {
		t.Fatalf("clip %+v", clip)
	}
	var test struct {
		Reachable bool `json:"reachable"`
		Main      struct {
			Video         string
			Width, Height int
		} `json:"main"`
		Error string `json:"error"`
	}
	if code := ta.api(t, "POST", "/api/v1/cameras/home/porch/test", "admin", adminPassword, &test); code != 200 || !test.Reachable || test.Main.Video != "H264" || test.Main.Width != 320 {
		t.Errorf("test connection: %d %+v", code, test)
	}
	if code := ta.api(t, "POST", "/api/v1/cameras/home/porch/test", "watcher", "watcher-password-1", nil); code != 403 {
		t.Errorf("a viewer tested a camera: %d", code)
	}
	if !strings.Contains(seen.String(), "vigil/agents/") || !strings.Contains(seen.String(), "password_sealed") {
		t.Fatalf("the viewer saw no agent command: the check below would prove nothing")
	}
	var api bytes.Buffer
	for _, p := range []string{"/api/v1/cameras", "/api/v1/agents", "/api/v1/clips", "/api/v1/agents/history", "/api/v1/devices"} {
		var v any
		ta.api(t, "GET", p, "admin", adminPassword, &v)
		b, _ := json.Marshal(v)
		api.Write(b)
	}
	for what, text := range map[string]string{"MQTT as a viewer": seen.String(), "the API": api.String(), "vigil up's log": ta.logs.String()} {
		if strings.Contains(text, password) {
			t.Errorf("the camera's password is in %s", what)
		}
	}
	ta.Close()
	filepath.WalkDir(ta.cfg.Data.Dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(password)) {
				t.Errorf("the camera's password is in %s", p)
			}
		}
		return nil
	})
}

// A camera with a microphone: the clip holds its AAC beside its H.264,
// both the camera's own packets, and the sound lasts as long as the
// picture.
func TestAnRTSPCameraWithAudio(t *testing.T) {
	file := filepath.Join(t.TempDir(), "av.mp4")
	args := []string{"-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=15", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "60", "-g", "15", "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac", "-b:a", "64k", file}
	if b, err := exec.Command(testpeer.Need(t, "ffmpeg"), args...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, b)
	}
	cam := testpeer.StartRTSPCameraWithAudio(t, file, "h264")
	ta := startApp(t, rtspConfig(t, cam.URL, 4, 1))
	detectAfterPreRoll(t, ta, 2500*time.Millisecond)
	clip := waitClip(t, ta, 40*time.Second)
	if clip.State != coord.ClipReady || clip.Codec != "h264" {
		t.Fatalf("clip %+v", clip)
	}
	path := filepath.Join(ta.Storage, filepath.FromSlash(clip.File))
	out, err := exec.Command(testpeer.Need(t, "ffprobe"), "-v", "error", "-show_entries", "stream=codec_name,duration,sample_rate", "-of", "csv=p=0", path).Output()
	must(t, err)
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "h264") || !strings.HasPrefix(lines[1], "aac,48000") {
		t.Fatalf("streams %q, want h264 and aac at 48 kHz", lines)
	}
	dur := func(l string) float64 {
		f := strings.Split(l, ",")
		d, _ := strconv.ParseFloat(f[len(f)-1], 64)
		return d
	}
	if v, a := dur(lines[0]), dur(lines[1]); a < v-0.5 || a > v+0.5 {
		t.Errorf("video %.2f s, audio %.2f s: out of step", v, a)
	}
	audio := func(p string) []string {
		b, err := exec.Command(testpeer.Need(t, "ffmpeg"), "-v", "error", "-i", p, "-map", "0:a", "-c", "copy", "-f", "framemd5", "-").Output()
		must(t, err)
		var hs []string
		for _, l := range strings.Split(string(b), "\n") {
			if l != "" && l[0] != '#' {
				f := strings.Split(l, ",")
				hs = append(hs, strings.TrimSpace(f[len(f)-1]))
			}
		}
		return hs
	}
	src := map[string]bool{}
	for _, h := range audio(file) {
		src[h] = true
	}
	got := audio(path)
	for i, h := range got {
		if !src[h] {
			t.Fatalf("audio packet %d of the clip is not one of the camera's", i)
		}
	}
	if len(got) < 150 { // 48 kHz, 1024 samples a frame: 47 a second, 4 s and more
		t.Errorf("%d audio frames", len(got))
	}
	t.Logf("clip: %q, %d audio frames, all the camera's", lines, len(got))
}

// detectAfterPreRoll waits until the camera has a ring, lets it fill for
// fill, then has the porch sensor see someone.
func detectAfterPreRoll(t *testing.T, ta *testApp, fill time.Duration) {
	t.Helper()
	testkit.WaitFor(t, 30*time.Second, "the ring", func() bool { return ringOn(t, ta) != "" })
	time.Sleep(fill)
	ta.detect(t, "home", "porch-ir")
}
