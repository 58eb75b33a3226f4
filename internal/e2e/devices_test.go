package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/eclipse/paho.golang/paho"

	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/coord"
	"github.com/vigilhq/vigil/internal/detect"
	"github.com/vigilhq/vigil/internal/hadisc"
	"github.com/vigilhq/vigil/internal/sub"
	"github.com/vigilhq/vigil/internal/telemetry"
	"github.com/vigilhq/vigil/internal/testkit"
	"github.com/vigilhq/vigil/internal/testpeer"
	"github.com/vigilhq/vigil/internal/users"
)

type (
	deviceFixture  = testkit.DeviceFixture
	fixtureMessage = testkit.FixtureMessage
)

func deviceFixtures(t *testing.T) map[string]deviceFixture {
	return testkit.DeviceFixtures(t, "testdata/devices")
}

// mosquittoPub publishes one message as a bridge (Zigbee2MQTT, Tasmota...)
// does, with Debian's mosquitto_pub.
func mosquittoPub(t *testing.T, ta *testApp, user, password string, m fixtureMessage) {
	t.Helper()
	args := []string{"-h", "127.0.0.1", "-p", ta.mqttPort(), "-u", user, "-P", password, "-q", "1", "-t", m.Topic}
	if m.Retain {
		args = append(args, "-r")
	}
	if m.Payload == "" {
		args = append(args, "-n")
	} else {
		args = append(args, "-m", m.Payload)
	}
	if out, err := exec.Command(testpeer.Need(t, "mosquitto_pub"), args...).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub %s: %v: %s", m.Topic, err, out)
	}
}

// replay publishes a fixture as a bridge does when it starts: its
// retained messages (configs, availability) first, then its states once
// listed says the configs are read. A state sent before its subscription
// exists is lost on any broker; a real bridge keeps sending them.
func replay(t *testing.T, fx deviceFixture, pub func(fixtureMessage), listed func() bool) {
	t.Helper()
	for _, m := range fx.Messages {
		if m.Retain {
			pub(m)
		}
	}
	testkit.WaitFor(t, 10*time.Second, "the fixture's devices listed", listed)
	for _, m := range fx.Messages {
		if !m.Retain {
			pub(m)
		}
	}
}

// listed reports whether every device fx expects is in ds.
func listed(fx deviceFixture, ds []telemetry.Device) bool {
	for _, want := range fx.Expect {
		id := hadisc.DeviceID(&hadisc.Entity{UniqueID: want.UniqueID})
		if !slices.ContainsFunc(ds, func(d telemetry.Device) bool { return d.ID == id }) {
			return false
		}
	}
	return true
}

// bridgeACL lets a bridge account publish the fixtures' topics, as a user
// gives Zigbee2MQTT its own tree and the discovery prefix.
func bridgeACL(fxs map[string]deviceFixture) []string {
	var acl []string
	for _, fx := range fxs {
		for _, m := range fx.Messages {
			p := strings.SplitN(m.Topic, "/", 2)[0] + "/#"
			if !slices.Contains(acl, p) {
				acl = append(acl, p)
			}
		}
	}
	return acl
}

