package hadisc

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vigilhq/vigil/internal/telemetry"
)

// Vigil in Home Assistant: device-based discovery configs (retained) for
// Vigil's devices, each site (an alarm panel), each camera (motion, an
// intrusion event, the latest thumbnail) and Vigil itself (audit grade,
// agents, broker). States go on topics under StateRoot, where devices
// cannot publish (their accounts own vigil/<site>/<device>/...); arming
// goes to vigil/<site>/mode/set, which the broker's ACL guards as it does
// for any client.

// StateRoot is the topic tree of the states Vigil publishes for Home
// Assistant.
const StateRoot = "vigil-ha"

// OriginName is the origin of Vigil's configs: the consumer skips them.
const OriginName = "Vigil"

// PublisherConfig configures a Publisher.
type PublisherConfig struct {
	Prefix string
	// Availability is the topic that says "online" while Vigil runs and
	// "offline" (its last will) when it does not.
	Availability string
	Version      string
	// Publish sends a message (retained or not) on Vigil's own connection.
	Publish func(topic string, payload []byte, retain bool) error
	// ModeCommand is where a site is armed ("arm") and disarmed ("disarm").
	ModeCommand func(site string) string
	Interval    time.Duration // how often states are sent at most (1 s)
}

// Health is Vigil's own state as Home Assistant shows it.
type Health struct {
	Grade  string `json:"grade"` // the latest self-audit's grade, "" before one
	Agents int    `json:"agents"`
	Broker string `json:"broker"` // ON while the broker is up
}

// Publisher announces Vigil to Home Assistant and keeps its states.
type Publisher struct {
	cfg PublisherConfig
	log *slog.Logger

	mu      sync.Mutex
	devices map[string]telemetry.Device // by id: Vigil's own devices and cameras
	foreign map[string]bool             // devices read through discovery: not announced back
	sites   map[string]*siteState
	health  Health
	// pending states: topic -> payload, sent on the next flush.
	pending map[string][]byte
	// announced: the config topics published in this run; found: Vigil's
	// configs retained from before, removed when no longer wanted.
	announced map[string]string // config topic -> payload
	found     map[string]bool
	again     chan struct{} // Announce asked for (cap 1)
	stop      chan struct{}
	done      chan struct{}
}

type siteState struct {
	armed     bool
	recording map[string]bool // event ids under way
}

// NewPublisher returns a publisher; Start runs it.
func NewPublisher(cfg PublisherConfig, log *slog.Logger) *Publisher {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	return &Publisher{cfg: cfg, log: log, devices: map[string]telemetry.Device{}, foreign: map[string]bool{}, sites: map[string]*siteState{},
		pending: map[string][]byte{}, announced: map[string]string{}, found: map[string]bool{},
		again: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
}

// Start publishes the configs and then the states every Interval.
func (p *Publisher) Start() {
	p.announce()
	go func() {
		defer close(p.done)
		t := time.NewTicker(p.cfg.Interval)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				p.flush()
			case <-p.again:
				p.announce()
			}
		}
	}()
}

// Close stops publishing (the configs stay, retained).
func (p *Publisher) Close() {
	select {
	case <-p.stop:
		return
	default:
		close(p.stop)
	}
	<-p.done
	p.flush()
}

// Device makes a device known (a new one is announced on the next flush).
func (p *Publisher) Device(d telemetry.Device) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if d.Meta != nil && d.Meta.Discovery != nil {
		p.foreign[d.ID] = true // announced to Home Assistant by whoever made it
		delete(p.devices, d.ID)
		return
	}
	p.devices[d.ID] = d
	if d.LastValue != nil && !isCamera(d) {
		p.pending[deviceStateTopic(d)] = stateValue(d, *d.LastValue)
	}
}

// Remove forgets a deleted device: its config is removed on the next flush.
func (p *Publisher) Remove(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if d, ok := p.devices[id]; ok {
		delete(p.devices, id)
		delete(p.pending, deviceStateTopic(d))
	}
	delete(p.foreign, id)
}

// Observe takes a telemetry event: a reading's value is sent (at most once
// per Interval), a new device or meta announced.
func (p *Publisher) Observe(ev telemetry.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ev.Meta != nil && ev.Meta.Discovery != nil {
		p.foreign[ev.DeviceID] = true
		delete(p.devices, ev.DeviceID)
		return
	}
	if p.foreign[ev.DeviceID] {
		return
	}
	d, known := p.devices[ev.DeviceID]
	if !known {
		d = telemetry.Device{ID: ev.DeviceID, Site: ev.Site}
	}
	if ev.Site != "" {
		d.Site = ev.Site
	}
	if ev.Type != "" {
		d.Type = ev.Type
	}
	if ev.Meta != nil {
		d.Meta = ev.Meta
	}
	if r := ev.Reading; r != nil {
		v := r.Value
		d.LastValue = &v
		if r.Units != "" {
			d.Units = r.Units
		}
	}
	p.devices[ev.DeviceID] = d
	if ev.Reading != nil && !isCamera(d) {
		p.pending[deviceStateTopic(d)] = stateValue(d, ev.Reading.Value)
	}
}

