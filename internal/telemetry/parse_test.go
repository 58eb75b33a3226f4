package telemetry

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil"
)

var seoul, _ = time.LoadLocation("Asia/Seoul")

func testParser() *Parser {
	return &Parser{MaxPayload: 512, LegacySite: "default", LegacyTZ: seoul}
}

// seedPayload is byte for byte what the paper's script publishes
// (json.dumps(data_payload, indent=4)).
const seedPayload = `{
    "sensor_id": "1",
    "type": "temperature",
    "timestamp": "21-11-2026 10:15:30",
    "value": 23.45,
    "units": "Celsius"
}`

func TestParseAccepts(t *testing.T) {
	now := time.Date(2026, 11, 21, 1, 15, 31, 0, time.UTC)
	seq, seq41 := int64(7), int64(41)
	tests := []struct {
		name, topic, payload string
		want                 Event
	}{
		{"the paper's payload on its topic", "sensors/temperature", seedPayload, Event{
			DeviceID: "1", Site: "default", Type: "temperature", ClientID: "TempPub", Time: now,
			Reading: &Reading{DeviceID: "1", Time: time.Date(2026, 11, 21, 10, 15, 30, 0, seoul), Received: now, Value: 23.45, Units: "Celsius"},
		}},
		{"a numeric sensor_id and a type from the topic", "sensors/humidity", `{"sensor_id": 12, "value": 40}`, Event{
			DeviceID: "12", Site: "default", Type: "humidity", ClientID: "TempPub", Time: now,
			Reading: &Reading{DeviceID: "12", Time: now, Received: now, Value: 40},
		}},
		{"a native reading with RFC 3339 time and seq", "vigil/home/02aabbccddee/telemetry",
			`{"type":"temperature","timestamp":"2026-11-21T01:15:30.5Z","value":-3.25,"units":"Celsius","seq":7}`, Event{
				DeviceID: "02aabbccddee", Site: "home", Type: "temperature", ClientID: "TempPub", Time: now,
				Reading: &Reading{DeviceID: "02aabbccddee", Time: time.Date(2026, 11, 21, 1, 15, 30, 5e8, time.UTC), Received: now, Value: -3.25, Units: "Celsius", Seq: &seq},
			}},
		{"a door contact as a boolean, Unix ms time", "vigil/home/door1/telemetry", `{"type":"door","value":true,"timestamp":1795223730000}`, Event{
			DeviceID: "door1", Site: "home", Type: "door", ClientID: "TempPub", Time: now,
			Reading: &Reading{DeviceID: "door1", Time: time.UnixMilli(1795223730000), Received: now, Value: 1},
		}},
		{"a clock a year off is replaced by the arrival time", "vigil/home/d/telemetry", `{"value":1,"timestamp":"2025-01-01T00:00:00Z"}`, Event{
			DeviceID: "d", Site: "home", ClientID: "TempPub", Time: now,
			Reading: &Reading{DeviceID: "d", Time: now, Received: now, Value: 1},
		}},
		{"a plain status", "vigil/home/d/status", " Offline\n", Event{DeviceID: "d", Site: "home", ClientID: "TempPub", Time: now, Status: "offline"}},
		{"a JSON status", "vigil/home/d/status", `{"status":"online"}`, Event{DeviceID: "d", Site: "home", ClientID: "TempPub", Time: now, Status: "online"}},
		{"an IR distance on the motion topic", "vigil/home/pi1/motion", `{"distance_m": 0.8}`, Event{
			DeviceID: "pi1", Site: "home", Type: "distance", ClientID: "TempPub", Time: now,
			Reading: &Reading{DeviceID: "pi1", Time: now, Received: now, Value: 0.8, Units: "m"},
		}},
		{"a distance with its seq, which tells a redelivery", "vigil/home/pi1/motion", `{"distance_m": 0.5, "seq": 41}`, Event{
			DeviceID: "pi1", Site: "home", Type: "distance", ClientID: "TempPub", Time: now,
			Reading: &Reading{DeviceID: "pi1", Time: now, Received: now, Value: 0.5, Units: "m", Seq: &seq41},
		}},
		{"a motion detector's yes", "vigil/home/pir/motion", `{"detected": true}`, Event{
			DeviceID: "pir", Site: "home", Type: "motion", ClientID: "TempPub", Time: now,
			Reading: &Reading{DeviceID: "pir", Time: now, Received: now, Value: 1},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := testParser().Parse(tt.topic, []byte(tt.payload), "TempPub", now)
			if err != nil {
				t.Fatal(err)
			}
			if !eventsEqual(got, tt.want) {
				t.Errorf("got  %+v %+v\nwant %+v %+v", got, got.Reading, tt.want, tt.want.Reading)
			}
		})
	}
}

