package telemetry

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/vigilhq/vigil"
)

// Topics the pipeline subscribes to.
const (
	// LegacyFilter matches the paper's topics, sensors/<type>.
	LegacyFilter = "sensors/#"
	// TelemetryFilter matches vigil/<site>/<device>/telemetry.
	TelemetryFilter = "vigil/+/+/telemetry"
	// StatusFilter matches vigil/<site>/<device>/status.
	StatusFilter = "vigil/+/+/status"
	// MotionFilter matches vigil/<site>/<device>/motion.
	MotionFilter = "vigil/+/+/motion"
	// MetaFilter matches vigil/<site>/<device>/meta.
	MetaFilter = "vigil/+/+/meta"
)

// Reading types that Vigil itself interprets.
const (
	TypeDistance = "distance" // metres to the nearest object (IR sensor)
	TypeMotion   = "motion"   // 1 when motion is detected, 0 when not
)

// LegacyTimeLayout is the paper's timestamp, "%d-%m-%Y %H:%M:%S".
const LegacyTimeLayout = "02-01-2006 15:04:05"

// maxClockSkew is how far a device's timestamp may be from Vigil's clock
// before Vigil's arrival time is used instead.
const maxClockSkew = 24 * time.Hour

// Rejection reasons, used as the "reason" label of
// vigil_telemetry_rejected_total.
const (
	ReasonOversized    = "oversized"     // larger than telemetry.max_payload
	ReasonMalformed    = "malformed"     // not JSON, not UTF-8, not an object
	ReasonInvalid      = "invalid"       // JSON, but a field has a wrong type or value
	ReasonUnknownTopic = "unknown_topic" // a topic in a subscribed tree that Vigil does not understand
)

// ParseError says why a message was rejected.
type ParseError struct {
	Reason string
	Detail string
}

func (e *ParseError) Error() string { return e.Reason + ": " + e.Detail }

