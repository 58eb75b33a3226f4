// Package detect turns sensor readings into intrusion events: a distance
// below a threshold (IR sensors, metres) or a motion detector's "yes", seen
// in enough consecutive readings or for long enough, while the sensor's
// site is armed. Sites start armed and are armed or disarmed over the API
// or MQTT.
package detect

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/telemetry"
)

// Detection is a sensor's detection, before cameras are chosen.
type Detection struct {
	Site     string
	Sensor   string
	At       time.Time
	Distance *float64 // for distance sensors
}

// Sites is the site store the detector needs.
type Sites interface {
	EnsureSite(ctx context.Context, name string) (Site, error)
	SetArmed(ctx context.Context, name string, armed bool) (Site, error)
}

// Detector watches readings and reports detections to Out.
type Detector struct {
	cfg   conf.Detection
	sites Sites
	log   *slog.Logger
	// Out receives detections; it must not block for long.
	Out func(Detection)
	// Mode, if set, is told the armed state of a site when it changes (to
	// publish the retained vigil/<site>/mode).
	Mode func(site string, armed bool)

	mu      sync.Mutex
	sensors map[string]*sensorState
	armed   map[string]bool
	info    map[string]sensorInfo
}

// sensorInfo is what a device's meta says that detection needs.
type sensorInfo struct {
	zone       string
	discovered bool // read through Home Assistant discovery: one "on" is a detection
}

// Presence types: readings of 1 (someone there) or 0, from Vigil's motion
// topic and from discovered binary sensors (their device class).
var presence = map[string]bool{telemetry.TypeMotion: true, "occupancy": true, "presence": true}

// contacts are binary sensors that detect only in a zone whose triggers
// name them (a door opening is a visitor as often as an intruder).
var contacts = map[string]bool{"door": true, "window": true, "opening": true, "garage_door": true}

type sensorState struct {
	below          int
	since          time.Time
	fired          bool // reported; quiet until the sensor sees nobody again
	disarmedLogged bool
}

// New returns a detector.
func New(cfg conf.Detection, sites Sites, log *slog.Logger) *Detector {
	return &Detector{cfg: cfg, sites: sites, log: log, sensors: map[string]*sensorState{}, armed: map[string]bool{}, info: map[string]sensorInfo{}}
}

// Observe looks at one telemetry event; it is a telemetry.Pipeline
// observer.
func (d *Detector) Observe(ev telemetry.Event) {
	if ev.Meta != nil {
		d.mu.Lock()
		d.info[ev.DeviceID] = sensorInfo{zone: ev.Meta.Zone, discovered: ev.Meta.Discovery != nil}
		d.mu.Unlock()
		return
	}
	r := ev.Reading
	if r == nil || (ev.Type != telemetry.TypeDistance && !presence[ev.Type] && !contacts[ev.Type]) {
		return
	}
	threshold, consecutive := d.cfg.ThresholdM, d.cfg.Consecutive
	d.mu.Lock()
	info := d.info[ev.DeviceID]
	d.mu.Unlock()
	if ev.Type == telemetry.TypeDistance && info.discovered {
		return // a discovered distance sensor measures in its own units, for its own purpose
	}
	if ev.Type != telemetry.TypeDistance {
		if contacts[ev.Type] && !d.zoneTriggers(ev.DeviceID, info.zone, ev.Type) {
			return
		}
		if info.discovered {
			// A discovered binary sensor says "on" once, when it starts.
			consecutive = 1
		}
	}
	if o, ok := d.cfg.Devices[ev.DeviceID]; ok {
		if o.ThresholdM > 0 {
			threshold = o.ThresholdM
		}
		if o.Consecutive > 0 {
			consecutive = o.Consecutive
		}
	}
	near := r.Value >= 1
	if ev.Type == telemetry.TypeDistance {
		near = r.Value < threshold
	}
	d.mu.Lock()
	st := d.sensors[ev.DeviceID]
	if st == nil {
		st = &sensorState{}
		d.sensors[ev.DeviceID] = st
	}
	if !near {
		*st = sensorState{}
		d.mu.Unlock()
		return
	}
	st.below++
	if st.since.IsZero() {
		st.since = r.Time
	}
	fire := !st.fired && (st.below >= consecutive || (d.cfg.MinDuration > 0 && r.Time.Sub(st.since) >= d.cfg.MinDuration))
	d.mu.Unlock()
	if !fire {
		return
	}
	// Presence on a disarmed site is not a detection; if the site is armed
	// while the person is still there, their next reading is.
	if !d.Armed(ev.Site) {
		d.mu.Lock()
		logIt := !st.disarmedLogged
		st.disarmedLogged = true
		d.mu.Unlock()
		if logIt {
			d.log.Info("presence seen on a disarmed site", "site", ev.Site, "sensor", ev.DeviceID)
		}
		return
	}
	d.mu.Lock()
	st.fired = true
	d.mu.Unlock()
	det := Detection{Site: ev.Site, Sensor: ev.DeviceID, At: r.Time}
	attrs := []any{"site", ev.Site, "sensor", ev.DeviceID}
	if ev.Type == telemetry.TypeDistance {
		v := r.Value
		det.Distance = &v
		attrs = append(attrs, "distance_m", v)
	}
	d.log.Info("detected", attrs...)
	if d.Out != nil {
		d.Out(det)
	}
}

