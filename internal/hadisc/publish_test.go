package hadisc

import (
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/vigilhq/vigil/internal/telemetry"
)

type published struct {
	mu   sync.Mutex
	msgs map[string][]byte
	log  []string
}

func (p *published) publish(topic string, payload []byte, retain bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.msgs == nil {
		p.msgs = map[string][]byte{}
	}
	p.msgs[topic] = payload
	p.log = append(p.log, topic)
	return nil
}

func newTestPublisher() (*Publisher, *published) {
	var out published
	p := NewPublisher(PublisherConfig{Prefix: "homeassistant", Availability: "vigil/nodes/n1/state", Version: "test", Publish: out.publish}, slog.New(slog.DiscardHandler))
	v := 21.5
	p.Device(telemetry.Device{ID: "temp-1", Site: "home", Type: "temperature", Units: "C", LastValue: &v})
	p.Device(telemetry.Device{ID: "ir-1", Site: "home", Type: "distance", Units: "m"})
	p.Device(telemetry.Device{ID: "pir-1", Site: "home", Type: "motion"})
	p.Device(telemetry.Device{ID: "cam1", Site: "home", Meta: &telemetry.Meta{Name: "Hall camera", Capabilities: []string{"camera"}}})
	p.Device(telemetry.Device{ID: "z2m_x", Site: "home", Meta: &telemetry.Meta{Discovery: &telemetry.Discovery{}}})
	// Its readings and statuses after its meta do not announce it either.
	p.Observe(telemetry.Event{DeviceID: "z2m_x", Site: "home", Type: "occupancy", Reading: &telemetry.Reading{Value: 1}})
	p.Observe(telemetry.Event{DeviceID: "z2m_x", Site: "home", Status: "online"})
	p.Site("home", true)
	p.SetHealth(Health{Grade: "A", Agents: 1, Broker: "ON"})
	return p, &out
}

// Vigil's configs hold only the keys Home Assistant documents for each
// platform, with the required ones (hakeys_test.go, transcribed from the
// docs), and parse as discovery configs.
func TestVigilsConfigsHaveTheKeysHomeAssistantDocuments(t *testing.T) {
	p, _ := newTestPublisher()
	configs := p.Configs()
	platforms := map[string]int{}
	for topic, b := range configs {
		var cfg map[string]any
		if err := json.Unmarshal(b, &cfg); err != nil {
			t.Fatalf("%s: %v", topic, err)
		}
		if _, ok := ParseTopic("homeassistant", topic); !ok || !strings.Contains(topic, "/device/") {
			t.Errorf("%s is not a device-based discovery topic", topic)
		}
		for _, k := range deviceDiscoveryRequired {
			if _, ok := cfg[k]; !ok {
				t.Errorf("%s: no %s", topic, k)
			}
		}
		for k := range cfg {
			if !slices.Contains(deviceDiscoveryKeys, k) && !slices.Contains(anyDiscoveryKeys, k) {
				t.Errorf("%s: top-level key %s is not documented", topic, k)
			}
		}
		dev := cfg["device"].(map[string]any)
		for k := range dev {
			if !slices.Contains(deviceKeys, k) {
				t.Errorf("%s: device key %s is not documented", topic, k)
			}
		}
		origin := cfg["origin"].(map[string]any)
		for k := range origin {
			if !slices.Contains(originKeys, k) {
				t.Errorf("%s: origin key %s is not documented", topic, k)
			}
		}
		for _, k := range originRequired {
			if _, ok := origin[k]; !ok {
				t.Errorf("%s: origin without %s", topic, k)
			}
		}
		for _, a := range cfg["availability"].([]any) {
			for k := range a.(map[string]any) {
				if !slices.Contains(availabilityItemKeys, k) {
					t.Errorf("%s: availability key %s is not documented", topic, k)
				}
			}
		}
		for id, v := range cfg["components"].(map[string]any) {
			c := v.(map[string]any)
			platform, _ := c["platform"].(string)
			keys, ok := componentKeys[platform]
			if !ok {
				t.Errorf("%s#%s: platform %q", topic, id, platform)
				continue
			}
			platforms[platform]++
			for _, k := range append(slices.Clone(keys.Required), deviceComponentRequired...) {
				if _, ok := c[k]; !ok {
					t.Errorf("%s#%s (%s): required %s missing", topic, id, platform, k)
				}
			}
			for k := range c {
				if !slices.Contains(keys.Allowed, k) {
					t.Errorf("%s#%s (%s): key %s is not documented", topic, id, platform, k)
				}
				if newer, ok := renamedKeys[k]; ok {
					t.Errorf("%s#%s (%s): key %s is now %s", topic, id, platform, k, newer)
				}
			}
			for _, group := range oneOf[platform] {
				if !slices.ContainsFunc(group, func(k string) bool { _, ok := c[k]; return ok }) {
					t.Errorf("%s#%s (%s): needs one of %v", topic, id, platform, group)
				}
			}
			if platform == "alarm_control_panel" {
				// Vigil's mode command takes arm and disarm, not Home
				// Assistant's default payloads.
				for _, k := range []string{"payload_arm_away", "payload_disarm"} {
					if v, _ := c[k].(string); v == "" || v == alarmPayloadDefaults[k] {
						t.Errorf("%s: %s is %q; Vigil's mode command needs arm or disarm", topic, k, v)
					}
				}
				for _, f := range c["supported_features"].([]any) {
					if !slices.Contains(alarmSupportedFeatures, f.(string)) {
						t.Errorf("alarm feature %v", f)
					}
				}
			}
		}
	}
	for _, pl := range []string{"sensor", "binary_sensor", "alarm_control_panel", "event", "image"} {
		if platforms[pl] == 0 {
			t.Errorf("no %s published: %v", pl, platforms)
		}
	}
	if _, ok := configs["homeassistant/device/"+objectID("vigil_dev", "home", "z2m_x")+"/config"]; ok {
		t.Error("a discovered device is announced back to Home Assistant")
	}
	// The consumer reads none of Vigil's own configs.
	for topic, b := range configs {
		cfg, err := Parse("homeassistant", topic, b)
		if err != nil || len(cfg.Entities) != 0 {
			t.Errorf("%s: the consumer would read Vigil's own config: %v %v", topic, err, cfg)
		}
	}
}