func reject(reason, format string, args ...any) *ParseError {
	return &ParseError{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// Parser validates device messages and turns them into Events.
type Parser struct {
	MaxPayload int
	LegacySite string
	LegacyTZ   *time.Location
}

// wire is the JSON payload on both the paper's and Vigil's topics.
type wire struct {
	SensorID  json.RawMessage `json:"sensor_id"`
	Type      *string         `json:"type"`
	Timestamp json.RawMessage `json:"timestamp"`
	Value     json.RawMessage `json:"value"`
	Units     *string         `json:"units"`
	Seq       *int64          `json:"seq"`
}

// Parse turns one MQTT message into an Event. received is the arrival time.
// It returns a *ParseError for a message to reject.
func (p *Parser) Parse(topic string, payload []byte, clientID string, received time.Time) (Event, error) {
	if len(payload) > p.MaxPayload {
		return Event{}, reject(ReasonOversized, "%d bytes on %s, limit %d", len(payload), topic, p.MaxPayload)
	}
	levels := strings.Split(topic, "/")
	switch {
	case len(levels) == 2 && levels[0] == "sensors":
		return p.parseReading(payload, levels[1], "", p.LegacySite, clientID, received, true)
	case len(levels) == 4 && levels[0] == "vigil":
		site, device := levels[1], levels[2]
		if !vigil.ValidName(site) || !vigil.ValidName(device) {
			return Event{}, reject(ReasonInvalid, "site and device in %q must be 1-64 letters, digits, '-', '_' or '.'", topic)
		}
		if vigil.Reserved(site) || vigil.Reserved(device) {
			return Event{}, reject(ReasonInvalid, "%q uses a name Vigil keeps for itself (agents, mode, alerts)", topic)
		}
		switch levels[3] {
		case "telemetry":
			return p.parseReading(payload, "", device, site, clientID, received, false)
		case "status":
			return parseStatus(payload, site, device, clientID, received)
		case "motion":
			return p.parseMotion(payload, site, device, clientID, received)
		case "meta":
			return parseMeta(payload, site, device, clientID, received)
		}
	}
	return Event{}, reject(ReasonUnknownTopic, "%q", topic)
}

func (p *Parser) parseReading(payload []byte, topicType, device, site, clientID string, received time.Time, legacy bool) (Event, error) {
	if !utf8.Valid(payload) {
		return Event{}, reject(ReasonMalformed, "payload is not UTF-8")
	}
	var w wire
	// Unmarshal, not a Decoder: it refuses anything after the object as
	// well, without a reader and a buffer for every reading.
	if err := json.Unmarshal(payload, &w); err != nil {
		return Event{}, reject(ReasonMalformed, "payload is not a JSON object: %v", err)
	}

	if legacy {
		id, err := sensorID(w.SensorID)
		if err != nil {
			return Event{}, err
		}
		device = id
	}

	typ := topicType
	if w.Type != nil {
		typ = *w.Type
	}
	if typ != "" && !validType(typ) {
		return Event{}, reject(ReasonInvalid, "type %q must be 1-32 lowercase letters, digits, '-' or '_'", typ)
	}
	units := ""
	if w.Units != nil {
		units = *w.Units
		if len(units) > 32 || strings.ContainsFunc(units, func(r rune) bool { return r < ' ' }) {
			return Event{}, reject(ReasonInvalid, "units must be at most 32 printable characters")
		}
	}
	value, err := parseValue(w.Value)
	if err != nil {
		return Event{}, err
	}
	at, err := p.parseTime(w.Timestamp, received)
	if err != nil {
		return Event{}, err
	}
	return Event{
		DeviceID: device, Site: site, Type: typ, ClientID: clientID, Time: received,
		Reading: &Reading{DeviceID: device, Time: at, Received: received, Value: value, Units: units, Seq: w.Seq},
	}, nil
}

func sensorID(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", reject(ReasonInvalid, "sensor_id is missing")
	}
	var id string
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &id); err != nil {
			return "", reject(ReasonInvalid, "sensor_id: %v", err)
		}
	} else {
		n, err := strconv.ParseInt(string(raw), 10, 64)
		if err != nil {
			return "", reject(ReasonInvalid, "sensor_id must be a string or a whole number")
		}
		id = strconv.FormatInt(n, 10)
	}
	if !vigil.ValidName(id) || vigil.Reserved(id) {
		return "", reject(ReasonInvalid, "sensor_id %q must be 1-64 letters, digits, '-', '_' or '.', and not agents, mode or alerts", id)
	}
	return id, nil
}

func parseValue(raw json.RawMessage) (float64, error) {
	switch string(raw) {
	case "", "null":
		return 0, reject(ReasonInvalid, "value is missing")
	case "true":
		return 1, nil
	case "false":
		return 0, nil
	}
	v, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || raw[0] == '"' {
		return 0, reject(ReasonInvalid, "value must be a number or a boolean")
	}
	if math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, reject(ReasonInvalid, "value is out of range")
	}
	return v, nil
}

// parseTime accepts RFC 3339, the paper's "%d-%m-%Y %H:%M:%S" (in the
// configured zone) and Unix seconds or milliseconds; no timestamp means the
// arrival time. A timestamp more than a day away from Vigil's clock is
// replaced by the arrival time, so that one device's wrong clock cannot
// bury its readings in the past or the future.
func (p *Parser) parseTime(raw json.RawMessage, received time.Time) (time.Time, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return received, nil
	}
	var t time.Time
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return t, reject(ReasonInvalid, "timestamp: %v", err)
		}
		var err error
		if t, err = time.Parse(time.RFC3339Nano, s); err != nil {
			if t, err = time.ParseInLocation(LegacyTimeLayout, s, p.LegacyTZ); err != nil {
				return t, reject(ReasonInvalid, "timestamp %q is neither RFC 3339 nor %q", s, "%d-%m-%Y %H:%M:%S")
			}
		}
	} else {
		n, err := strconv.ParseFloat(string(raw), 64)
		if err != nil || n < 0 || n > 1e15 {
			return t, reject(ReasonInvalid, "timestamp must be a string or Unix seconds or milliseconds")
		}
		if n < 1e11 {
			t = time.UnixMilli(int64(n * 1000))
		} else {
			t = time.UnixMilli(int64(n))
		}
	}
	if d := t.Sub(received); d > maxClockSkew || d < -maxClockSkew {
		return received, nil
	}
	return t, nil
}

