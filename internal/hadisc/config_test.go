package hadisc

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/telemetry"
)

func TestParseTopic(t *testing.T) {
	for _, c := range []struct {
		topic string
		ok    bool
		want  Topic
	}{
		{"homeassistant/sensor/abc/config", true, Topic{Component: "sensor", ObjectID: "abc"}},
		{"homeassistant/binary_sensor/node-1/pir_motion/config", true, Topic{Component: "binary_sensor", NodeID: "node-1", ObjectID: "pir_motion"}},
		{"homeassistant/device/0x00158d/config", true, Topic{Component: "device", ObjectID: "0x00158d"}},
		{"homeassistant/status", false, Topic{}},
		{"homeassistant/sensor/a/b/c/config", false, Topic{}},
		{"homeassistant/sensor/a b/config", false, Topic{}},
		{"homeassistant/sensor/abc/state", false, Topic{}},
		{"zigbee2mqtt/sensor/abc/config", false, Topic{}},
	} {
		got, ok := ParseTopic("homeassistant", c.topic)
		if ok != c.ok || got != c.want {
			t.Errorf("%s: %+v %v, want %+v %v", c.topic, got, ok, c.want, c.ok)
		}
	}
}

// Home Assistant's documented device-based discovery example (two
// components sharing a device, an origin and a state topic), abbreviated.
func TestDeviceBasedConfig(t *testing.T) {
	payload := `{"dev":{"ids":"ea334450945afc","name":"Kitchen","mf":"Bla electronics","mdl":"xya","sw":"1.0","sn":"ea334450945afc","hw":"1.0rev2"},
	 "o":{"name":"bla2mqtt","sw":"2.1","url":"https://bla2mqtt.example.com/support"},
	 "cmps":{"some_unique_component_id1":{"p":"sensor","device_class":"temperature","unit_of_measurement":"°C","value_template":"{{ value_json.temperature}}","unique_id":"temp01ae_t"},
	         "some_unique_id2":{"p":"sensor","device_class":"humidity","unit_of_measurement":"%","value_template":"{{ value_json.humidity}}","unique_id":"temp01ae_h"},
	         "a_light":{"p":"light","command_topic":"x/set"}},
	 "stat_t":"sensorBedroom/state","qos":2}`
	cfg, err := Parse("homeassistant", "homeassistant/device/ea334450945afc/config", []byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Entities) != 2 {
		t.Fatalf("%d entities, want 2; ignored %v", len(cfg.Entities), cfg.Ignored)
	}
	for _, e := range cfg.Entities {
		if e.StateTopic != "sensorBedroom/state" || e.Device == nil || e.Device.Name != "Kitchen" || e.Device.Manufacturer != "Bla electronics" || e.Origin != "bla2mqtt 2.1" {
			t.Errorf("%s: shared options not inherited: %+v %+v", e.Key, e, e.Device)
		}
		if !strings.HasPrefix(e.Key, "homeassistant/device/ea334450945afc/config#") {
			t.Errorf("key %q", e.Key)
		}
	}
	if why := cfg.Ignored["homeassistant/device/ea334450945afc/config#a_light"]; !strings.Contains(why, "light") {
		t.Errorf("the light is not said to be ignored: %v", cfg.Ignored)
	}
}

func TestConfigsThatAreNotReadSayWhy(t *testing.T) {
	for _, c := range []struct{ topic, payload, want string }{
		{"homeassistant/sensor/x/config", `not json`, "not a JSON object"},
		{"homeassistant/sensor/x/config", `[1,2]`, "not a JSON object"},
		{"homeassistant/sensor/x/config", `{"name":"x","unit_of_measurement":"W"}`, "no state_topic"},
		{"homeassistant/sensor/x/config", `{"stat_t":"a/#","unit_of_meas":"W"}`, "no wildcards"},
		{"homeassistant/sensor/x/config", `{"stat_t":"a/b","name":"Action"}`, "not a number"},
		{"homeassistant/sensor/x/config", `{"stat_t":"a/b","unit_of_meas":"W","exp_aft":"soon"}`, "expire_after"},
		{"homeassistant/sensor/x/config", `{"stat_t":"a/b","unit_of_meas":"W","avty_mode":"most"}`, "availability_mode"},
		{"homeassistant/switch/x/config", `{"stat_t":"a/b"}`, "this is a \"switch\""},
		{"homeassistant/device/x/config", `{"cmps":{}}`, "needs a device"},
		{"homeassistant/sensor/x/config", `{"stat_t":"a/b","unit_of_meas":"W","name":` + strings.Repeat("[", 100000) + `}`, "at most"},
	} {
		cfg, err := Parse("homeassistant", c.topic, []byte(c.payload))
		msg := ""
		if err != nil {
			msg = err.Error()
		} else {
			for _, why := range cfg.Ignored {
				msg += why
			}
		}
		if !strings.Contains(msg, c.want) {
			t.Errorf("%s %.40s: %q, want it to say %q", c.topic, c.payload, msg, c.want)
		}
	}
}

