// Package hadisc speaks Home Assistant's MQTT discovery both ways: it reads
// the discovery configs that Zigbee2MQTT, Tasmota, ESPHome, Shelly and the
// like publish (so that their sensors become Vigil devices whose readings go
// through the normal pipeline), and it publishes Vigil's own devices, sites
// and cameras for Home Assistant. https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery
package hadisc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"
)

// Components Vigil reads. Others (light, switch, climate...) are
// understood to exist and are ignored.
const (
	Sensor       = "sensor"
	BinarySensor = "binary_sensor"
)

// MaxConfig is the largest discovery payload read (Zigbee2MQTT's biggest
// are a few kilobytes).
const MaxConfig = 64 << 10

// Limits on what one config may ask for.
const (
	maxComponents   = 256 // components of one device-based config
	maxAvailability = 16  // availability topics of one entity
	maxTopic        = 512 // bytes of a topic
	maxTemplate     = 4096
	maxText         = 256 // names, models, units...
)

// Topic is where a discovery config was published:
// <prefix>/<component>/[<node_id>/]<object_id>/config.
type Topic struct {
	Component string
	NodeID    string
	ObjectID  string
}

// ParseTopic splits a discovery topic under prefix; ok is false for any
// other topic under it (homeassistant/status, a state topic someone put
// there).
func ParseTopic(prefix, topic string) (t Topic, ok bool) {
	rest, found := strings.CutPrefix(topic, prefix+"/")
	if !found {
		return t, false
	}
	l := strings.Split(rest, "/")
	if len(l) < 3 || len(l) > 4 || l[len(l)-1] != "config" {
		return t, false
	}
	for _, s := range l[:len(l)-1] {
		if !validID(s) {
			return t, false
		}
	}
	t.Component, t.ObjectID = l[0], l[len(l)-2]
	if len(l) == 4 {
		t.NodeID = l[1]
	}
	return t, true
}

// validID is Home Assistant's rule for the topic's component, node_id and
// object_id: [a-zA-Z0-9_-]+.
func validID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Entity is one discovered sensor or binary sensor, as its config says.
type Entity struct {
	ConfigTopic string `json:"config_topic"`
	Component   string `json:"component"`
	// Key names the entity among all configs: the config topic, with the
	// component's id for a device-based config.
	Key         string `json:"key"`
	UniqueID    string `json:"unique_id,omitempty"`
	Name        string `json:"name,omitempty"` // the entity's own name; "" when it has none (the device's name is used)
	ObjectID    string `json:"object_id,omitempty"`
	DeviceClass string `json:"device_class,omitempty"`
	StateClass  string `json:"state_class,omitempty"`
	Unit        string `json:"unit_of_measurement,omitempty"`

	StateTopic    string `json:"state_topic"`
	ValueTemplate string `json:"value_template,omitempty"`
	// HasTemplate: the config has a value_template, maybe empty (which
	// renders nothing: Home Assistant's "unknown").
	HasTemplate bool   `json:"-"`
	PayloadOn   string `json:"payload_on,omitempty"`
	PayloadOff  string `json:"payload_off,omitempty"`

	Availability     []Availability `json:"availability,omitempty"`
	AvailabilityMode string         `json:"availability_mode,omitempty"` // latest, all or any
	ExpireAfter      time.Duration  `json:"-"`
	ExpireAfterS     float64        `json:"expire_after,omitempty"`

	Device *Device `json:"device,omitempty"`
	Origin string  `json:"origin,omitempty"` // "Zigbee2MQTT 1.35.1"

	// Config is the whole config, abbreviations expanded, as shown to
	// the user.
	Config map[string]any `json:"config"`
}

// Availability is one topic that says whether an entity is available.
type Availability struct {
	Topic               string `json:"topic"`
	PayloadAvailable    string `json:"payload_available"`
	PayloadNotAvailable string `json:"payload_not_available"`
	ValueTemplate       string `json:"value_template,omitempty"`
}

// Device is the physical device an entity belongs to.
type Device struct {
	Identifiers   []string `json:"identifiers,omitempty"`
	Name          string   `json:"name,omitempty"`
	Model         string   `json:"model,omitempty"`
	Manufacturer  string   `json:"manufacturer,omitempty"`
	SWVersion     string   `json:"sw_version,omitempty"`
	ViaDevice     string   `json:"via_device,omitempty"`
	SuggestedArea string   `json:"suggested_area,omitempty"`
}

// FriendlyName is what Home Assistant calls the entity: the device's name
// and the entity's, the device's alone when the entity has none.
func (e *Entity) FriendlyName() string {
	switch {
	case e.Device != nil && e.Device.Name != "" && e.Name != "":
		return e.Device.Name + " " + e.Name
	case e.Device != nil && e.Device.Name != "":
		return e.Device.Name
	case e.Name != "":
		return e.Name
	}
	return e.ObjectID
}

