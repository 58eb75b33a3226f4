// Package sim simulates fleets of MQTT devices: temperature (the paper's),
// humidity, IR distance and door sensors with MAC-derived client ids, value
// models, fault injection and a timeline of events, each device a real
// MQTT client (paho.golang autopaho) with reconnect, failover and a last
// will. A legacy mode publishes the paper's topic and payload byte for byte.
package sim

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/mqttconn"
)

// Scenario describes a simulation: where to connect, the fleets, and a
// timeline of events. It is what a --scenario YAML file holds; the flags of
// `vigil sim` build a one-fleet scenario.
type Scenario struct {
	Brokers     []string      `yaml:"brokers"`       // broker URLs, tried in order (failover)
	QoS         int           `yaml:"qos"`           // 0, 1 or 2
	Username    string        `yaml:"username"`      // credentials for every device
	Password    string        `yaml:"password"`      //
	TLS         mqttconn.TLS  `yaml:"tls"`           // for mqtts:// and wss:// brokers
	Seed        uint64        `yaml:"seed"`          // makes MACs and values reproducible
	Duration    time.Duration `yaml:"duration"`      // 0: until interrupted
	MACFromHost bool          `yaml:"mac_from_host"` // the host NIC's MAC plus an index, as in the paper
	Legacy      bool          `yaml:"legacy"`        // the paper's topic and payload, byte for byte
	ConnectRate int           `yaml:"connect_rate"`  // new connections per second while starting
	KeepAlive   time.Duration `yaml:"keep_alive"`    // MQTT keep-alive
	Fleets      []Fleet       `yaml:"fleets"`
	Timeline    []Step        `yaml:"timeline"`
}

// Fleet is a group of identical devices.
type Fleet struct {
	Name   string        `yaml:"name"`
	Site   string        `yaml:"site"`
	Type   string        `yaml:"type"` // temperature, humidity, distance, door
	Count  int           `yaml:"count"`
	Period time.Duration `yaml:"period"`
	Retain bool          `yaml:"retain"` // publish readings retained
	Units  string        `yaml:"units"`  // default by type
	Model  Model         `yaml:"model"`
	Faults Faults        `yaml:"faults"`
	Camera CameraConfig  `yaml:"camera"` // type camera only
}

// Model generates values.
type Model struct {
	Kind     string        `yaml:"kind"` // uniform, walk, sine, binary
	Min      float64       `yaml:"min"`
	Max      float64       `yaml:"max"`
	Step     float64       `yaml:"step"`     // walk: largest change per reading
	Cycle    time.Duration `yaml:"cycle"`    // sine: period of the wave (24h: a daily cycle)
	P        float64       `yaml:"p"`        // binary: probability of 1 per reading
	Decimals int           `yaml:"decimals"` // rounding
}

// Faults are random faults, each drawn per reading.
type Faults struct {
	Spike             float64       `yaml:"spike"`              // probability that a reading is an outlier
	Dropout           float64       `yaml:"dropout"`            // probability of going silent (still connected)
	DropoutDuration   time.Duration `yaml:"dropout_duration"`   //
	Stuck             float64       `yaml:"stuck"`              // probability that the value freezes
	StuckDuration     time.Duration `yaml:"stuck_duration"`     //
	Disconnect        float64       `yaml:"disconnect"`         // probability of losing the network (last will fires)
	DisconnectOffline time.Duration `yaml:"disconnect_offline"` // how long the network stays down
}

// Step is a timeline event applied to a fraction of a fleet (or of all
// fleets when Fleet is empty).
type Step struct {
	At       time.Duration `yaml:"at"`
	Fleet    string        `yaml:"fleet"`
	Fraction float64       `yaml:"fraction"` // 0 < f <= 1; default 1
	Action   string        `yaml:"action"`   // disconnect, dropout, stuck, spike, intrusion
	Duration time.Duration `yaml:"duration"` // how long the fault or intruder lasts
	// DistanceM is how close an intruder comes (intrusion); default 0.6.
	DistanceM float64 `yaml:"distance_m"`
	// Every repeats the step (0: once).
	Every time.Duration `yaml:"every"`
}

// Device types.
const (
	TypeTemperature = "temperature"
	TypeHumidity    = "humidity"
	TypeDistance    = "distance"
	TypeDoor        = "door"
	// TypeCamera is the paper's Raspberry Pi: an IR distance sensor that
	// reports on vigil/<site>/<id>/motion, and a camera that streams
	// RTP/JPEG when the coordinator tells it to.
	TypeCamera = "camera"
)