// TestRealDevicesThroughDiscovery replays what Zigbee2MQTT, Tasmota,
// ESPHome and Shelly publish into a running Vigil with mosquitto_pub: each
// entity becomes a device with its name, type, unit and value; then a
// Zigbee2MQTT motion sensor placed in an armed zone records that zone's
// camera on "occupancy": true, and not on false or once disarmed.
func TestRealDevicesThroughDiscovery(t *testing.T) {
	fxs := deviceFixtures(t)
	ta := startApp(t, func(c *conf.Config) {
		intrusionConfig(t, c)
		c.Recording.ClipSeconds = 4
		c.Detection.Zones = map[string]conf.Zone{"hall": {Cameras: []string{"hallcam"}}}
		c.HomeAssistant.Devices = map[string]conf.Placement{"Hallway motion": {Site: "home", Zone: "hall"}}
	})
	addUser(t, ta, "bridge", users.RoleDevice, "bridge-password", bridgeACL(fxs), []string{"homeassistant/#"})

	for _, family := range []string{"zigbee2mqtt", "tasmota", "esphome", "shelly"} {
		fx := fxs[family]
		start := time.Now()
		replay(t, fx, func(m fixtureMessage) { mosquittoPub(t, ta, "bridge", "bridge-password", m) }, func() bool { return listed(fx, ta.devices(t)) })
		published := time.Since(start)
		byID := func() map[string]telemetry.Device {
			out := map[string]telemetry.Device{}
			for _, d := range ta.devices(t) {
				out[d.ID] = d
			}
			return out
		}
		// Every entity, with the value of the last state.
		testkit.WaitFor(t, 5*time.Second, family+"'s devices and values", func() bool {
			ds := byID()
			for _, want := range fx.Expect {
				d, ok := ds[hadisc.DeviceID(&hadisc.Entity{UniqueID: want.UniqueID})]
				if !ok || (want.Value != nil && (d.LastValue == nil || math.Abs(*d.LastValue-*want.Value) > 1e-9)) {
					return false
				}
			}
			return true
		})
		t.Logf("%s: %d messages published in %v (states once the configs were read); every device and value in the API %v after the first", family, len(fx.Messages),
			published.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
		ds := byID()
		for _, want := range fx.Expect {
			id := hadisc.DeviceID(&hadisc.Entity{UniqueID: want.UniqueID})
			d := ds[id]
			typ := want.DeviceClass
			if typ == "" {
				typ = map[string]string{"sensor": "sensor", "binary_sensor": "binary"}[want.Component]
			}
			if d.Meta == nil || d.Meta.Discovery == nil {
				t.Errorf("%s %s: no discovery meta: %+v", family, id, d)
				continue
			}
			disc := d.Meta.Discovery
			if d.Meta.Name != want.Name || d.Type != typ || d.Units != want.Units || d.Site != "default" && d.Site != "home" ||
				disc.DeviceName != want.Device.Name || disc.Model != want.Device.Model || disc.Manufacturer != want.Device.Manufacturer ||
				disc.Component != want.Component || !strings.HasPrefix(disc.ConfigTopic, "homeassistant/") {
				t.Errorf("%s %s: %q type %q units %q device %q/%q/%q, want %q %q %q %+v", family, id, d.Meta.Name, d.Type, d.Units,
					disc.DeviceName, disc.Model, disc.Manufacturer, want.Name, typ, want.Units, want.Device)
			}
			if want.Value == nil && d.LastValue != nil {
				t.Errorf("%s %s: value %v, want none (Home Assistant shows unknown)", family, id, *d.LastValue)
			}
			if d.Status != telemetry.StatusOnline {
				t.Errorf("%s %s: %s, want online", family, id, d.Status)
			}
		}
	}

	// The motion sensor, placed in zone hall by its device name.
	motion := hadisc.DeviceID(&hadisc.Entity{UniqueID: "0x00158d0001a2b3c4_occupancy_zigbee2mqtt"})
	if d := ta.devices(t); !slices.ContainsFunc(d, func(d telemetry.Device) bool { return d.ID == motion && d.Site == "home" && d.Meta.Zone == "hall" }) {
		t.Fatalf("the motion sensor is not in home/hall: %+v", d)
	}
	cam := newManualCamera(t, ta, "home", "hallcam")
	testkit.WaitFor(t, 20*time.Second, "an agent", func() bool {
		v := ta.view(t)
		return liveAgents(v) == 1 && v.Agents[0].Status == "ready"
	})
	state := func(occupancy bool) fixtureMessage {
		return fixtureMessage{Topic: "zigbee2mqtt/Hallway motion",
			Payload: fmt.Sprintf(`{"battery":100,"device_temperature":26,"illuminance":24,"linkquality":102,"occupancy":%v,"power_outage_count":5,"voltage":3005}`, occupancy)}
	}
	events := func() []detect.Event {
		var evs []detect.Event
		ta.api(t, "GET", "/api/v1/events?site=home", "admin", adminPassword, &evs)
		return evs
	}
	mosquittoPub(t, ta, "bridge", "bridge-password", state(false))
	time.Sleep(time.Second)
	if evs := events(); len(evs) != 0 {
		t.Fatalf("occupancy false made events: %+v", evs)
	}
	mosquittoPub(t, ta, "bridge", "bridge-password", state(true))
	cmd := cam.command(t)
	out, err := exec.Command(testpeer.Need(t, "ffmpeg"), "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=10",
		"-t", fmt.Sprint(cmd.Duration), "-c:v", "mjpeg", "-pix_fmt", "yuvj420p", "-huffman", "default",
		"-f", "rtp", "-ssrc", fmt.Sprint(cmd.SSRC), fmt.Sprintf("rtp://%s:%d", cmd.Host, cmd.Port)).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, out)
	}
	var clip coord.Clip
	testkit.WaitFor(t, 30*time.Second, "the clip", func() bool {
		cs := ta.clips(t, "home")
		if len(cs) == 1 && cs[0].State == coord.ClipReady {
			clip = cs[0]
			return true
		}
		return false
	})
	checkClipFile(t, ta, clip, 4)
	evs := events()
	if len(evs) != 1 || evs[0].Sensor != motion || !slices.Equal(evs[0].Cameras, []string{"hallcam"}) {
		t.Fatalf("events %+v, want one by %s on hallcam", evs, motion)
	}

	// Disarmed: the sensor seeing someone again records nothing.
	if code := ta.api(t, "POST", "/api/v1/sites/home/disarm", "admin", adminPassword, nil); code != 200 {
		t.Fatalf("disarm: %d", code)
	}
	mosquittoPub(t, ta, "bridge", "bridge-password", state(false))
	mosquittoPub(t, ta, "bridge", "bridge-password", state(true))
	time.Sleep(time.Second)
	if evs := events(); len(evs) != 1 {
		t.Fatalf("a disarmed site recorded: %+v", evs)
	}
}

