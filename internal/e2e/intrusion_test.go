package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/jpeg"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/agentrt"
	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/coord"
	"github.com/vigilhq/vigil/internal/detect"
	"github.com/vigilhq/vigil/internal/ingest"
	"github.com/vigilhq/vigil/internal/sim"
	"github.com/vigilhq/vigil/internal/store"
	"github.com/vigilhq/vigil/internal/sub"
	"github.com/vigilhq/vigil/internal/telemetry"
	"github.com/vigilhq/vigil/internal/testkit"
	"github.com/vigilhq/vigil/internal/testpeer"
	"github.com/vigilhq/vigil/internal/users"
)

var (
	buildOnce sync.Once
	vigilBin  string
	buildErr  error
)

// vigilBinary builds cmd/vigil once (static, as the Docker image needs).
func vigilBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "vigil-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		vigilBin = filepath.Join(dir, "vigil")
		cmd := exec.Command("go", "build", "-o", vigilBin, "../../cmd/vigil")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return vigilBin
}

// intrusionConfig is a Vigil with short clips and a quick scale-down.
func intrusionConfig(t testing.TB, c *conf.Config) {
	c.Agents.Binary = vigilBinary(t)
	c.Agents.Capacity = 3
	c.Agents.Min = 1
	c.Agents.Max = 8
	c.Agents.ScaleDownCooldown = 2 * time.Second
	c.Agents.Idle = 2 * time.Second
	c.Recording.ClipSeconds = 5
	c.Recording.PreRollSeconds = 2
	c.Telemetry.OfflineAfter = 0
}

// cameraFleet is n simulated cameras on site that see an intruder at 1 s.
func cameraFleet(broker, site string, n int) *sim.Scenario {
	sc := sim.NewScenario()
	sc.Brokers = []string{broker}
	sc.Fleets = []sim.Fleet{{Name: "cams", Site: site, Type: sim.TypeCamera, Count: n, Period: 250 * time.Millisecond,
		Camera: sim.CameraConfig{Width: 160, Height: 120, FPS: 5, Quality: 60, PreRoll: 2 * time.Second}}}
	sc.Timeline = []sim.Step{{At: 2500 * time.Millisecond, Fleet: "cams", Fraction: 1, Action: "intrusion", Duration: 2 * time.Second, DistanceM: 0.5}}
	sc.ApplyDefaults()
	return sc
}

func runFleet(t *testing.T, ta *testApp, sc *sim.Scenario) (stop func()) {
	t.Helper()
	s, err := sim.New(sc, ta.log)
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	return func() { cancel(); <-done }
}

func (ta *testApp) clips(t testing.TB, site string) []coord.Clip {
	t.Helper()
	var cs []coord.Clip
	ta.api(t, "GET", "/api/v1/clips?limit=1000&site="+site, "admin", adminPassword, &cs)
	return cs
}

func (ta *testApp) view(t testing.TB) coord.View {
	t.Helper()
	var v coord.View
	ta.api(t, "GET", "/api/v1/agents", "admin", adminPassword, &v)
	return v
}

func liveAgents(v coord.View) int {
	n := 0
	for _, a := range v.Agents {
		if a.Status == "ready" || a.Status == "starting" {
			n++
		}
	}
	return n
}

// TestSevenCamerasThreeAgentsSevenClipsThenOneAgent is the seed's story:
// seven cameras see an intruder at once; agents take 3 streams each, so
// the coordinator scales to 3 agents; all 7 clips are stored whole; when
// the streams end the agents scale back to 1.
func TestSevenCamerasThreeAgentsSevenClipsThenOneAgent(t *testing.T) {
	ta := startApp(t, func(c *conf.Config) { intrusionConfig(t, c) })
	sevenCameras(t, ta)
}