// The base topic "~", availability with its template and mode, and an
// empty config removing the entity (its device stays, marked removed).
func TestTildeAvailabilityAndRemoval(t *testing.T) {
	bus, out, c, ctx := startConsumer(t, ConsumerConfig{})
	cfg := `{"~":"shed/th","name":"Shed","dev_cla":"temperature","unit_of_meas":"°C","stat_t":"~/SENSOR","val_tpl":"{{ value_json.T | round(1) }}",
	  "avty":[{"t":"~/LWT","pl_avail":"Online","pl_not_avail":"Offline"},{"t":"bridge/state","val_tpl":"{{ value_json.state }}"}],"avty_mode":"all","uniq_id":"shed_t"}`
	bus.publish("homeassistant/sensor/shed_t/config", []byte(cfg), true)
	c.Sync(ctx)
	view := func() EntityView {
		v, ok := c.Entity("shed_t")
		if !ok {
			t.Fatalf("no entity shed_t; problems %v", c.Problems())
		}
		return v
	}
	if v := view(); v.Available || v.Entity.StateTopic != "shed/th/SENSOR" {
		t.Fatalf("before any availability message: %+v", v)
	}
	bus.publish("shed/th/LWT", []byte("Online"), true)
	if view().Available {
		t.Fatal("available with one of two topics (mode all)")
	}
	bus.publish("bridge/state", []byte(`{"state":"online"}`), true)
	if !view().Available {
		t.Fatal("not available with both topics online")
	}
	bus.publish("shed/th/SENSOR", []byte(`{"T":12.345}`), false)
	if v := view(); v.Value == nil || *v.Value != 12.3 {
		t.Fatalf("value %v (%s)", v.Value, v.Error)
	}
	bus.publish("shed/th/SENSOR", []byte(`{"X":1}`), false)
	if v := view(); v.Errors != 1 || !strings.Contains(v.Error, "undefined") {
		t.Fatalf("a state the template cannot read: %d errors, %q", v.Errors, v.Error)
	}
	bus.publish("shed/th/LWT", []byte("Offline"), true)
	if view().Available {
		t.Fatal("available after Offline")
	}
	bus.publish("homeassistant/sensor/shed_t/config", nil, true)
	c.Sync(ctx)
	if _, ok := c.Entity("shed_t"); ok {
		t.Fatal("entity still read after its config was removed")
	}
	out.mu.Lock()
	defer out.mu.Unlock()
	last := out.evs[len(out.evs)-2]
	if last.Meta == nil || !last.Meta.Discovery.Removed || out.evs[len(out.evs)-1].Status != telemetry.StatusOffline {
		t.Fatalf("removal not told to the pipeline: %+v %+v", last, out.evs[len(out.evs)-1])
	}
	var statuses []string
	for _, ev := range out.evs {
		if ev.Status != "" {
			statuses = append(statuses, ev.Status)
		}
	}
	if strings.Join(statuses, ",") != "offline,online,offline,offline" {
		t.Errorf("statuses %v", statuses)
	}
}