// Config is one discovery message, parsed: the entities it declares (one,
// or a device-based config's components) and those of its components this
// consumer does not read.
type Config struct {
	Topic    Topic
	Entities []*Entity
	// Ignored says, per component key, why it is not read (another
	// platform, a sensor whose state is not a number).
	Ignored map[string]string
}

// ConfigError says what is wrong with a discovery config.
type ConfigError struct {
	Topic  string
	Detail string
}

func (e *ConfigError) Error() string { return e.Topic + ": " + e.Detail }

func cfgErr(topic, format string, args ...any) *ConfigError {
	return &ConfigError{Topic: topic, Detail: fmt.Sprintf(format, args...)}
}

// Parse reads a non-empty discovery config published on topic (under
// prefix). An entity with something wrong is left out with the reason in
// Ignored; a payload that is not a JSON object, or a device-based config
// with no device, is an error.
func Parse(prefix, topic string, payload []byte) (*Config, error) {
	t, ok := ParseTopic(prefix, topic)
	if !ok {
		return nil, cfgErr(topic, "not a discovery topic (%s/<component>/[<node_id>/]<object_id>/config)", prefix)
	}
	if len(payload) > MaxConfig {
		return nil, cfgErr(topic, "config of %d bytes; at most %d", len(payload), MaxConfig)
	}
	if !utf8.Valid(payload) {
		return nil, cfgErr(topic, "config is not UTF-8")
	}
	raw, err := decodeObject(payload)
	if err != nil {
		return nil, cfgErr(topic, "config is not a JSON object: %v", err)
	}
	cfg := &Config{Topic: t, Ignored: map[string]string{}}
	full := expand(raw)
	if t.Component != "device" {
		e, reason := entity(topic, topic, t.Component, t, full)
		if reason != "" {
			cfg.Ignored[topic] = reason
		} else {
			cfg.Entities = append(cfg.Entities, e)
		}
		return cfg, nil
	}
	// A device-based config: the device and origin, options shared by
	// every component, and the components.
	if _, ok := full["device"].(map[string]any); !ok {
		return nil, cfgErr(topic, "a device-based config needs a device")
	}
	cmps, ok := full["components"].(map[string]any)
	if !ok {
		return nil, cfgErr(topic, "a device-based config needs components (cmps)")
	}
	if len(cmps) > maxComponents {
		return nil, cfgErr(topic, "%d components; at most %d", len(cmps), maxComponents)
	}
	for id, v := range cmps {
		key := topic + "#" + id
		c, ok := v.(map[string]any)
		if !ok || !validID(id) {
			cfg.Ignored[key] = "a component must be an object with an id of letters, digits, '_' or '-'"
			continue
		}
		platform, _ := c["platform"].(string)
		if platform == "" {
			cfg.Ignored[key] = "a component needs a platform (p)"
			continue
		}
		if len(c) == 1 {
			continue // only its platform: Home Assistant's removal of a component
		}
		// The device, the origin and the shared options; the
		// component's own keys win.
		merged := map[string]any{}
		for _, k := range sharedOptions {
			if v, ok := full[k]; ok {
				merged[k] = v
			}
		}
		for k, v := range c {
			merged[k] = v
		}
		ct := Topic{Component: platform, NodeID: t.ObjectID, ObjectID: id}
		e, reason := entity(topic, key, platform, ct, merged)
		if reason != "" {
			cfg.Ignored[key] = reason
			continue
		}
		cfg.Entities = append(cfg.Entities, e)
	}
	return cfg, nil
}

// sharedOptions are what a device-based config's components inherit from
// its top level (Home Assistant's mqtt.markdown): the device, the origin,
// availability, QoS, encoding, and state and command topics.
var sharedOptions = []string{"device", "origin", "availability", "availability_mode", "availability_template",
	"availability_topic", "payload_available", "payload_not_available", "qos", "encoding", "state_topic", "command_topic", "~"}

// decodeObject decodes a JSON object, numbers as json.Number.
func decodeObject(b []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	if m == nil {
		return nil, fmt.Errorf("null")
	}
	if dec.More() {
		return nil, fmt.Errorf("trailing data")
	}
	return m, nil
}