// sevenCameras runs the story on a started Vigil.
func sevenCameras(t *testing.T, ta *testApp) {
	t.Helper()
	testkit.WaitFor(t, 20*time.Second, "the first agent", func() bool { return liveAgents(ta.view(t)) == 1 && ta.view(t).Agents[0].Status == "ready" })
	stop := runFleet(t, ta, cameraFleet(ta.mqttAddr(), "lab", 7))
	defer stop()

	peak := 0
	testkit.WaitFor(t, 60*time.Second, "7 clips ready", func() bool {
		peak = max(peak, liveAgents(ta.view(t)))
		n := 0
		for _, c := range ta.clips(t, "lab") {
			if c.State == coord.ClipReady {
				n++
			}
		}
		return n == 7
	})
	if peak != 3 {
		t.Errorf("peak of %d agents for 7 streams at capacity 3, want 3", peak)
	}
	for _, c := range ta.clips(t, "lab") {
		// 2 s of pre-roll and 5 s of clip.
		if c.DurationMS < 6300 || c.DurationMS > 7700 || c.Interrupted || c.PacketsLost > 0 {
			t.Errorf("clip %s of %s: %d ms, %d frames, %d packets lost, interrupted=%v", c.ID, c.Camera, c.DurationMS, c.Frames, c.PacketsLost, c.Interrupted)
		}
		checkClipFile(t, ta, c, 7)
	}
	if t.Failed() && os.Getenv("VIGIL_DEBUG_KEEP") != "" {
		exec.Command("cp", "-r", ta.Storage, "/tmp/keep-clips").Run()
		exec.Command("cp", "-r", filepath.Join(ta.cfg.Data.Dir, "agents"), "/tmp/keep-agents").Run()
	}
	var events []detect.Event
	ta.api(t, "GET", "/api/v1/events?site=lab", "admin", adminPassword, &events)
	if len(events) != 7 {
		t.Errorf("%d events, want 7", len(events))
	}
	testkit.WaitFor(t, 30*time.Second, "scale-down to 1 agent", func() bool { return liveAgents(ta.view(t)) == 1 })

	// The history is written behind the coordinator's decisions: the last
	// scale-down may reach the database a moment after the view shows it.
	var count map[string]int
	testkit.WaitFor(t, 10*time.Second, "the history to hold the second scale-down", func() bool {
		var hist []coord.HistoryEntry
		ta.api(t, "GET", "/api/v1/agents/history", "admin", adminPassword, &hist)
		count = map[string]int{}
		for _, h := range hist {
			count[h.Action]++
		}
		return count["scale_down"] >= 2
	})
	if count["scale_up"] != 3 || count["scale_down"] != 2 || count["assign"] != 7 {
		t.Errorf("history counts %v", count)
	}
}

// checkClipFile fetches a clip's video over the API (with a Range request)
// and checks it with ffprobe: playable, and as long as expected within 10%.
func checkClipFile(t *testing.T, ta *testApp, c coord.Clip, wantSeconds float64) {
	t.Helper()
	path := filepath.Join(ta.Storage, filepath.FromSlash(c.File))
	codec, dur := ffprobe(t, path)
	if codec != c.Codec || dur < wantSeconds*0.9 || dur > wantSeconds*1.1 {
		t.Errorf("clip %s: ffprobe says %s, %.2fs; want %s, %.1fs ±10%%", c.ID, codec, dur, c.Codec, wantSeconds)
	}
}

func ffprobe(t *testing.T, path string) (string, float64) {
	t.Helper()
	bin := testpeer.Need(t, "ffprobe")
	out, err := exec.Command(bin, "-v", "error", "-show_entries", "format=duration:stream=codec_name", "-of", "json", path).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", path, err)
	}
	var r struct {
		Streams []struct {
			Codec string `json:"codec_name"`
		}
		Format struct{ Duration string }
	}
	json.Unmarshal(out, &r)
	d, _ := strconv.ParseFloat(r.Format.Duration, 64)
	if len(r.Streams) == 0 {
		t.Fatalf("no stream in %s", path)
	}
	return r.Streams[0].Codec, d
}