func FuzzParse(f *testing.F) {
	for _, fx := range []string{
		`{"~":"a/b","stat_t":"~/s","unit_of_meas":"W","avty":[{"t":"~/l"}],"dev":{"ids":["x"],"name":"n"},"exp_aft":30}`,
		`{"dev":{"ids":"x"},"o":{"name":"o"},"cmps":{"a":{"p":"binary_sensor","stat_t":"s","pl_on":true}},"avty_t":"t"}`,
		`{"stat_t":"x","dev_cla":"motion","name":null,"device":{"connections":[["mac","aa:bb"]]}}`,
	} {
		f.Add("homeassistant/sensor/x/config", []byte(fx))
		f.Add("homeassistant/device/x/config", []byte(fx))
		f.Add("homeassistant/binary_sensor/n/x/config", []byte(fx))
	}
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		cfg, err := Parse("homeassistant", topic, payload)
		if err != nil {
			return
		}
		for _, e := range cfg.Entities {
			if !validTopic(e.StateTopic) || e.Key == "" {
				t.Fatalf("entity with state topic %q key %q", e.StateTopic, e.Key)
			}
			id := DeviceID(e)
			if len(id) > 64 || id == "" {
				t.Fatalf("device id %q", id)
			}
			_ = e.FriendlyName()
		}
	})
}

// expire_after: an entity that says nothing for that long is offline
// until its next state.
func TestExpireAfter(t *testing.T) {
	bus := newMemBus()
	var out sink
	var mu sync.Mutex
	now := time.Unix(1e9, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	c := NewConsumer(ConsumerConfig{Prefix: "homeassistant", Site: "home", Put: out.put, Now: clock}, bus, slog.New(slog.DiscardHandler), nil)
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.Start())
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	bus.publish("homeassistant/sensor/garage/t/config", []byte(`{"stat_t":"garage/t","unit_of_meas":"°C","dev_cla":"temperature","exp_aft":300,"uniq_id":"garage_t"}`), true)
	must(c.Sync(ctx))
	bus.publish("garage/t", []byte("12.5"), false)
	advance := func(d time.Duration) {
		mu.Lock()
		now = now.Add(d)
		mu.Unlock()
		c.expire()
	}
	available := func() bool { v, _ := c.Entity("garage_t"); return v.Available }
	advance(299 * time.Second)
	if !available() {
		t.Fatal("expired before expire_after")
	}
	advance(2 * time.Second)
	if available() {
		t.Fatal("still available 301 s after its last state with expire_after 300")
	}
	bus.publish("garage/t", []byte("12.6"), false)
	if !available() {
		t.Fatal("not available again after a state")
	}
	out.mu.Lock()
	defer out.mu.Unlock()
	var statuses []string
	for _, ev := range out.evs {
		if ev.Status != "" {
			statuses = append(statuses, ev.Status)
		}
	}
	if strings.Join(statuses, ",") != "offline,online" {
		t.Errorf("statuses told to the pipeline: %v", statuses)
	}
}

// A device-based config's components inherit only the shared options; a
// component that is only its platform is removed; availability entries
// default to online/offline whatever the top level says, and one object
// is a list of one.
func TestSharedOptionsAndAvailabilityDefaults(t *testing.T) {
	cfg, err := Parse("homeassistant", "homeassistant/device/d1/config", []byte(`{"dev":{"ids":"d1","name":"D"},"o":{"name":"x"},
	  "stat_t":"d1/state","uniq_id":"top","val_tpl":"{{ 1 }}","unit_of_meas":"W",
	  "cmps":{"t":{"p":"sensor","uniq_id":"d1_t","dev_cla":"temperature","unit_of_meas":"°C"},"gone":{"p":"sensor"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Entities) != 1 {
		t.Fatalf("entities %d (a platform-only component is a removal)", len(cfg.Entities))
	}
	e := cfg.Entities[0]
	if e.UniqueID != "d1_t" || e.HasTemplate || e.Unit != "°C" || e.StateTopic != "d1/state" || e.Device.Name != "D" {
		t.Errorf("component %+v: inherited more than the shared options", e)
	}
	cfg, err = Parse("homeassistant", "homeassistant/sensor/s/config", []byte(`{"stat_t":"s","unit_of_meas":"W","pl_avail":"up","pl_not_avail":"down",
	  "avty":{"t":"s/lwt"}}`))
	if err != nil || len(cfg.Entities) != 1 {
		t.Fatalf("%v %+v", err, cfg)
	}
	if a := cfg.Entities[0].Availability; len(a) != 1 || a[0].Topic != "s/lwt" || a[0].PayloadAvailable != "online" || a[0].PayloadNotAvailable != "offline" {
		t.Errorf("availability %+v", a)
	}
}