// Types lists the built-in device types.
var Types = []string{TypeTemperature, TypeHumidity, TypeDistance, TypeDoor, TypeCamera}

// Actions a timeline step can take.
var Actions = []string{"disconnect", "dropout", "stuck", "spike", "intrusion"}

// TypeDefaults returns the fleet defaults of a device type. Temperature is
// the paper's sensor: uniform 10-35 °C, two decimals, every 5 s, "Celsius".
func TypeDefaults(typ string) Fleet {
	switch typ {
	case TypeHumidity:
		return Fleet{Type: typ, Period: 10 * time.Second, Units: "%",
			Model: Model{Kind: "walk", Min: 30, Max: 70, Step: 0.5, Decimals: 1}}
	case TypeDistance: // an IR distance sensor: nobody near, 2-4 m
		return Fleet{Type: typ, Period: time.Second, Units: "m",
			Model: Model{Kind: "walk", Min: 2, Max: 4, Step: 0.05, Decimals: 2}}
	case TypeCamera: // IR distance every 500 ms; 640x480 JPEG at 15 fps
		return Fleet{Type: typ, Period: 500 * time.Millisecond, Units: "m",
			Model:  Model{Kind: "walk", Min: 2, Max: 4, Step: 0.05, Decimals: 2},
			Camera: CameraConfig{Width: 640, Height: 480, FPS: 15, Quality: 70, PreRoll: 5 * time.Second}}
	case TypeDoor: // a contact: 1 open, 0 closed
		return Fleet{Type: typ, Period: 30 * time.Second, Units: "open",
			Model: Model{Kind: "binary", P: 0.05}}
	default:
		return Fleet{Type: TypeTemperature, Period: 5 * time.Second, Units: "Celsius",
			Model: Model{Kind: "uniform", Min: 10, Max: 35, Decimals: 2}}
	}
}

// NewScenario returns a scenario with the global defaults and no fleets.
func NewScenario() *Scenario {
	return &Scenario{
		Brokers:     []string{"mqtt://127.0.0.1:1883"},
		QoS:         1,
		Seed:        1,
		ConnectRate: 1000,
		KeepAlive:   30 * time.Second,
	}
}

// LoadScenario reads a scenario file strictly (unknown keys are errors) on
// top of NewScenario's defaults, fills in each fleet's type defaults and
// validates it.
func LoadScenario(path string) (*Scenario, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read scenario: %w", err)
	}
	sc := NewScenario()
	if err := conf.DecodeStrict(data, sc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	sc.ApplyDefaults()
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return sc, nil
}

// ApplyDefaults fills each fleet's unset fields from its type's defaults.
func (sc *Scenario) ApplyDefaults() {
	for i := range sc.Fleets {
		f := &sc.Fleets[i]
		if f.Type == "" {
			f.Type = TypeTemperature
		}
		d := TypeDefaults(f.Type)
		if f.Name == "" {
			f.Name = fmt.Sprintf("fleet%d", i+1)
		}
		if f.Site == "" {
			f.Site = "sim"
		}
		if f.Count == 0 {
			f.Count = 1
		}
		if f.Period == 0 {
			f.Period = d.Period
		}
		if f.Units == "" {
			f.Units = d.Units
		}
		if f.Model.Kind == "" {
			f.Model = d.Model
		}
		if f.Model.Kind == "sine" && f.Model.Cycle == 0 {
			f.Model.Cycle = 24 * time.Hour
		}
		if f.Model.Kind == "walk" && f.Model.Step == 0 {
			f.Model.Step = (f.Model.Max - f.Model.Min) / 50
		}
		if f.Faults.DropoutDuration == 0 {
			f.Faults.DropoutDuration = 30 * time.Second
		}
		if f.Faults.StuckDuration == 0 {
			f.Faults.StuckDuration = 2 * time.Minute
		}
		if f.Faults.DisconnectOffline == 0 {
			f.Faults.DisconnectOffline = 10 * time.Second
		}
		if f.Type == TypeCamera {
			c, dc := &f.Camera, d.Camera
			if c.Width == 0 || c.Height == 0 {
				c.Width, c.Height = dc.Width, dc.Height
			}
			if c.FPS == 0 {
				c.FPS = dc.FPS
			}
			if c.Quality == 0 {
				c.Quality = dc.Quality
			}
		}
	}
	for i := range sc.Timeline {
		if sc.Timeline[i].Fraction == 0 {
			sc.Timeline[i].Fraction = 1
		}
		if sc.Timeline[i].Duration == 0 {
			sc.Timeline[i].Duration = 10 * time.Second
		}
		if sc.Timeline[i].DistanceM == 0 {
			sc.Timeline[i].DistanceM = 0.6
		}
	}
}