// manualCamera is a camera device driven by the test: it announces itself
// and hands the test the stream commands it receives.
type manualCamera struct {
	cmds chan ingest.StreamCommand
}

func newManualCamera(t testing.TB, ta *testApp, site, id string) *manualCamera {
	t.Helper()
	mc := &manualCamera{cmds: make(chan ingest.StreamCommand, 10)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := sub.Subscribe(ctx, sub.Options{Brokers: []string{ta.mqttAddr()}, Filters: []string{"vigil/" + site + "/" + id + "/cmd"}, QoS: 1, ClientID: id},
		func(m sub.Message) {
			var c ingest.StreamCommand
			if json.Unmarshal(m.Payload, &c) == nil {
				mc.cmds <- c
			}
		})
	must(t, err)
	t.Cleanup(func() { s.Close() })
	must(t, ta.Broker.Publish("vigil/"+site+"/"+id+"/meta", []byte(`{"capabilities":["motion","camera"]}`), true, 1))
	// The pipeline's observers (the coordinator among them) see a message
	// before its device is updated: once the device is a camera, the
	// coordinator has been handed its meta, before any later detection.
	testkit.WaitFor(t, 10*time.Second, id+"'s meta", func() bool {
		d, err := ta.Store.GetDevice(context.Background(), id)
		return err == nil && d.Meta.Has(telemetry.CapCamera)
	})
	return mc
}

// detect makes a sensor see someone: two motion messages.
func (ta *testApp) detect(t testing.TB, site, sensor string) {
	t.Helper()
	for range 2 {
		must(t, ta.Broker.Publish("vigil/"+site+"/"+sensor+"/motion", []byte(`{"distance_m":0.4}`), false, 1))
	}
}

func (mc *manualCamera) command(t testing.TB) ingest.StreamCommand {
	t.Helper()
	select {
	case c := <-mc.cmds:
		return c
	case <-time.After(20 * time.Second):
		t.Fatal("no stream command reached the camera")
	}
	return ingest.StreamCommand{}
}

// TestAnFFmpegSenderMakesAValidClip streams with ffmpeg's RTP muxer to the
// agent the coordinator assigned, as any RTP/JPEG camera would.
func TestAnFFmpegSenderMakesAValidClip(t *testing.T) {
	ffmpeg := testpeer.Need(t, "ffmpeg")
	ta := startApp(t, func(c *conf.Config) {
		intrusionConfig(t, c)
		c.Recording.ClipSeconds = 4
	})
	cam := newManualCamera(t, ta, "shop", "ffcam")
	testkit.WaitFor(t, 20*time.Second, "the camera's meta and an agent", func() bool {
		return liveAgents(ta.view(t)) == 1 && ta.view(t).Agents[0].Status == "ready"
	})
	ta.detect(t, "shop", "ffcam")
	cmd := cam.command(t)
	if cmd.Action != "stream" || cmd.Transport != "rtp/jpeg" || cmd.SSRC == 0 || cmd.Port == 0 || cmd.Duration != 4 || cmd.PreRoll != 2 {
		t.Fatalf("stream command %+v", cmd)
	}
	out, err := exec.Command(ffmpeg, "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=640x480:rate=15",
		// ffmpeg 5.1's RTP muxer refuses what its mjpeg encoder makes by
		// default: 4:4:4 (for testsrc) and optimised Huffman tables, both of
		// which RFC 2435 cannot carry. docs/ingest.md gives this command.
		"-t", fmt.Sprint(cmd.Duration), "-c:v", "mjpeg", "-pix_fmt", "yuvj420p", "-huffman", "default",
		"-f", "rtp", "-ssrc", fmt.Sprint(cmd.SSRC),
		fmt.Sprintf("rtp://%s:%d", cmd.Host, cmd.Port)).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, out)
	}
	var clip coord.Clip
	testkit.WaitFor(t, 30*time.Second, "the clip", func() bool {
		cs := ta.clips(t, "shop")
		if len(cs) == 1 && cs[0].State == coord.ClipReady {
			clip = cs[0]
			return true
		}
		return false
	})
	if clip.Frames < 55 || clip.PacketsLost != 0 {
		t.Errorf("clip %+v", clip)
	}
	checkClipFile(t, ta, clip, 4)
}