// expand replaces abbreviated keys by their full names, at the top level,
// in the device, the origin, the availability list and the components,
// and applies the base topic "~" to every *_topic and availability topic.
func expand(raw map[string]any) map[string]any {
	m := expandKeys(raw, abbreviations)
	for _, k := range []string{"device", "origin"} {
		if sub, ok := m[k].(map[string]any); ok {
			table := deviceAbbreviations
			if k == "origin" {
				table = originAbbreviations
			}
			m[k] = expandKeys(sub, table)
		}
	}
	if obj, ok := m["availability"].(map[string]any); ok {
		m["availability"] = []any{obj} // one object: Home Assistant reads it as a list of one
	}
	if list, ok := m["availability"].([]any); ok {
		out := make([]any, 0, len(list))
		for _, v := range list {
			if a, ok := v.(map[string]any); ok {
				v = expandKeys(a, abbreviations)
			}
			out = append(out, v)
		}
		m["availability"] = out
	}
	if cmps, ok := m["components"].(map[string]any); ok {
		out := make(map[string]any, len(cmps))
		for id, v := range cmps {
			if c, ok := v.(map[string]any); ok {
				v = expand(c)
			}
			out[id] = v
		}
		m["components"] = out
	}
	if base, ok := m["~"].(string); ok {
		tilde := func(s string) string {
			switch {
			case strings.HasPrefix(s, "~"):
				return base + s[1:]
			case strings.HasSuffix(s, "~"):
				return s[:len(s)-1] + base
			}
			return s
		}
		for k, v := range m {
			if s, ok := v.(string); ok && (strings.HasSuffix(k, "_topic") || k == "topic") {
				m[k] = tilde(s)
			}
		}
		if list, ok := m["availability"].([]any); ok {
			for _, v := range list {
				if a, ok := v.(map[string]any); ok {
					if s, ok := a["topic"].(string); ok {
						a["topic"] = tilde(s)
					}
				}
			}
		}
	}
	return m
}

func expandKeys(m map[string]any, table map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		if full, ok := table[k]; ok && full != k {
			if _, dup := m[full]; dup {
				continue // the full key wins
			}
			k = full
		}
		out[k] = v
	}
	return out
}

// nonNumeric are sensor device classes whose state is not a number.
var nonNumeric = map[string]bool{"enum": true, "timestamp": true, "date": true}

