package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/coord"
	"github.com/vigilhq/vigil/internal/detect"
	"github.com/vigilhq/vigil/internal/sim"
)

var (
	buildOnce sync.Once
	vigilBin  string
	buildErr  error
)

// vigilBinary builds cmd/vigil once (static, as the Docker image needs).
func vigilBinary(t *testing.T) string {
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
func intrusionConfig(t *testing.T, c *conf.Config) {
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
func cameraFleet(ta *testApp, site string, n int) *sim.Scenario {
	sc := sim.NewScenario()
	sc.Brokers = []string{ta.mqttAddr()}
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

func (ta *testApp) clips(t *testing.T, site string) []coord.Clip {
	t.Helper()
	var cs []coord.Clip
	ta.api(t, "GET", "/api/v1/clips?limit=1000&site="+site, "admin", adminPassword, &cs)
	return cs
}

func (ta *testApp) view(t *testing.T) coord.View {
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
	waitFor(t, 20*time.Second, "the first agent", func() bool { return liveAgents(ta.view(t)) == 1 && ta.view(t).Agents[0].Status == "ready" })
	stop := runFleet(t, ta, cameraFleet(ta, "lab", 7))
	defer stop()

	peak := 0
	waitFor(t, 60*time.Second, "7 clips ready", func() bool {
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
	waitFor(t, 30*time.Second, "scale-down to 1 agent", func() bool { return liveAgents(ta.view(t)) == 1 })

	var hist []coord.HistoryEntry
	ta.api(t, "GET", "/api/v1/agents/history", "admin", adminPassword, &hist)
	count := map[string]int{}
	for _, h := range hist {
		count[h.Action]++
	}
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
	bin := need(t, "ffprobe")
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
