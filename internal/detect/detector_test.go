package detect

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/telemetry"
)

type memSites struct {
	mu    sync.Mutex
	armed map[string]bool
}

func (m *memSites) EnsureSite(_ context.Context, name string) (Site, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.armed[name]
	if !ok {
		a = true
		m.armed[name] = a
	}
	return Site{Name: name, Armed: a}, nil
}

func (m *memSites) SetArmed(_ context.Context, name string, armed bool) (Site, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.armed[name] = armed
	return Site{Name: name, Armed: armed}, nil
}

func distance(id string, v float64, at time.Time) telemetry.Event {
	return telemetry.Event{DeviceID: id, Site: "home", Type: "distance", Time: at, Reading: &telemetry.Reading{Time: at, Value: v, Units: "m"}}
}

func newDetector(cfg conf.Detection) (*Detector, *[]Detection) {
	var got []Detection
	d := New(cfg, &memSites{armed: map[string]bool{}}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	d.Out = func(x Detection) { got = append(got, x) }
	return d, &got
}

func TestDetectionNeedsConsecutiveReadingsAndFiresOncePerPresence(t *testing.T) {
	d, got := newDetector(conf.Detection{ThresholdM: 1, Consecutive: 2})
	t0 := time.Now()
	seq := []float64{2.5, 0.8, 1.5, 0.9, 0.7, 0.5, 0.4, 3.0, 0.6, 0.6}
	for i, v := range seq {
		d.Observe(distance("ir1", v, t0.Add(time.Duration(i)*time.Second)))
	}
	// 0.8 alone is a flicker; 0.9, 0.7 fire; staying near does not fire
	// again; after 3.0 (gone) the next 0.6, 0.6 fire again.
	if len(*got) != 2 || *(*got)[0].Distance != 0.7 || !(*got)[1].At.Equal(t0.Add(9*time.Second)) {
		t.Fatalf("detections %+v", *got)
	}
}

func TestMinDurationAndPerDeviceOverrides(t *testing.T) {
	d, got := newDetector(conf.Detection{ThresholdM: 1, Consecutive: 100, MinDuration: 2 * time.Second,
		Devices: map[string]conf.DetectionDevice{"close": {ThresholdM: 0.3, Consecutive: 1}}})
	t0 := time.Now()
	d.Observe(distance("ir1", 0.5, t0))
	d.Observe(distance("ir1", 0.5, t0.Add(time.Second)))
	if len(*got) != 0 {
		t.Fatal("fired before min_duration")
	}
	d.Observe(distance("ir1", 0.5, t0.Add(2*time.Second)))
	if len(*got) != 1 {
		t.Fatal("did not fire at min_duration")
	}
	d.Observe(distance("close", 0.5, t0))
	d.Observe(distance("close", 0.2, t0))
	if len(*got) != 2 || (*got)[1].Sensor != "close" {
		t.Fatalf("override: %+v", *got)
	}
}

func TestDisarmedSitesDoNotDetectAndMotionMessagesCount(t *testing.T) {
	d, got := newDetector(conf.Detection{ThresholdM: 1, Consecutive: 1})
	var modes []bool
	d.Mode = func(_ string, armed bool) { modes = append(modes, armed) }
	d.ModeCommand("vigil/home/mode/set", []byte("disarm"))
	d.Observe(distance("ir1", 0.2, time.Now()))
	if len(*got) != 0 {
		t.Fatal("a disarmed site detected")
	}
	d.ModeCommand("vigil/home/mode/set", []byte("arm"))
	d.Observe(distance("ir1", 3, time.Now()))
	pir := telemetry.Event{DeviceID: "pir", Site: "home", Type: "motion", Time: time.Now(), Reading: &telemetry.Reading{Time: time.Now(), Value: 1}}
	d.Observe(pir)
	if len(*got) != 1 || (*got)[0].Sensor != "pir" || (*got)[0].Distance != nil {
		t.Fatalf("motion detector: %+v", *got)
	}
	if len(modes) != 2 || modes[0] || !modes[1] {
		t.Errorf("mode changes %v", modes)
	}
	d.ModeCommand("vigil/home/mode/set", []byte("maybe")) // ignored, logged
}

func TestArmingWhileSomeoneIsThereDetectsAtTheNextReading(t *testing.T) {
	d, got := newDetector(conf.Detection{ThresholdM: 1, Consecutive: 2})
	d.ModeCommand("vigil/home/mode/set", []byte("disarm"))
	t0 := time.Now()
	for i := range 5 {
		d.Observe(distance("ir1", 0.5, t0.Add(time.Duration(i)*time.Second)))
	}
	d.ModeCommand("vigil/home/mode/set", []byte("arm"))
	d.Observe(distance("ir1", 0.5, t0.Add(6*time.Second)))
	if len(*got) != 1 {
		t.Fatalf("detections after arming with someone present: %d", len(*got))
	}
}

// A discovered occupancy sensor detects on its first "on"; a door contact
// only in a zone whose triggers name doors.
func TestDiscoveredBinarySensors(t *testing.T) {
	d, got := newDetector(conf.Detection{ThresholdM: 1, Consecutive: 2, Zones: map[string]conf.Zone{
		"hall": {Cameras: []string{"cam1"}, Triggers: []string{"door"}},
	}})
	t0 := time.Now()
	meta := func(id, zone string) telemetry.Event {
		return telemetry.Event{DeviceID: id, Site: "home", Meta: &telemetry.Meta{Zone: zone, Discovery: &telemetry.Discovery{Component: "binary_sensor"}}}
	}
	bin := func(id, typ string, v float64, s int) telemetry.Event {
		at := t0.Add(time.Duration(s) * time.Second)
		return telemetry.Event{DeviceID: id, Site: "home", Type: typ, Time: at, Reading: &telemetry.Reading{Time: at, Value: v}}
	}
	d.Observe(meta("pir", "hall"))
	d.Observe(meta("door-hall", "hall"))
	d.Observe(meta("door-garage", "garage"))
	d.Observe(bin("pir", "occupancy", 0, 0))
	d.Observe(bin("door-garage", "door", 1, 1))
	if len(*got) != 0 {
		t.Fatalf("detections from occupancy off or a door in a zone without door triggers: %+v", *got)
	}
	d.Observe(bin("pir", "occupancy", 1, 2))
	d.Observe(bin("door-hall", "door", 1, 3))
	if len(*got) != 2 || (*got)[0].Sensor != "pir" || (*got)[1].Sensor != "door-hall" {
		t.Fatalf("detections %+v, want pir then door-hall", *got)
	}
	// A discovered distance sensor (a radar's target distance, in its own
	// units) is not the paper's IR sensor.
	d.Observe(meta("radar", "hall"))
	for i := range 3 {
		d.Observe(bin("radar", "distance", 0.1, 4+i))
	}
	if len(*got) != 2 {
		t.Fatalf("a discovered distance sensor detected: %+v", *got)
	}
	// A motion reading on Vigil's own topic still needs consecutive ones.
	d.Observe(bin("vigil-pir", "motion", 1, 4))
	if len(*got) != 2 {
		t.Fatalf("one motion reading of a Vigil device detected: %+v", *got)
	}
}