// TestAnAgentKilledMidStream kills the agent receiving two streams: the
// streams must move to another agent and both clips be kept whole but for
// the moments around the kill, marked interrupted.
func TestAnAgentKilledMidStream(t *testing.T) {
	ta := startApp(t, func(c *conf.Config) {
		intrusionConfig(t, c)
		c.Recording.ClipSeconds = 8
	})
	rt, ok := ta.Runtime.(*agentrt.Process)
	if !ok {
		t.Fatalf("runtime is %T", ta.Runtime)
	}
	killMidStream(t, ta, func(agent string) {
		pid := rt.PID(agent)
		if pid == 0 {
			t.Fatal("no pid for the agent")
		}
		must(t, syscall.Kill(pid, syscall.SIGKILL))
		t.Logf("killed agent %s (pid %d)", agent, pid)
	})
}

// TestAFrozenAgentCostsTheClipsNothing freezes (SIGSTOP) the agent
// receiving two streams: after agents.heartbeat_timeout the streams move
// to another agent, the cameras send again what the frozen agent may not
// have stored, and the clips are whole; the agent, thawed after the
// clips are done, changes nothing.
func TestAFrozenAgentCostsTheClipsNothing(t *testing.T) {
	ta := startApp(t, func(c *conf.Config) {
		intrusionConfig(t, c)
		c.Recording.ClipSeconds = 12
	})
	rt, ok := ta.Runtime.(*agentrt.Process)
	if !ok {
		t.Fatalf("runtime is %T", ta.Runtime)
	}
	var frozen int
	killMidStream(t, ta, func(agent string) {
		frozen = rt.PID(agent)
		if frozen == 0 {
			t.Fatal("no pid for the agent")
		}
		must(t, syscall.Kill(frozen, syscall.SIGSTOP))
		t.Logf("froze agent %s (pid %d)", agent, frozen)
	})
	must(t, syscall.Kill(frozen, syscall.SIGCONT))
}

// killMidStream runs two cameras on one agent, kills it with kill, and
// checks that both clips are kept whole.
func killMidStream(t *testing.T, ta *testApp, kill func(agent string)) {
	t.Helper()
	stop := runFleet(t, ta, cameraFleet(ta.mqttAddr(), "vault", 2))
	defer stop()
	var victim string
	testkit.WaitFor(t, 30*time.Second, "two streams under way on one agent", func() bool {
		v := ta.view(t)
		for _, a := range v.Agents {
			if len(a.Streams) == 2 {
				victim = a.ID
			}
		}
		live := 0
		for _, s := range v.Streams {
			if s.State == "streaming" {
				live++
			}
		}
		return victim != "" && live == 2
	})
	time.Sleep(3 * time.Second) // let a few seconds of video reach the agent
	kill(victim)

	testkit.WaitFor(t, 60*time.Second, "both clips ready", func() bool {
		cs := ta.clips(t, "vault")
		n := 0
		for _, c := range cs {
			if c.State == coord.ClipReady {
				n++
			}
		}
		return n == 2
	})
	for _, c := range ta.clips(t, "vault") {
		// The pre-roll and the clip: the cameras send again what the
		// agent may not have stored, so nothing is missing but maybe a
		// frame or two.
		want := int64(ta.cfg.Recording.PreRollSeconds+ta.cfg.Recording.ClipSeconds) * 1000
		t.Logf("clip %s: %d ms (want %d), %d frames, segments %v", c.ID, c.DurationMS, want, c.Frames, c.Segments)
		if !c.Interrupted || len(c.Segments) < 2 || c.DurationMS < want-500 || c.DurationMS > want+500 {
			t.Errorf("clip %s: interrupted=%v segments=%v duration %d ms (want %d) frames %d", c.ID, c.Interrupted, c.Segments, c.DurationMS, want, c.Frames)
		}
		checkClipFile(t, ta, c, float64(c.DurationMS)/1000)
	}
	var hist []coord.HistoryEntry
	ta.api(t, "GET", "/api/v1/agents/history", "admin", adminPassword, &hist)
	lost, reassigned := 0, 0
	for _, h := range hist {
		switch h.Action {
		case "agent_lost":
			lost++
		case "reassign":
			reassigned++
		}
	}
	if lost < 1 || reassigned != 2 {
		t.Errorf("history: %d agent_lost, %d reassign", lost, reassigned)
	}
}