func eventsEqual(a, b Event) bool {
	if a.DeviceID != b.DeviceID || a.Site != b.Site || a.Type != b.Type || a.ClientID != b.ClientID || !a.Time.Equal(b.Time) || a.Status != b.Status {
		return false
	}
	if (a.Reading == nil) != (b.Reading == nil) {
		return false
	}
	if a.Reading == nil {
		return true
	}
	ra, rb := a.Reading, b.Reading
	if (ra.Seq == nil) != (rb.Seq == nil) || (ra.Seq != nil && *ra.Seq != *rb.Seq) {
		return false
	}
	return ra.DeviceID == rb.DeviceID && ra.Time.Equal(rb.Time) && ra.Received.Equal(rb.Received) && ra.Value == rb.Value && ra.Units == rb.Units
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name, topic, payload, reason string
	}{
		{"a payload over the limit", "vigil/s/d/telemetry", `{"value":1,"units":"` + strings.Repeat("x", 600) + `"}`, ReasonOversized},
		{"text that is not JSON", "vigil/s/d/telemetry", `hello`, ReasonMalformed},
		{"a JSON array", "vigil/s/d/telemetry", `[1,2]`, ReasonMalformed},
		{"two objects", "vigil/s/d/telemetry", `{"value":1}{"value":2}`, ReasonMalformed},
		{"bytes that are not UTF-8", "vigil/s/d/telemetry", "{\"value\":1,\"units\":\"\xff\"}", ReasonMalformed},
		{"a missing value", "vigil/s/d/telemetry", `{"type":"temperature"}`, ReasonInvalid},
		{"a string value", "vigil/s/d/telemetry", `{"value":"23.4"}`, ReasonInvalid},
		{"a huge number", "vigil/s/d/telemetry", `{"value":1e999}`, ReasonInvalid},
		{"a missing sensor_id on the paper's topic", "sensors/temperature", `{"value":1}`, ReasonInvalid},
		{"a sensor_id with a slash", "sensors/temperature", `{"sensor_id":"a/b","value":1}`, ReasonInvalid},
		{"a bad timestamp", "vigil/s/d/telemetry", `{"value":1,"timestamp":"yesterday"}`, ReasonInvalid},
		{"a type with capitals", "vigil/s/d/telemetry", `{"value":1,"type":"Temp"}`, ReasonInvalid},
		{"a device name with spaces", "vigil/s/my device/telemetry", `{"value":1}`, ReasonInvalid},
		{"an unknown status", "vigil/s/d/status", `maybe`, ReasonInvalid},
		{"a deeper sensors topic", "sensors/a/b", `{"value":1}`, ReasonUnknownTopic},
		{"a motion message with neither field", "vigil/s/d/motion", `{"near":true}`, ReasonInvalid},
		{"a negative distance", "vigil/s/d/motion", `{"distance_m":-1}`, ReasonInvalid},
		{"a meta with a bad capability", "vigil/s/d/meta", `{"capabilities":["Camera!"]}`, ReasonInvalid},
		{"a meta that is not JSON", "vigil/s/d/meta", `camera`, ReasonMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := testParser().Parse(tt.topic, []byte(tt.payload), "c", time.Now())
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("err = %v, want a *ParseError", err)
			}
			if pe.Reason != tt.reason {
				t.Errorf("reason = %s (%v), want %s", pe.Reason, pe, tt.reason)
			}
		})
	}
}