// haClient is Home Assistant's side: a login allowed what Home Assistant
// needs, the messages it receives (last per topic).
type haClient struct {
	mu   sync.Mutex
	msgs map[string]string
}

func (h *haClient) get(topic string) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	v, ok := h.msgs[topic]
	return v, ok
}

func (h *haClient) topics(prefix string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for t, v := range h.msgs {
		if strings.HasPrefix(t, prefix) && v != "" {
			out = append(out, t)
		}
	}
	slices.Sort(out)
	return out
}

// TestVigilInHomeAssistant: Vigil announces itself once Home Assistant's
// birth message is on the prefix; its site's alarm panel arms and disarms
// through the command topic for a login allowed to, and not for one that
// is not; states follow.
func TestVigilInHomeAssistant(t *testing.T) {
	ta := startApp(t, func(c *conf.Config) { intrusionConfig(t, c) })
	addUser(t, ta, "homeassistant", users.RoleDevice, "ha-password",
		[]string{"homeassistant/#", "vigil/+/mode/set"}, []string{"homeassistant/#", hadisc.StateRoot + "/#", "vigil/nodes/+/state"})
	addUser(t, ta, "guest", users.RoleViewer, "guest-password", nil, nil)
	must(t, ta.Broker.Publish("vigil/home/temp1/telemetry", []byte(`{"type":"temperature","value":21.5,"units":"C"}`), false, 1))
	testkit.WaitFor(t, 5*time.Second, "the device", func() bool { return len(ta.devices(t)) == 1 })

	ha := &haClient{msgs: map[string]string{}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := sub.Subscribe(ctx, sub.Options{Brokers: []string{ta.mqttAddr()}, Username: "homeassistant", Password: "ha-password",
		Filters: []string{"homeassistant/#", hadisc.StateRoot + "/#", "vigil/nodes/+/state"}, QoS: 1}, func(m sub.Message) {
		ha.mu.Lock()
		ha.msgs[m.Topic] = string(m.Payload)
		ha.mu.Unlock()
	})
	must(t, err)
	defer s.Close()
	time.Sleep(time.Second)
	if got := ha.topics("homeassistant/device/"); len(got) != 0 {
		t.Fatalf("Vigil announced itself before anything used the prefix: %v", got)
	}
	pub, _, err := mqttConnect(t, ta.mqttAddr(), "ha-core", "homeassistant", "ha-password")
	must(t, err)
	r, err := pub.Publish(ctx, &paho.Publish{Topic: "homeassistant/status", QoS: 1, Payload: []byte("online")})
	if err != nil || r.ReasonCode >= 0x80 {
		t.Fatalf("birth message: %v %+v", err, r)
	}
	start := time.Now()
	want := []string{"homeassistant/device/vigil_dev_home_temp1/config", "homeassistant/device/vigil_server/config", "homeassistant/device/vigil_site_home/config"}
	testkit.WaitFor(t, 5*time.Second, "Vigil's configs", func() bool { return slices.Equal(ha.topics("homeassistant/device/"), want) })
	t.Logf("configs %v retained %v after Home Assistant's birth message", want, time.Since(start).Round(time.Millisecond))
	cfg, _ := ha.get("homeassistant/device/vigil_site_home/config")
	var site struct {
		Availability []struct{ Topic string }
		Components   map[string]map[string]any
	}
	must(t, json.Unmarshal([]byte(cfg), &site))
	alarm := site.Components["alarm"]
	if alarm["platform"] != "alarm_control_panel" || alarm["command_topic"] != "vigil/home/mode/set" || len(site.Availability) != 1 {
		t.Fatalf("site config %s", cfg)
	}
	testkit.WaitFor(t, 5*time.Second, "the states", func() bool {
		a, _ := ha.get(hadisc.StateRoot + "/home/alarm")
		v, _ := ha.get(hadisc.StateRoot + "/home/temp1/state")
		on, _ := ha.get(site.Availability[0].Topic)
		return a == "armed_away" && v == "21.5" && on == "online"
	})

	// Disarm as Home Assistant does: its payload_disarm on the command topic.
	r, err = pub.Publish(ctx, &paho.Publish{Topic: alarm["command_topic"].(string), QoS: 1, Payload: []byte(alarm["payload_disarm"].(string))})
	if err != nil || r.ReasonCode >= 0x80 {
		t.Fatalf("disarm: %v %+v", err, r)
	}
	testkit.WaitFor(t, 5*time.Second, "the site disarmed, and its alarm panel too", func() bool {
		a, _ := ha.get(hadisc.StateRoot + "/home/alarm")
		var sites []detect.Site
		ta.api(t, "GET", "/api/v1/sites", "admin", adminPassword, &sites)
		return a == "disarmed" && len(sites) == 1 && !sites[0].Armed
	})
	// A login that may not arm is refused, and nothing changes.
	guest, _, err := mqttConnect(t, ta.mqttAddr(), "guest-1", "guest", "guest-password")
	must(t, err)
	r, _ = guest.Publish(ctx, &paho.Publish{Topic: "vigil/home/mode/set", QoS: 1, Payload: []byte("arm")})
	if r == nil || r.ReasonCode != 0x87 {
		t.Fatalf("a viewer arming: %+v, want not authorized (0x87)", r)
	}
	time.Sleep(300 * time.Millisecond)
	var sites []detect.Site
	ta.api(t, "GET", "/api/v1/sites", "admin", adminPassword, &sites)
	if len(sites) != 1 || sites[0].Armed {
		t.Fatalf("the viewer armed the site: %+v", sites)
	}
	r, err = pub.Publish(ctx, &paho.Publish{Topic: "vigil/home/mode/set", QoS: 1, Payload: []byte(alarm["payload_arm_away"].(string))})
	if err != nil || r.ReasonCode >= 0x80 {
		t.Fatalf("arm: %v %+v", err, r)
	}
	testkit.WaitFor(t, 5*time.Second, "armed again", func() bool {
		a, _ := ha.get(hadisc.StateRoot + "/home/alarm")
		return a == "armed_away"
	})

	// Deleting a device removes its config from Home Assistant.
	if code := ta.api(t, "DELETE", "/api/v1/devices/temp1", "admin", adminPassword, nil); code != 200 {
		t.Fatalf("delete: %d", code)
	}
	testkit.WaitFor(t, 5*time.Second, "the device's config removed", func() bool {
		v, ok := ha.get("homeassistant/device/vigil_dev_home_temp1/config")
		return ok && v == ""
	})
	if code := ta.api(t, "GET", "/api/v1/devices/temp1", "admin", adminPassword, nil); code != 404 {
		t.Errorf("the deleted device: %d, want 404", code)
	}
}

// TestDiscoveredDevicesInTheBrowser: with the devices page open in
// headless Chromium, each family's devices appear (by their names) once
// their retained configs are published, without a reload; a discovered
// device's page shows what its config says, and an admin places it in a
// zone there.
func TestDiscoveredDevicesInTheBrowser(t *testing.T) {
	fxs := deviceFixtures(t)
	ta := startApp(t, func(c *conf.Config) { intrusionConfig(t, c) })
	addUser(t, ta, "bridge", users.RoleDevice, "bridge-password", bridgeACL(fxs), []string{"homeassistant/#"})
	c := newChrome(t, "http://"+ta.HTTP.Addr().String())
	c.login("admin", adminPassword)
	c.run("open the devices page", chromedp.Navigate(c.base+"/devices"), chromedp.WaitVisible("#device-table"),
		// When each row first appears, by the page's clock.
		chromedp.Evaluate(`window.marker = 1; window.seen = {};
		  new MutationObserver(() => { for (const r of document.querySelectorAll('#device-table tbody tr')) { window.seen[r.dataset.device] ??= Date.now(); } })
		    .observe(document.querySelector('#device-table tbody'), { childList: true, subtree: true });`, nil))
	c.waitJS("the live stream", `document.getElementById('live-status').classList.contains('on')`, 10*time.Second)
	for _, family := range []string{"zigbee2mqtt", "tasmota", "esphome", "shelly"} {
		fx := fxs[family]
		sent := map[string]time.Time{} // by unique_id: when its config was published
		for _, m := range fx.Messages {
			if !strings.HasSuffix(m.Topic, "/config") {
				continue
			}
			at := time.Now()
			mosquittoPub(t, ta, "bridge", "bridge-password", m)
			for _, want := range fx.Expect {
				if _, ok := sent[want.UniqueID]; !ok && strings.Contains(m.Payload, want.UniqueID) {
					sent[want.UniqueID] = at
				}
			}
		}
		for _, want := range fx.Expect {
			id := hadisc.DeviceID(&hadisc.Entity{UniqueID: want.UniqueID})
			// Its row, with its name (Tasmota names a device in a later
			// config of the same device: the row is named again).
			c.waitJS(family+" "+id+" in the list", fmt.Sprintf(`window.seen[%q] !== undefined && window.marker === 1 &&
			  [...document.querySelectorAll('#device-table tbody tr')].some(r => r.dataset.device === %q && r.textContent.includes(%q))`, id, id, want.Name), 10*time.Second)
			var at float64
			c.run("read when it appeared", chromedp.Evaluate(fmt.Sprintf(`window.seen[%q]`, id), &at))
			ms := int64(at) - sent[want.UniqueID].UnixMilli()
			t.Logf("%s %s: in the browser %d ms after mosquitto_pub started publishing its config", family, id, ms)
			if ms > 5000 {
				t.Errorf("%s %s appeared %d ms after its config", family, id, ms)
			}
		}
	}
	c.screenshot("discovered-devices")

	motion := hadisc.DeviceID(&hadisc.Entity{UniqueID: "0x00158d0001a2b3c4_occupancy_zigbee2mqtt"})
	c.run("open the motion sensor's page", chromedp.Navigate(c.base+"/devices/"+motion), chromedp.WaitVisible("#discovery"))
	c.waitJS("its discovery card", `document.getElementById('discovery-facts').textContent.includes('Aqara') &&
	  document.getElementById('discovery-facts').textContent.includes('homeassistant/binary_sensor/0x00158d0001a2b3c4/occupancy/config')`, 10*time.Second)
	c.run("place it in zone hall", chromedp.SetValue("#placement input[name=site]", "home"), chromedp.SetValue("#placement input[name=zone]", "hall"),
		chromedp.Click("#placement button"))
	testkit.WaitFor(t, 10*time.Second, "the sensor (and its device's other entities) in home/hall", func() bool {
		n := 0
		for _, d := range ta.devices(t) {
			if strings.HasPrefix(d.ID, "0x00158d0001a2b3c4_") && d.Site == "home" && d.Meta != nil && d.Meta.Zone == "hall" {
				n++
			}
		}
		return n == 3 // occupancy, illuminance, battery
	})
	c.screenshot("discovered-device-placed")
}