// Site says a site's mode.
func (p *Publisher) Site(name string, armed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.site(name)
	s.armed = armed
	p.pending[alarmTopic(name)] = []byte(s.state())
}

func (p *Publisher) site(name string) *siteState {
	s := p.sites[name]
	if s == nil {
		s = &siteState{armed: true, recording: map[string]bool{}}
		p.sites[name] = s
	}
	return s
}

func (s *siteState) state() string {
	switch {
	case !s.armed:
		return "disarmed"
	case len(s.recording) > 0:
		return "triggered"
	}
	return "armed_away"
}

// Event takes an intrusion event as it is saved: a new one fires each of
// its cameras' event entity and turns their motion on (the site is
// triggered); a finished one turns them off.
func (p *Publisher) Event(id, site, sensor string, cameras []string, recording bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.site(site)
	wasRecording := s.recording[id]
	if recording {
		s.recording[id] = true
	} else {
		delete(s.recording, id)
	}
	p.pending[alarmTopic(site)] = []byte(s.state())
	for _, cam := range cameras {
		if recording && !wasRecording {
			b, _ := json.Marshal(map[string]string{"event_type": "intrusion", "event_id": id, "sensor": sensor})
			p.pending[cameraTopic(site, cam, "event")] = b
		}
		p.pending[cameraTopic(site, cam, "motion")] = []byte(onOff(recording))
	}
}

// Thumbnail sends a camera's latest thumbnail (a JPEG).
func (p *Publisher) Thumbnail(site, camera string, jpeg []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pending[cameraTopic(site, camera, "thumbnail")] = jpeg
}

// SetHealth says Vigil's own state.
func (p *Publisher) SetHealth(h Health) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if h != p.health {
		p.health = h
		b, _ := json.Marshal(h)
		p.pending[StateRoot+"/health"] = b
	}
}

// Found takes a discovery config seen under the prefix: one of Vigil's
// from an earlier run is remembered, to be removed if no longer wanted.
func (p *Publisher) Found(topic string, payload []byte) {
	t, ok := ParseTopic(p.cfg.Prefix, topic)
	if !ok || t.Component != "device" || !strings.HasPrefix(t.ObjectID, "vigil_") || len(payload) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ours := p.announced[topic]; !ours {
		p.found[topic] = true
	}
}

// Announce has every config and state published again, soon (Home
// Assistant restarted: its birth message). It does not wait: it may be
// called on the connection's delivery goroutine, which must not wait for
// the broker's acknowledgements.
func (p *Publisher) Announce() {
	select {
	case p.again <- struct{}{}:
	default:
	}
}

// announce publishes every config again, and the current states.
func (p *Publisher) announce() {
	p.mu.Lock()
	p.announced = map[string]string{}
	for name, s := range p.sites {
		p.pending[alarmTopic(name)] = []byte(s.state())
	}
	for _, d := range p.devices {
		if d.LastValue != nil && !isCamera(d) {
			p.pending[deviceStateTopic(d)] = stateValue(d, *d.LastValue)
		}
	}
	if p.health != (Health{}) {
		b, _ := json.Marshal(p.health)
		p.pending[StateRoot+"/health"] = b
	}
	p.mu.Unlock()
	p.flush()
}

// Configs returns the config topics and payloads Vigil wants published
// now.
func (p *Publisher) Configs() map[string][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.configsLocked()
}

func (p *Publisher) configsLocked() map[string][]byte {
	out := map[string][]byte{}
	add := func(objectID string, cfg map[string]any) {
		b, _ := json.Marshal(cfg)
		out[p.cfg.Prefix+"/device/"+objectID+"/config"] = b
	}
	sites := map[string]bool{}
	for name := range p.sites {
		sites[name] = true
	}
	for _, d := range p.devices {
		if d.Site != "" {
			sites[d.Site] = true
		}
		if isCamera(d) {
			add(objectID("vigil_cam", d.Site, d.ID), p.cameraConfig(d))
		} else {
			add(objectID("vigil_dev", d.Site, d.ID), p.deviceConfig(d))
		}
	}
	for site := range sites {
		add(objectID("vigil_site", site), p.siteConfig(site))
	}
	add(objectID("vigil_server"), p.serverConfig())
	return out
}