// Validate checks the scenario and says which field is wrong.
func (sc *Scenario) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(sc.Brokers) == 0 {
		bad("brokers: at least one broker URL is needed")
	}
	for _, b := range sc.Brokers {
		if _, err := mqttconn.ParseBrokerURL(b); err != nil {
			bad("brokers: %v", err)
		}
	}
	if sc.QoS < 0 || sc.QoS > 2 {
		bad("qos: %d is not 0, 1 or 2", sc.QoS)
	}
	if sc.ConnectRate < 1 {
		bad("connect_rate: %d must be at least 1", sc.ConnectRate)
	}
	if sc.KeepAlive < time.Second || sc.KeepAlive > 18*time.Hour {
		bad("keep_alive: %v is outside 1s..18h", sc.KeepAlive)
	}
	if (sc.TLS.Cert == "") != (sc.TLS.Key == "") {
		bad("tls: cert and key go together")
	}
	if len(sc.Fleets) == 0 {
		bad("fleets: at least one fleet is needed")
	}
	total := 0
	names := map[string]bool{}
	for i, f := range sc.Fleets {
		at := fmt.Sprintf("fleets[%d] (%s)", i, f.Name)
		if names[f.Name] {
			bad("%s: duplicate fleet name", at)
		}
		names[f.Name] = true
		if !slices.Contains(Types, f.Type) {
			bad("%s: type %q is not one of %s", at, f.Type, strings.Join(Types, ", "))
		}
		if !vigil.ValidName(f.Site) {
			bad("%s: site %q must be 1-64 letters, digits, '-', '_' or '.'", at, f.Site)
		}
		if f.Count < 1 || f.Count > 100000 {
			bad("%s: count %d is outside 1..100000", at, f.Count)
		}
		total += f.Count
		if f.Period < 10*time.Millisecond {
			bad("%s: period %v is below 10ms", at, f.Period)
		}
		m := f.Model
		switch m.Kind {
		case "uniform", "walk", "sine":
			if m.Max < m.Min {
				bad("%s: model max %v is below min %v", at, m.Max, m.Min)
			}
		case "binary":
			if m.P < 0 || m.P > 1 {
				bad("%s: model p %v is outside 0..1", at, m.P)
			}
		default:
			bad("%s: model kind %q is not one of uniform, walk, sine, binary", at, m.Kind)
		}
		if c := f.Camera; f.Type == TypeCamera && (c.Width < 16 || c.Width > 4096 || c.Height < 16 || c.Height > 4096 || c.FPS < 1 || c.FPS > 60 || c.Quality < 1 || c.Quality > 100 || c.PreRoll < 0 || c.PreRoll > time.Minute) {
			bad("%s: camera needs width and height 16..4096, fps 1..60, quality 1..100, pre_roll 0..1m", at)
		}
		if m.Decimals < 0 || m.Decimals > 6 {
			bad("%s: model decimals %d is outside 0..6", at, m.Decimals)
		}
		for name, p := range map[string]float64{"spike": f.Faults.Spike, "dropout": f.Faults.Dropout, "stuck": f.Faults.Stuck, "disconnect": f.Faults.Disconnect} {
			if p < 0 || p > 1 {
				bad("%s: faults.%s %v is outside 0..1", at, name, p)
			}
		}
	}
	if total > 100000 {
		bad("fleets: %d devices in all; the limit is 100000", total)
	}
	for i, st := range sc.Timeline {
		at := fmt.Sprintf("timeline[%d]", i)
		if st.Fleet != "" && !names[st.Fleet] {
			bad("%s: no fleet named %q", at, st.Fleet)
		}
		if !slices.Contains(Actions, st.Action) {
			bad("%s: action %q is not one of %s", at, st.Action, strings.Join(Actions, ", "))
		}
		if st.Fraction <= 0 || st.Fraction > 1 {
			bad("%s: fraction %v is outside (0, 1]", at, st.Fraction)
		}
		if st.At < 0 || st.Every < 0 {
			bad("%s: at and every must not be negative", at)
		}
		if st.Every > 0 && st.Every < st.Duration {
			bad("%s: every (%v) is shorter than duration (%v)", at, st.Every, st.Duration)
		}
	}
	return errors.Join(errs...)
}

// Devices returns the total number of devices.
func (sc *Scenario) Devices() int {
	n := 0
	for _, f := range sc.Fleets {
		n += f.Count
	}
	return n
}
