package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/vigilhq/vigil/internal/sim"
)

// IntrusionOptions configure an intrusion benchmark.
type IntrusionOptions struct {
	Runtime  string // process or docker
	Image    string // docker: the agent image
	Cameras  int
	Rounds   int           // intrusions...
	Every    time.Duration // ...this far apart (agents scale back down in between)
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
	t, err := startVigil(ctx, o.Vigil, dir,
		"VIGIL_AGENTS_RUNTIME="+o.Runtime, "VIGIL_AGENTS_DOCKER_IMAGE="+o.Image, "VIGIL_AGENTS_DOCKER_NETWORK=vigil-bench",
		"VIGIL_AGENTS_SCALE_DOWN_COOLDOWN=3s", "VIGIL_RECORDING_CLIP_SECONDS=5", "VIGIL_RECORDING_PRE_ROLL_SECONDS=2")
	if err != nil {
		return nil, err
	}
	defer t.close()

	sc := sim.NewScenario()
	sc.Brokers = []string{t.url()}
	f := sim.TypeDefaults(sim.TypeCamera)
	f.Name, f.Site, f.Count = "cams", "bench", o.Cameras
	f.Period = 250 * time.Millisecond
	sc.Fleets = []sim.Fleet{f}
	for r := range o.Rounds {
		sc.Timeline = append(sc.Timeline, sim.Step{At: 5*time.Second + time.Duration(r)*o.Every, Fleet: "cams", Fraction: 1,
			Action: "intrusion", Duration: 2 * time.Second, DistanceM: 0.5})
	}
	// The last clip (5 s) is sent whole before the cameras stop.
	sc.Duration = 5*time.Second + time.Duration(o.Rounds-1)*o.Every + 12*time.Second
	sc.ApplyDefaults()
	s, err := sim.New(sc, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(o.Progress, "%s runtime: %d cameras, %d intrusions %v apart (%v)\n", o.Runtime, o.Cameras, o.Rounds, o.Every, sc.Duration)
	if err := s.Run(ctx); err != nil {
		return nil, err
	}
	// Wait for the clips to be finished (transcoded), a minute at most.
	want := o.Cameras * o.Rounds
	var mfs map[string]*dto.MetricFamily
	for deadline := time.Now().Add(time.Minute); ; {
		if mfs, err = scrape(ctx, t.http, t.adminPassword); err != nil {
			return nil, err
		}
		if clipsReady(mfs) >= want || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
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
	r.ClipsReady = clipsReady(mfs)
	return r, nil
}

func clipsReady(mfs map[string]*dto.MetricFamily) int {
	if mf := mfs["vigil_clips_total"]; mf != nil {
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == "ready" {
				return int(m.GetCounter().GetValue())
			}
		}
	}
	return 0
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