// TestPriorityWhenAgentsAreAtMax has one agent for one stream: of three
// cameras seeing an intruder together, the first recorded is whichever
// came first, the rest wait in the queue (visible in the API) and go in
// priority order.
func TestPriorityWhenAgentsAreAtMax(t *testing.T) {
	// The simulated cameras' MAC-derived ids come from the seed: learn them
	// first, to give them priorities in the config.
	probe, err := sim.New(cameraFleet("127.0.0.1:1", "museum", 3), slog.New(slog.DiscardHandler))
	must(t, err)
	ids := probe.DeviceIDs()
	cfg := testConfig(t)
	intrusionConfig(t, cfg)
	cfg.Agents.Capacity, cfg.Agents.Max = 1, 1
	cfg.Recording.ClipSeconds, cfg.Recording.PreRollSeconds = 2, 0
	cfg.Cameras = map[string]conf.Camera{ids[0]: {Priority: 1}, ids[1]: {Priority: 5}, ids[2]: {Priority: 10}}
	ta := openApp(t, cfg, adminPassword)
	s, err := sim.New(cameraFleet(ta.mqttAddr(), "museum", 3), ta.log)
	must(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	var queued coord.View
	testkit.WaitFor(t, 30*time.Second, "two cameras queued", func() bool {
		queued = ta.view(t)
		return len(queued.Queue) == 2
	})
	if queued.Queue[0].Priority < queued.Queue[1].Priority {
		t.Errorf("queue not in priority order: %+v", queued.Queue)
	}
	// The coordinator saves events on a goroutine of its own: the API
	// shows them queued a moment after the queue does.
	testkit.WaitFor(t, 10*time.Second, "2 events shown as queued", func() bool {
		var events []detect.Event
		ta.api(t, "GET", "/api/v1/events?site=museum", "admin", adminPassword, &events)
		nq := 0
		for _, e := range events {
			if e.State == detect.EventQueued {
				nq++
			}
		}
		return nq == 2
	})
	testkit.WaitFor(t, 60*time.Second, "3 clips", func() bool {
		return len(ta.clips(t, "museum")) == 3 && ta.clips(t, "museum")[0].State == coord.ClipReady
	})
	var hist []coord.HistoryEntry
	ta.api(t, "GET", "/api/v1/agents/history", "admin", adminPassword, &hist)
	var order []string
	for i := len(hist) - 1; i >= 0; i-- {
		if hist[i].Action == "assign" {
			order = append(order, hist[i].Camera)
		}
	}
	if len(order) != 3 || (order[1] != queued.Queue[0].Camera) || order[2] != queued.Queue[1].Camera {
		t.Errorf("assignment order %v; queue was %s then %s", order, queued.Queue[0].Camera, queued.Queue[1].Camera)
	}
	if len(ta.view(t).Agents) != 1 {
		t.Error("more agents than agents.max")
	}
}

// TestADedicatedAgentForAProSite gives a site on a plan with a dedicated
// agent its own agent, though the shared one has room.
func TestADedicatedAgentForAProSite(t *testing.T) {
	ta := startApp(t, func(c *conf.Config) {
		intrusionConfig(t, c)
		c.Sites = map[string]conf.SiteConfig{"bank": {Plan: "pro"}}
		c.Plans["pro"] = conf.Plan{MaxClips: 500, Width: 160, Height: 120, FPS: 5, Quality: 60, DedicatedAgent: true}
	})
	stop := runFleet(t, ta, cameraFleet(ta.mqttAddr(), "bank", 1))
	defer stop()
	testkit.WaitFor(t, 30*time.Second, "the bank's stream on a dedicated agent", func() bool {
		for _, a := range ta.view(t).Agents {
			if a.Pool == "bank" && len(a.Streams) == 1 {
				return true
			}
		}
		return false
	})
	var sites []struct {
		Name, Plan string
		Armed      bool
	}
	ta.api(t, "GET", "/api/v1/sites", "admin", adminPassword, &sites)
	if len(sites) != 1 || sites[0].Plan != "pro" || !sites[0].Armed {
		t.Errorf("sites %+v", sites)
	}
}

// TestVigilCameraWithFFmpeg runs `vigil camera` on an ffmpeg test pattern,
// as the paper's Pi with a real camera, and records a clip from it.
func TestVigilCameraWithFFmpeg(t *testing.T) {
	testpeer.Need(t, "ffmpeg")
	ta := startApp(t, func(c *conf.Config) {
		intrusionConfig(t, c)
		c.Recording.ClipSeconds = 3
	})
	cmd := exec.Command(vigilBinary(t), "camera", "--source", "lavfi:testsrc=size=320x240:rate=25", "--site", "lab", "--id", "realcam",
		"--broker", ta.mqttAddr(), "--width", "160", "--height", "120", "--fps", "10", "--pre-roll", "2s")
	var out testkit.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	must(t, cmd.Start())
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	testkit.WaitFor(t, 20*time.Second, "the camera to be ready", func() bool { return strings.Contains(out.String(), "camera ready") })
	testkit.WaitFor(t, 20*time.Second, "an agent", func() bool { return liveAgents(ta.view(t)) == 1 && ta.view(t).Agents[0].Status == "ready" })
	time.Sleep(2500 * time.Millisecond) // fill the pre-roll
	ta.detect(t, "lab", "realcam")
	var clip coord.Clip
	testkit.WaitFor(t, 30*time.Second, "the clip", func() bool {
		cs := ta.clips(t, "lab")
		if len(cs) == 1 && cs[0].State == coord.ClipReady {
			clip = cs[0]
			return true
		}
		return false
	})
	if clip.DurationMS < 4500 || clip.DurationMS > 5500 || clip.PacketsLost > 0 {
		t.Errorf("clip: %d ms, %d frames, %d lost; want 2 s of pre-roll + 3 s\n%s", clip.DurationMS, clip.Frames, clip.PacketsLost, out.String())
	}
	checkClipFile(t, ta, clip, float64(clip.DurationMS)/1000)
}

// TestTheDemoTellsTheWholeStory: `vigil up --demo` detects the demo
// camera's intruder, gives the stream to an agent and stores a clip.
func TestTheDemoTellsTheWholeStory(t *testing.T) {
	ta := startApp(t, func(c *conf.Config) {
		intrusionConfig(t, c)
		c.Demo.Enabled = true
		c.Recording.ClipSeconds = 3
	})
	var clip coord.Clip
	testkit.WaitFor(t, 45*time.Second, "the demo's first clip", func() bool {
		cs := ta.clips(t, "home")
		if len(cs) > 0 && cs[0].State == coord.ClipReady {
			clip = cs[0]
			return true
		}
		return false
	})
	// The event is marked recorded just after its clip is ready.
	var ev detect.Event
	testkit.WaitFor(t, 10*time.Second, "the event recorded", func() bool {
		ta.api(t, "GET", "/api/v1/events/"+clip.EventID, "admin", adminPassword, &ev)
		return ev.State == detect.EventRecorded
	})
	if ev.State != detect.EventRecorded || ev.Site != "home" || len(ev.Cameras) != 1 || ev.Distance == nil || *ev.Distance >= 1 {
		t.Errorf("event %+v", ev)
	}
	// Playback over the API: a Range request for the first KB, and the
	// thumbnail.
	if code, body, ctype := firstKB(t, "http://"+ta.HTTP.Addr().String(), clip.ID); code != http.StatusPartialContent || len(body) != 1024 || ctype != "video/mp4" || string(body[4:8]) != "ftyp" {
		t.Errorf("range request: %d, %d bytes, %q", code, len(body), ctype)
	}
	req, _ := http.NewRequest("GET", "http://"+ta.HTTP.Addr().String()+"/api/v1/clips/"+clip.ID+"/thumbnail", nil)
	req.SetBasicAuth("admin", adminPassword)
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	thumb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if _, err := jpeg.DecodeConfig(bytes.NewReader(thumb)); err != nil || resp.StatusCode != 200 {
		t.Errorf("thumbnail: %d %v", resp.StatusCode, err)
	}
}

// firstKB asks base for the first KB of a clip's video, as a player does
// (a Range request); it returns the status, the body and its type.
func firstKB(t testing.TB, base, clip string) (int, []byte, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/api/v1/clips/"+clip+"/video", nil)
	req.SetBasicAuth("admin", adminPassword)
	req.Header.Set("Range", "bytes=0-1023")
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, body, resp.Header.Get("Content-Type")
}

func TestArmingIsForAdminsAndDisarmedSitesDoNotRecord(t *testing.T) {
	ta := startApp(t, func(c *conf.Config) { intrusionConfig(t, c) })
	addUser(t, ta, "watcher", users.RoleViewer, "watcher-password", nil, nil)
	if code := ta.api(t, "POST", "/api/v1/sites/shop/disarm", "watcher", "watcher-password", nil); code != 403 {
		t.Errorf("a viewer disarming: %d, want 403", code)
	}
	var site struct{ Armed bool }
	if code := ta.api(t, "POST", "/api/v1/sites/shop/disarm", "admin", adminPassword, &site); code != 200 || site.Armed {
		t.Fatalf("admin disarming: %d %+v", code, site)
	}
	newManualCamera(t, ta, "shop", "cam1")
	ta.detect(t, "shop", "cam1")
	time.Sleep(500 * time.Millisecond) // a wrongly armed site would have an event by now
	var events []detect.Event
	ta.api(t, "GET", "/api/v1/events?site=shop", "admin", adminPassword, &events)
	if len(events) != 0 {
		t.Fatalf("a disarmed site recorded %d events", len(events))
	}
	// Arm over MQTT, as a keypad would.
	must(t, ta.Broker.Publish("vigil/shop/mode/set", []byte("arm"), false, 1))
	testkit.WaitFor(t, 5*time.Second, "the site armed", func() bool {
		var sites []struct {
			Name  string
			Armed bool
		}
		ta.api(t, "GET", "/api/v1/sites", "admin", adminPassword, &sites)
		return len(sites) == 1 && sites[0].Armed
	})
	ta.detect(t, "shop", "cam1")
	testkit.WaitFor(t, 5*time.Second, "an event", func() bool {
		ta.api(t, "GET", "/api/v1/events?site=shop", "admin", adminPassword, &events)
		return len(events) == 1
	})
}

// TestShutdownMidStreamKeepsTheClip stops Vigil while a camera streams: the
// clip is kept (interrupted), and no agent is started on the way out.
func TestShutdownMidStreamKeepsTheClip(t *testing.T) {
	ta := startApp(t, func(c *conf.Config) {
		intrusionConfig(t, c)
		c.Recording.ClipSeconds = 30
	})
	stop := runFleet(t, ta, cameraFleet(ta.mqttAddr(), "home", 1))
	testkit.WaitFor(t, 30*time.Second, "a stream under way", func() bool {
		v := ta.view(t)
		return len(v.Streams) == 1 && v.Streams[0].State == "streaming"
	})
	time.Sleep(2 * time.Second) // mid-stream: two seconds of video recorded
	must(t, ta.App.Close())
	stop()

	st, err := store.Open(context.Background(), filepath.Join(ta.cfg.Data.Dir, "vigil.db"))
	must(t, err)
	defer st.Close()
	cs, err := st.ListClips(context.Background(), coord.ClipFilter{Site: "home"})
	must(t, err)
	if len(cs) != 1 || cs[0].State != coord.ClipReady || !cs[0].Interrupted || cs[0].DurationMS < 2000 {
		t.Fatalf("clips after shutdown: %+v", cs)
	}
	logs, _ := filepath.Glob(filepath.Join(ta.cfg.Data.Dir, "agents", "agent-*.log"))
	if len(logs) != 1 {
		t.Errorf("%d agents were started, want 1 (none on the way out)", len(logs))
	}
}

// A site's plan set in the UI applies to its next stream and outlives a
// restart (it is kept in the database); "" goes back to vigil.yaml's, as
// does a plan vigil.yaml no longer has.
func TestASitesPlanSetInTheUIAppliesAndOutlivesARestart(t *testing.T) {
	ta := startApp(t, func(c *conf.Config) {
		intrusionConfig(t, c)
		c.Plans["slow"] = conf.Plan{MaxClips: 10, Width: 160, Height: 120, FPS: 2, Quality: 50}
	})
	yamlPlan, yaml := ta.cfg.PlanFor("shop")
	if yaml.FPS == 2 {
		t.Fatalf("vigil.yaml's plan %s has the test plan's frame rate", yamlPlan)
	}
	planOf := func(ta *testApp) string {
		var sites []struct{ Name, Plan string }
		ta.api(t, "GET", "/api/v1/sites", "admin", adminPassword, &sites)
		for _, s := range sites {
			if s.Name == "shop" {
				return s.Plan
			}
		}
		return ""
	}
	cam := newManualCamera(t, ta, "shop", "cam1")
	testkit.WaitFor(t, 20*time.Second, "an agent", func() bool { return liveAgents(ta.view(t)) == 1 && ta.view(t).Agents[0].Status == "ready" })
	if code := ta.apiJSON(t, "PUT", "/api/v1/sites/shop/plan", map[string]any{"plan": "slow"}, nil); code != 200 {
		t.Fatalf("set the plan: %d", code)
	}
	if got := planOf(ta); got != "slow" {
		t.Errorf("site's plan %q, want slow", got)
	}
	ta.detect(t, "shop", "cam1")
	if cmd := cam.command(t); cmd.FPS != 2 || cmd.Quality != 50 {
		t.Errorf("stream command at %d fps quality %d, want the slow plan's 2 and 50", cmd.FPS, cmd.Quality)
	}

	ta.Close()
	ta = openApp(t, ta.cfg, adminPassword)
	if got := planOf(ta); got != "slow" {
		t.Errorf("after a restart the site's plan is %q, want slow", got)
	}
	if code := ta.apiJSON(t, "PUT", "/api/v1/sites/shop/plan", map[string]any{"plan": ""}, nil); code != 200 {
		t.Fatalf("clear the plan: %d", code)
	}
	if got := planOf(ta); got != yamlPlan {
		t.Errorf("cleared: the site's plan is %q, want vigil.yaml's %q", got, yamlPlan)
	}

	if code := ta.apiJSON(t, "PUT", "/api/v1/sites/shop/plan", map[string]any{"plan": "slow"}, nil); code != 200 {
		t.Fatalf("set the plan again: %d", code)
	}
	ta.Close()
	delete(ta.cfg.Plans, "slow")
	ta = openApp(t, ta.cfg, adminPassword)
	if got := planOf(ta); got != yamlPlan {
		t.Errorf("with the plan gone from vigil.yaml the site's plan is %q, want vigil.yaml's %q", got, yamlPlan)
	}
}