func TestPublishedStates(t *testing.T) {
	p, out := newTestPublisher()
	p.Start()
	defer p.Close()
	p.Event("ev1", "home", "ir-1", []string{"cam1"}, true)
	p.flush()
	want := map[string]string{
		"vigil-ha/home/temp-1/state": "21.5",
		"vigil-ha/home/alarm":        "triggered",
		"vigil-ha/home/cam1/motion":  "ON",
		"vigil-ha/home/cam1/event":   `{"event_id":"ev1","event_type":"intrusion","sensor":"ir-1"}`,
		"vigil-ha/health":            `{"grade":"A","agents":1,"broker":"ON"}`,
	}
	out.mu.Lock()
	for topic, w := range want {
		if got := string(out.msgs[topic]); got != w {
			t.Errorf("%s = %q, want %q", topic, got, w)
		}
	}
	out.mu.Unlock()
	p.Event("ev1", "home", "ir-1", []string{"cam1"}, false)
	p.Site("home", false)
	p.Observe(telemetry.Event{DeviceID: "pir-1", Site: "home", Type: "motion", Reading: &telemetry.Reading{Value: 1}})
	p.flush()
	out.mu.Lock()
	defer out.mu.Unlock()
	if !slices.Contains(alarmStates, string(out.msgs["vigil-ha/home/alarm"])) {
		t.Errorf("alarm state %q is not one Home Assistant accepts", out.msgs["vigil-ha/home/alarm"])
	}
	for topic, w := range map[string]string{"vigil-ha/home/alarm": "disarmed", "vigil-ha/home/cam1/motion": "OFF", "vigil-ha/home/pir-1/state": "ON"} {
		if got := string(out.msgs[topic]); got != w {
			t.Errorf("%s = %q, want %q", topic, got, w)
		}
	}
	// A config is published once, not on every flush.
	n := 0
	for _, topic := range out.log {
		if topic == "homeassistant/device/vigil_site_home/config" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("the site's config published %d times", n)
	}
}

// A config of Vigil's found from an earlier run and no longer wanted is
// removed (an empty retained message); Announce publishes every config
// again.
func TestStaleConfigsAreRemovedAndAnnounceRepublishes(t *testing.T) {
	p, out := newTestPublisher()
	p.Found("homeassistant/device/vigil_dev_home_gone/config", []byte(`{"o":{"name":"Vigil"}}`))
	p.Found("homeassistant/device/someone_else/config", []byte(`{}`))
	p.Start()
	defer p.Close()
	out.mu.Lock()
	if b, ok := out.msgs["homeassistant/device/vigil_dev_home_gone/config"]; !ok || len(b) != 0 {
		t.Errorf("stale config not removed: %q %v", b, ok)
	}
	if _, ok := out.msgs["homeassistant/device/someone_else/config"]; ok {
		t.Error("another project's config touched")
	}
	before := len(out.log)
	out.mu.Unlock()
	p.announce()
	out.mu.Lock()
	if len(out.log)-before < len(p.Configs()) {
		t.Errorf("Announce published %d messages, want every config (%d) again", len(out.log)-before, len(p.Configs()))
	}
	out.mu.Unlock()
	// A deleted device's config goes.
	p.Remove("temp-1")
	p.flush()
	out.mu.Lock()
	defer out.mu.Unlock()
	if b, ok := out.msgs["homeassistant/device/vigil_dev_home_temp-1/config"]; !ok || len(b) != 0 {
		t.Errorf("a removed device's config: %q %v, want an empty retained message", b, ok)
	}
}

func TestObjectIDsDoNotCollide(t *testing.T) {
	seen := map[string][]string{}
	for _, p := range [][]string{{"a_b", "c"}, {"a", "b_c"}, {"a.b", "c"}, {"a", "b.c"}, {"a-b", "c"}, {"a", "b-c"}, {"home", "temp1"}} {
		id := objectID("vigil_dev", p...)
		if old, ok := seen[id]; ok {
			t.Errorf("%v and %v share %s", old, p, id)
		}
		seen[id] = p
	}
	if got := objectID("vigil_dev", "home", "temp1"); got != "vigil_dev_home_temp1" {
		t.Errorf("a plain id: %s", got)
	}
}