// entity reads one entity's config; reason says why it is not read.
func entity(configTopic, key, component string, t Topic, m map[string]any) (e *Entity, reason string) {
	if component != Sensor && component != BinarySensor {
		return nil, "Vigil reads sensor and binary_sensor entities; this is a " + clip(component)
	}
	if o, ok := m["origin"].(map[string]any); ok && o["name"] == OriginName {
		return nil, "published by Vigil itself"
	}
	e = &Entity{ConfigTopic: configTopic, Key: key, Component: component, Config: m}
	var bad []string
	str := func(k string, max int) string {
		v, ok := m[k]
		if !ok || v == nil {
			return ""
		}
		s, ok := scalar(v)
		if !ok || len(s) > max || strings.ContainsFunc(s, func(r rune) bool { return r < ' ' && r != '\t' }) {
			bad = append(bad, k)
			return ""
		}
		return s
	}
	e.UniqueID = str("unique_id", maxText)
	e.Name = str("name", maxText)
	e.DeviceClass = str("device_class", 64)
	if _, named := m["name"]; !named && e.DeviceClass != "" {
		// Home Assistant names an entity without a name key after its
		// device class ("Occupancy"); a null name means none.
		e.Name = humanize(e.DeviceClass)
	}
	e.ObjectID = str("object_id", maxText)
	if e.ObjectID == "" {
		e.ObjectID = str("default_entity_id", maxText)
	}
	if e.ObjectID == "" {
		e.ObjectID = t.ObjectID
	}
	e.StateClass = str("state_class", 64)
	e.Unit = str("unit_of_measurement", 32)
	e.StateTopic = str("state_topic", maxTopic)
	e.ValueTemplate = str("value_template", maxTemplate)
	_, e.HasTemplate = m["value_template"]
	if len(bad) > 0 {
		return nil, "wrong value for " + strings.Join(bad, ", ")
	}
	if e.StateTopic == "" {
		return nil, "no state_topic"
	}
	if !validTopic(e.StateTopic) {
		return nil, "state_topic " + clip(e.StateTopic) + " is not a topic Vigil can subscribe to (no wildcards)"
	}
	if component == BinarySensor {
		e.PayloadOn, e.PayloadOff = "ON", "OFF"
		if v, ok := m["payload_on"]; ok {
			e.PayloadOn, _ = scalar(v)
		}
		if v, ok := m["payload_off"]; ok {
			e.PayloadOff, _ = scalar(v)
		}
	} else if nonNumeric[e.DeviceClass] || (e.DeviceClass == "" && e.Unit == "" && e.StateClass == "") {
		return nil, "its state is not a number (no unit, device class or state class)"
	}
	if v, ok := m["expire_after"]; ok {
		s, _ := scalar(v)
		var f float64
		if _, err := fmt.Sscan(s, &f); err != nil || f < 0 || f > 365*24*3600 || math.IsNaN(f) {
			return nil, "expire_after must be a number of seconds"
		}
		e.ExpireAfter, e.ExpireAfterS = time.Duration(f*float64(time.Second)), f
	}

	// Availability: a list of topics, or one availability_topic.
	payloadAvail, payloadNot := "online", "offline"
	if v, ok := m["payload_available"]; ok {
		payloadAvail, _ = scalar(v)
	}
	if v, ok := m["payload_not_available"]; ok {
		payloadNot, _ = scalar(v)
	}
	if s := str("availability_topic", maxTopic); s != "" {
		e.Availability = append(e.Availability, Availability{Topic: s, PayloadAvailable: payloadAvail, PayloadNotAvailable: payloadNot,
			ValueTemplate: str("availability_template", maxTemplate)})
	}
	if list, ok := m["availability"].([]any); ok {
		if len(list) > maxAvailability {
			return nil, fmt.Sprintf("%d availability topics; at most %d", len(list), maxAvailability)
		}
		for _, v := range list {
			a, ok := v.(map[string]any)
			if !ok {
				return nil, "availability must be a list of objects"
			}
			// Each entry's own payloads, online and offline by default
			// (not the top-level availability_topic's).
			av := Availability{PayloadAvailable: "online", PayloadNotAvailable: "offline"}
			av.Topic, _ = scalar(a["topic"])
			if p, ok := a["payload_available"]; ok {
				av.PayloadAvailable, _ = scalar(p)
			}
			if p, ok := a["payload_not_available"]; ok {
				av.PayloadNotAvailable, _ = scalar(p)
			}
			av.ValueTemplate, _ = scalar(a["value_template"])
			if len(av.ValueTemplate) > maxTemplate {
				return nil, "an availability value_template is too long"
			}
			e.Availability = append(e.Availability, av)
		}
	}
	for _, a := range e.Availability {
		if !validTopic(a.Topic) {
			return nil, "availability topic " + clip(a.Topic) + " is not a topic Vigil can subscribe to"
		}
	}
	e.AvailabilityMode = str("availability_mode", 16)
	switch e.AvailabilityMode {
	case "":
		e.AvailabilityMode = "latest"
	case "latest", "all", "any":
	default:
		return nil, "availability_mode must be latest, all or any"
	}

	if d, ok := m["device"].(map[string]any); ok {
		dev := &Device{}
		get := func(k string) string {
			s, ok := scalar(d[k])
			if !ok || len(s) > maxText {
				return ""
			}
			return s
		}
		dev.Name, dev.Model, dev.Manufacturer = get("name"), get("model"), get("manufacturer")
		dev.SWVersion, dev.ViaDevice, dev.SuggestedArea = get("sw_version"), get("via_device"), get("suggested_area")
		switch ids := d["identifiers"].(type) {
		case []any:
			for _, v := range ids {
				if s, ok := scalar(v); ok && len(s) <= maxText && len(dev.Identifiers) < 16 {
					dev.Identifiers = append(dev.Identifiers, s)
				}
			}
		default:
			if s, ok := scalar(ids); ok && s != "" && len(s) <= maxText {
				dev.Identifiers = []string{s}
			}
		}
		if len(dev.Identifiers) == 0 {
			// Some projects name a device by its connections only.
			if cns, ok := d["connections"].([]any); ok {
				for _, c := range cns {
					if pair, ok := c.([]any); ok && len(pair) == 2 {
						a, _ := scalar(pair[0])
						b, _ := scalar(pair[1])
						if s := a + ":" + b; len(s) <= maxText && len(dev.Identifiers) < 16 {
							dev.Identifiers = append(dev.Identifiers, s)
						}
					}
				}
			}
		}
		e.Device = dev
	}
	if o, ok := m["origin"].(map[string]any); ok {
		name, _ := scalar(o["name"])
		sw, _ := scalar(o["sw_version"])
		if s := strings.TrimSpace(name + " " + sw); len(s) <= maxText {
			e.Origin = s
		}
	}
	return e, ""
}

// scalar returns a JSON string, number or boolean as text, as Home
// Assistant compares payloads.
func scalar(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case json.Number:
		return x.String(), true
	case bool:
		if x {
			return "True", true // Python's str(True): what a template of a bool gives
		}
		return "False", true
	}
	return "", false
}

// validTopic: a topic Vigil can subscribe to exactly.
func validTopic(s string) bool {
	return s != "" && len(s) <= maxTopic && utf8.ValidString(s) && !strings.ContainsAny(s, "+#\x00") && !strings.HasPrefix(s, "$")
}

// humanize writes a device class as Home Assistant's English names it:
// "atmospheric_pressure" -> "Atmospheric pressure".
func humanize(class string) string {
	s := strings.ReplaceAll(class, "_", " ")
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func clip(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return fmt.Sprintf("%q", s)
}