func parseStatus(payload []byte, site, device, clientID string, received time.Time) (Event, error) {
	s := strings.ToLower(strings.TrimSpace(string(payload)))
	if strings.HasPrefix(s, "{") {
		var w struct {
			Status string `json:"status"`
		}
		if err := json.Unmarshal(payload, &w); err != nil {
			return Event{}, reject(ReasonMalformed, "status payload is not JSON: %v", err)
		}
		s = strings.ToLower(w.Status)
	}
	if s != StatusOnline && s != StatusOffline {
		return Event{}, reject(ReasonInvalid, "status must be %q or %q", StatusOnline, StatusOffline)
	}
	return Event{DeviceID: device, Site: site, ClientID: clientID, Time: received, Status: s}, nil
}

func validType(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// parseMotion reads {"distance_m": 0.8} (a distance reading) or
// {"detected": true} (a motion reading), with an optional timestamp and
// seq (which makes a redelivered reading known as one).
func (p *Parser) parseMotion(payload []byte, site, device, clientID string, received time.Time) (Event, error) {
	var w struct {
		Distance  *float64        `json:"distance_m"`
		Detected  *bool           `json:"detected"`
		Timestamp json.RawMessage `json:"timestamp"`
		Seq       *int64          `json:"seq"`
	}
	if err := json.Unmarshal(payload, &w); err != nil {
		return Event{}, reject(ReasonMalformed, "motion payload is not a JSON object: %v", err)
	}
	at, err := p.parseTime(w.Timestamp, received)
	if err != nil {
		return Event{}, err
	}
	r := &Reading{DeviceID: device, Time: at, Received: received, Seq: w.Seq}
	typ := TypeDistance
	switch {
	case w.Distance != nil:
		if *w.Distance < 0 || *w.Distance > 1e6 {
			return Event{}, reject(ReasonInvalid, "distance_m %v is out of range", *w.Distance)
		}
		r.Value, r.Units = *w.Distance, "m"
	case w.Detected != nil:
		typ = TypeMotion
		if *w.Detected {
			r.Value = 1
		}
	default:
		return Event{}, reject(ReasonInvalid, "motion payload needs distance_m or detected")
	}
	return Event{DeviceID: device, Site: site, Type: typ, ClientID: clientID, Time: received, Reading: r}, nil
}

// parseMeta reads a device's description of itself.
func parseMeta(payload []byte, site, device, clientID string, received time.Time) (Event, error) {
	var m Meta
	if err := json.Unmarshal(payload, &m); err != nil {
		return Event{}, reject(ReasonMalformed, "meta payload is not a JSON object: %v", err)
	}
	m.Discovery = nil // only Vigil's discovery consumer says that
	if len(m.Capabilities) > 16 || len(m.Name) > 128 || len(m.Zone) > 64 {
		return Event{}, reject(ReasonInvalid, "meta has too many capabilities or too long a name or zone")
	}
	for _, c := range m.Capabilities {
		if !validType(c) {
			return Event{}, reject(ReasonInvalid, "capability %q must be 1-32 lowercase letters, digits, '-' or '_'", c)
		}
	}
	if m.Zone != "" && !vigil.ValidName(m.Zone) {
		return Event{}, reject(ReasonInvalid, "zone %q must be 1-64 letters, digits, '-', '_' or '.'", m.Zone)
	}
	if c := m.Camera; c != nil && (c.Width < 0 || c.Width > 8192 || c.Height < 0 || c.Height > 8192 || c.FPS < 0 || c.FPS > 120) {
		return Event{}, reject(ReasonInvalid, "camera size or rate is out of range")
	}
	return Event{DeviceID: device, Site: site, ClientID: clientID, Time: received, Meta: &m}, nil
}