// FuzzParse checks that no payload or topic crashes the parser and that
// whatever it accepts is storable: a valid device id and site, a finite
// value, a time.
func FuzzParse(f *testing.F) {
	f.Add("sensors/temperature", []byte(seedPayload))
	f.Add("vigil/home/dev/telemetry", []byte(`{"value":1.5,"seq":3,"timestamp":"2026-11-21T01:00:00Z","units":"%"}`))
	f.Add("vigil/home/dev/status", []byte(`offline`))
	f.Add("vigil/home/dev/telemetry", []byte(`{"value":true,"timestamp":1700000000}`))
	f.Add("sensors/x", []byte(`{"sensor_id":9e300,"value":null}`))
	f.Add("vigil/home/pi1/motion", []byte(`{"distance_m":0.8}`))
	f.Add("vigil/home/pi1/motion", []byte(`{"detected":true,"timestamp":"2026-11-21T01:00:00Z"}`))
	f.Add("vigil/home/pi1/meta", []byte(`{"capabilities":["motion","camera"],"zone":"hall","priority":5,"camera":{"width":640,"height":480,"fps":15}}`))
	p := testParser()
	now := time.Now()
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		ev, err := p.Parse(topic, payload, "c", now)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error is not a *ParseError: %v", err)
			}
			return
		}
		if !vigil.ValidName(ev.DeviceID) || !vigil.ValidName(ev.Site) {
			t.Fatalf("accepted an unusable name: %q %q", ev.Site, ev.DeviceID)
		}
		kinds := 0
		for _, set := range []bool{ev.Reading != nil, ev.Status != "", ev.Meta != nil} {
			if set {
				kinds++
			}
		}
		if kinds != 1 {
			t.Fatalf("event is not exactly one of reading, status, meta: %+v", ev)
		}
		if r := ev.Reading; r != nil {
			if math.IsNaN(r.Value) || math.IsInf(r.Value, 0) || r.Time.IsZero() {
				t.Fatalf("accepted an unstorable reading: %+v", r)
			}
			if d := r.Time.Sub(now); d > maxClockSkew || d < -maxClockSkew {
				t.Fatalf("accepted a time %v away", d)
			}
		}
	})
}

func TestParseMeta(t *testing.T) {
	ev, err := testParser().Parse("vigil/home/pi1/meta", []byte(`{"capabilities":["motion","camera"],"zone":"hall","priority":5,"camera":{"width":640,"height":480,"fps":15}}`), "pi1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	m := ev.Meta
	if !m.Has(CapCamera) || !m.Has(CapMotion) || m.Has("siren") || m.Zone != "hall" || m.Priority != 5 || m.Camera.FPS != 15 || ev.Reading != nil {
		t.Errorf("meta = %+v", m)
	}
}

func TestVigilsOwnTopicLevelsAreNoDevicesOrSites(t *testing.T) {
	p := &Parser{MaxPayload: 8192, LegacySite: "lab", LegacyTZ: time.UTC}
	for _, topic := range []string{"vigil/agents/a-1/telemetry", "vigil/home/mode/telemetry", "vigil/home/alerts/status"} {
		if _, err := p.Parse(topic, []byte(`{"value": 1}`), "c", time.Now()); err == nil {
			t.Errorf("%s was accepted as a device's message", topic)
		}
	}
	if _, err := p.Parse("sensors/temperature", []byte(`{"sensor_id": "mode", "value": 1}`), "c", time.Now()); err == nil {
		t.Error(`sensor_id "mode" was accepted`)
	}
}

// BenchmarkParseReading parses what a simulated device publishes on its
// telemetry topic, as the broker's ingest hook does for every reading.
func BenchmarkParseReading(b *testing.B) {
	p := &Parser{MaxPayload: 8192, LegacySite: "lab", LegacyTZ: time.UTC}
	payload := []byte(`{"sensor_id":"c2bcd8bad7e4","type":"temperature","timestamp":"2026-12-05T11:11:02.695Z","value":21.37,"units":"C","seq":4711}`)
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Parse("vigil/bench/c2bcd8bad7e4/telemetry", payload, "c2bcd8bad7e4", now); err != nil {
			b.Fatal(err)
		}
	}
}