// flush publishes new and changed configs, removes unwanted ones, then
// sends the pending states.
func (p *Publisher) flush() {
	p.mu.Lock()
	want := p.configsLocked()
	var topics []string
	for t, b := range want {
		if p.announced[t] != string(b) {
			topics = append(topics, t)
		}
	}
	slices.Sort(topics)
	var gone []string
	for t := range p.found {
		if _, ok := want[t]; !ok {
			gone = append(gone, t)
		}
		delete(p.found, t)
	}
	for t := range p.announced {
		if _, ok := want[t]; !ok {
			gone = append(gone, t)
			delete(p.announced, t)
		}
	}
	states := p.pending
	p.pending = map[string][]byte{}
	p.mu.Unlock()

	// Configs first: an entity must exist before its state means anything.
	for _, t := range topics {
		if err := p.cfg.Publish(t, want[t], true); err != nil {
			p.log.Warn("publish a Home Assistant config", "topic", t, "error", err)
			continue
		}
		p.mu.Lock()
		p.announced[t] = string(want[t])
		p.mu.Unlock()
	}
	for _, t := range gone {
		if err := p.cfg.Publish(t, nil, true); err != nil {
			p.log.Warn("remove a Home Assistant config", "topic", t, "error", err)
		}
	}
	keys := slices.Sorted(maps.Keys(states))
	for _, t := range keys {
		// States are retained: Home Assistant restarting shows them at once.
		if err := p.cfg.Publish(t, states[t], true); err != nil {
			p.log.Debug("publish a Home Assistant state", "topic", t, "error", err)
		}
	}
}

func (p *Publisher) origin() map[string]any {
	return map[string]any{"name": OriginName, "sw_version": p.cfg.Version, "support_url": "https://github.com/vigilhq/vigil"}
}

func (p *Publisher) availability() []any {
	return []any{map[string]any{"topic": p.cfg.Availability, "payload_available": "online", "payload_not_available": "offline"}}
}

func (p *Publisher) base(dev map[string]any, cmps map[string]any) map[string]any {
	return map[string]any{"device": dev, "origin": p.origin(), "availability": p.availability(), "components": cmps}
}

func (p *Publisher) serverConfig() map[string]any {
	dev := map[string]any{"identifiers": []string{"vigil_server"}, "name": "Vigil", "manufacturer": "Vigil", "model": "Vigil", "sw_version": p.cfg.Version}
	h := StateRoot + "/health"
	return p.base(dev, map[string]any{
		"audit_grade": map[string]any{"platform": "sensor", "unique_id": "vigil_server_audit_grade", "name": "Audit grade",
			"state_topic": h, "value_template": "{{ value_json.grade }}", "icon": "mdi:shield-check", "entity_category": "diagnostic"},
		"agents": map[string]any{"platform": "sensor", "unique_id": "vigil_server_agents", "name": "Agents", "state_class": "measurement",
			"state_topic": h, "value_template": "{{ value_json.agents }}", "icon": "mdi:video-input-component"},
		"broker": map[string]any{"platform": "binary_sensor", "unique_id": "vigil_server_broker", "name": "Broker", "device_class": "connectivity",
			"state_topic": h, "value_template": "{{ value_json.broker }}", "entity_category": "diagnostic"},
	})
}

func (p *Publisher) siteConfig(site string) map[string]any {
	id := objectID("vigil_site", site)
	dev := map[string]any{"identifiers": []string{id}, "name": "Vigil " + site, "manufacturer": "Vigil", "model": "Site", "via_device": "vigil_server"}
	cmd := "vigil/" + site + "/mode/set"
	if p.cfg.ModeCommand != nil {
		cmd = p.cfg.ModeCommand(site)
	}
	return p.base(dev, map[string]any{
		"alarm": map[string]any{"platform": "alarm_control_panel", "unique_id": id + "_alarm", "name": nil,
			"state_topic": alarmTopic(site), "command_topic": cmd,
			"payload_arm_away": "arm", "payload_disarm": "disarm", "supported_features": []string{"arm_away"},
			"code_arm_required": false, "code_disarm_required": false},
	})
}