// zoneTriggers reports whether a contact of type typ records in the
// sensor's zone: its meta's zone, or a configured zone that lists it.
func (d *Detector) zoneTriggers(sensor, zone, typ string) bool {
	if z, ok := d.cfg.Zones[zone]; ok && slices.Contains(z.Triggers, typ) {
		return true
	}
	for _, z := range d.cfg.Zones {
		if slices.Contains(z.Sensors, sensor) && slices.Contains(z.Triggers, typ) {
			return true
		}
	}
	return false
}

// Armed reports whether a site is armed, creating new sites armed.
func (d *Detector) Armed(site string) bool {
	d.mu.Lock()
	a, ok := d.armed[site]
	d.mu.Unlock()
	if ok {
		return a
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := d.sites.EnsureSite(ctx, site)
	if err != nil {
		d.log.Error("cannot read site; treating it as armed", "site", site, "error", err)
		return true
	}
	d.mu.Lock()
	d.armed[site] = s.Armed
	d.mu.Unlock()
	if d.Mode != nil {
		d.Mode(site, s.Armed)
	}
	return s.Armed
}

// SetArmed arms or disarms a site.
func (d *Detector) SetArmed(ctx context.Context, site string, armed bool) (Site, error) {
	s, err := d.sites.SetArmed(ctx, site, armed)
	if err != nil {
		return s, err
	}
	d.mu.Lock()
	d.armed[site] = armed
	d.mu.Unlock()
	d.log.Info("site mode", "site", site, "armed", armed)
	if d.Mode != nil {
		d.Mode(site, armed)
	}
	return s, nil
}

// ModeKnown takes a site's mode as another node set it (the retained
// vigil/<site>/mode), without storing or announcing it again.
func (d *Detector) ModeKnown(topic string, payload []byte) {
	parts := strings.Split(topic, "/")
	mode := string(payload)
	if len(parts) != 3 || parts[0] != "vigil" || parts[2] != "mode" || (mode != "armed" && mode != "disarmed") {
		return
	}
	d.mu.Lock()
	d.armed[parts[1]] = mode == "armed"
	d.mu.Unlock()
}

// ModeCommand handles a message on vigil/<site>/mode/set: "arm" or
// "armed" arms, "disarm" or "disarmed" disarms.
func (d *Detector) ModeCommand(topic string, payload []byte) {
	parts := strings.Split(topic, "/")
	if len(parts) != 4 || parts[0] != "vigil" || parts[2] != "mode" || parts[3] != "set" {
		return
	}
	var armed bool
	switch strings.ToLower(strings.TrimSpace(string(payload))) {
	case "arm", "armed", "on":
		armed = true
	case "disarm", "disarmed", "off":
	default:
		d.log.Warn("mode command not understood (want arm or disarm)", "topic", topic)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := d.SetArmed(ctx, parts[1], armed); err != nil {
		d.log.Error("set mode", "site", parts[1], "error", err)
	}
}
