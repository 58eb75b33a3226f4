package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/vigilhq/vigil/internal/sim"
	"github.com/vigilhq/vigil/internal/users"
)

// IntrusionOptions configure an intrusion benchmark.
type IntrusionOptions struct {
	Runtime  string // process or docker
	Image    string // docker: the agent image
	Cameras  int
	Rounds   int           // intrusions, every Every
	Every    time.Duration // between rounds (agents scale back down in between)
	Vigil    string
	Progress io.Writer
}

// IntrusionResult is what an intrusion benchmark measured.
type IntrusionResult struct {
	Runtime         string  `json:"runtime"`
	Cameras         int     `json:"cameras"`
	Rounds          int     `json:"rounds"`
	Detections      int     `json:"detections"`
	FirstFrameP50ms float64 `json:"detection_to_first_frame_p50_ms"`
	FirstFrameP95ms float64 `json:"detection_to_first_frame_p95_ms"`
	ScaleUps        int     `json:"scale_ups"`
	ScaleUpP50ms    float64 `json:"scale_up_p50_ms"`
	ScaleUpMaxMS    float64 `json:"scale_up_p95_ms"`
	ClipsReady      int     `json:"clips_ready"`
}

// RunIntrusion starts `vigil up` with the given agent runtime, lets
// simulated cameras see an intruder every Every, Rounds times, and reads
// the coordinator's histograms: detection to first stored frame, and agent
// scale-up reaction time.
func RunIntrusion(ctx context.Context, o IntrusionOptions) (*IntrusionResult, error) {
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	dir, err := os.MkdirTemp("", "vigil-bench-intrusion-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	bin := o.Vigil
	if bin == "" {
		if bin, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	mqttAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	httpAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	password := users.RandomPassword()
	cmd := exec.Command(bin, "up", "--data-dir", filepath.Join(dir, "data"), "--mqtt-listen", mqttAddr, "--http-listen", httpAddr, "--log-level", "warn")
	cmd.Env = append(os.Environ(), "VIGIL_ADMIN_PASSWORD="+password, "VIGIL_MQTT_WS_LISTEN=",
		"VIGIL_AGENTS_RUNTIME="+o.Runtime, "VIGIL_AGENTS_DOCKER_IMAGE="+o.Image, "VIGIL_AGENTS_DOCKER_NETWORK=vigil-bench",
		"VIGIL_AGENTS_SCALE_DOWN_COOLDOWN=3s", "VIGIL_RECORDING_CLIP_SECONDS=5", "VIGIL_RECORDING_PRE_ROLL_SECONDS=2")
	done, err := startProcess(cmd, dir, "vigil")
	if err != nil {
		return nil, err
	}
	defer stopProcess(cmd, done)
	if err := waitPort(ctx, dialCheck(mqttAddr), done); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "vigil.log"))
		return nil, fmt.Errorf("vigil up: %w\n%s", err, log)
	}

	sc := sim.NewScenario()
	sc.Brokers = []string{"mqtt://" + mqttAddr}
	f := sim.TypeDefaults(sim.TypeCamera)
	f.Name, f.Site, f.Count = "cams", "bench", o.Cameras
	f.Period = 250 * time.Millisecond
	sc.Fleets = []sim.Fleet{f}
	sc.Timeline = []sim.Step{{At: 5 * time.Second, Fleet: "cams", Fraction: 1, Action: "intrusion", Duration: 2 * time.Second, DistanceM: 0.5, Every: o.Every}}
	sc.Duration = 5*time.Second + time.Duration(o.Rounds-1)*o.Every + 20*time.Second
	sc.ApplyDefaults()
	s, err := sim.New(sc, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(o.Progress, "%s runtime: %d cameras, %d intrusions %v apart (%v)\n", o.Runtime, o.Cameras, o.Rounds, o.Every, sc.Duration)
	if err := s.Run(ctx); err != nil {
		return nil, err
	}
	mfs, err := scrape(ctx, httpAddr, password)
	if err != nil {
		return nil, err
	}
	r := &IntrusionResult{Runtime: o.Runtime, Cameras: o.Cameras, Rounds: o.Rounds}
	if h := histogram(mfs, "vigil_detection_to_first_frame_seconds"); h != nil {
		r.Detections = int(h.GetSampleCount())
		r.FirstFrameP50ms, r.FirstFrameP95ms = 1000*histogramQuantile(0.5, h), 1000*histogramQuantile(0.95, h)
	}
	if h := histogram(mfs, "vigil_agent_scale_up_seconds"); h != nil {
		r.ScaleUps = int(h.GetSampleCount())
		r.ScaleUpP50ms, r.ScaleUpMaxMS = 1000*histogramQuantile(0.5, h), 1000*histogramQuantile(0.95, h)
	}
	if mf := mfs["vigil_clips_total"]; mf != nil {
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == "ready" {
				r.ClipsReady = int(m.GetCounter().GetValue())
			}
		}
	}
	return r, nil
}

func scrape(ctx context.Context, addr, password string) (map[string]*dto.MetricFamily, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/metrics", nil)
	req.SetBasicAuth("admin", password)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

func histogram(mfs map[string]*dto.MetricFamily, name string) *dto.Histogram {
	if mf := mfs[name]; mf != nil && len(mf.GetMetric()) > 0 {
		return mf.GetMetric()[0].GetHistogram()
	}
	return nil
}