func (p *Publisher) cameraConfig(d telemetry.Device) map[string]any {
	id := objectID("vigil_cam", d.Site, d.ID)
	name := d.ID
	if d.Meta != nil && d.Meta.Name != "" {
		name = d.Meta.Name
	}
	dev := map[string]any{"identifiers": []string{id}, "name": name, "manufacturer": "Vigil", "model": "Camera", "via_device": objectID("vigil_site", d.Site)}
	return p.base(dev, map[string]any{
		"motion": map[string]any{"platform": "binary_sensor", "unique_id": id + "_motion", "name": "Motion", "device_class": "motion",
			"state_topic": cameraTopic(d.Site, d.ID, "motion")},
		"intrusion": map[string]any{"platform": "event", "unique_id": id + "_intrusion", "name": "Intrusion", "device_class": "motion",
			"event_types": []string{"intrusion"}, "state_topic": cameraTopic(d.Site, d.ID, "event")},
		"thumbnail": map[string]any{"platform": "image", "unique_id": id + "_thumbnail", "name": "Latest clip",
			"image_topic": cameraTopic(d.Site, d.ID, "thumbnail"), "content_type": "image/jpeg"},
	})
}

// sensorClasses are Home Assistant sensor device classes by Vigil type,
// with the units Home Assistant accepts for each (it refuses a config
// whose unit does not fit its class).
var sensorClasses = map[string][]string{
	"temperature": {"°C", "°F", "K"},
	"humidity":    {"%"},
	"pressure":    {"Pa", "hPa", "kPa", "bar", "cbar", "mbar", "mmHg", "inHg", "psi"},
	"illuminance": {"lx"},
	"battery":     {"%"},
	"distance":    {"km", "m", "cm", "mm", "mi", "yd", "in", "ft"},
	"voltage":     {"V", "mV"},
	"power":       {"W", "kW"},
	"co2":         {"ppm"},
}

var binaryTypes = map[string]string{telemetry.TypeMotion: "motion", "occupancy": "occupancy", "presence": "presence",
	"door": "door", "window": "window", "smoke": "smoke", "moisture": "moisture", "tamper": "tamper"}

func (p *Publisher) deviceConfig(d telemetry.Device) map[string]any {
	id := objectID("vigil_dev", d.Site, d.ID)
	name := d.ID
	if d.Meta != nil && d.Meta.Name != "" {
		name = d.Meta.Name
	}
	dev := map[string]any{"identifiers": []string{id}, "name": name, "manufacturer": "Vigil", "model": d.Type, "via_device": objectID("vigil_site", d.Site)}
	c := map[string]any{"unique_id": id + "_value", "name": nil, "state_topic": deviceStateTopic(d)}
	if class, ok := binaryTypes[d.Type]; ok {
		c["platform"], c["device_class"] = "binary_sensor", class
	} else {
		c["platform"], c["state_class"] = "sensor", "measurement"
		units := d.Units
		if d.Type == "temperature" && (units == "C" || units == "celsius") {
			units = "°C" // what the paper's script says
		}
		if units != "" {
			c["unit_of_measurement"] = units
		}
		if slices.Contains(sensorClasses[d.Type], units) {
			c["device_class"] = map[string]string{"co2": "carbon_dioxide"}[d.Type]
			if c["device_class"] == "" {
				c["device_class"] = d.Type
			}
		}
	}
	return p.base(dev, map[string]any{"value": c})
}

func isCamera(d telemetry.Device) bool { return d.Meta.Has(telemetry.CapCamera) }

func stateValue(d telemetry.Device, v float64) []byte {
	if _, ok := binaryTypes[d.Type]; ok {
		return []byte(onOff(v >= 1))
	}
	return []byte(strconv.FormatFloat(v, 'f', -1, 64))
}

func onOff(b bool) string {
	if b {
		return "ON"
	}
	return "OFF"
}

func deviceStateTopic(d telemetry.Device) string {
	return StateRoot + "/" + d.Site + "/" + d.ID + "/state"
}

func alarmTopic(site string) string { return StateRoot + "/" + site + "/alarm" }

func cameraTopic(site, cam, what string) string {
	return StateRoot + "/" + site + "/" + cam + "/" + what
}

// objectID is a discovery object id: the prefix and the parts (a site, a
// device id) joined by "_", in [a-zA-Z0-9_-]. Where a part holds "_" or a
// character that had to be replaced ("."), a hash of the parts follows,
// so that site a_b's device c and site a's device b_c differ.
func objectID(prefix string, parts ...string) string {
	var b strings.Builder
	b.WriteString(prefix)
	plain := true
	for _, part := range parts {
		b.WriteByte('_')
		for i := 0; i < len(part); i++ {
			c := part[i]
			switch {
			case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-':
				b.WriteByte(c)
			default:
				plain = false
				b.WriteByte('_')
			}
		}
	}
	if !plain {
		sum := sha256.Sum256([]byte(strings.Join(parts, "/")))
		b.WriteString("_" + hex.EncodeToString(sum[:4]))
	}
	return b.String()
}
