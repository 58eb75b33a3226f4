package e2e_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/app"
	"github.com/vigilhq/vigil/internal/audit"
	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/coord"
	"github.com/vigilhq/vigil/internal/sim"
	"github.com/vigilhq/vigil/internal/testkit"
	"github.com/vigilhq/vigil/internal/testpeer"
)

// The logins of docs/mosquitto/acl.
var externalLogins = map[string]string{"vigil": "node-secret-1", "vigil-agent": "agent-secret-2", "home": "site-secret-3",
	"homeassistant": "ha-secret-4", "zigbee2mqtt": "z2m-secret-5"}

// externalMosquitto is a Mosquitto 2 with a password file and the ACL of
// docs/mosquitto/acl, as it is; port 0 picks a free one. Anonymous clients
// are let in (its only listener is on loopback), as the paper's script
// needs, and the ACL holds them to sensors/#.
func externalMosquitto(t testing.TB, port int) *testpeer.Mosquitto {
	t.Helper()
	acl, err := os.ReadFile("../../docs/mosquitto/acl")
	must(t, err)
	return testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Anonymous: true, Users: externalLogins, ACL: string(acl), Port: port})
}

// externalConfig points a Vigil at m with the documented logins; the
// passwords are in files, as mqtt.password_file would have them.
func externalConfig(t testing.TB, m *testpeer.Mosquitto) func(*conf.Config) {
	dir := t.TempDir()
	file := func(name string) string {
		p := filepath.Join(dir, name)
		must(t, os.WriteFile(p, []byte(externalLogins[name]+"\n"), 0o600))
		return p
	}
	node, agent := file("vigil"), file("vigil-agent")
	return func(c *conf.Config) {
		c.MQTT.Mode = conf.MQTTExternal
		c.MQTT.URLs = []string{fmt.Sprintf("mqtt://127.0.0.1:%d", m.Port)}
		c.MQTT.Username, c.MQTT.PasswordFile = "vigil", node
		c.MQTT.AgentUsername, c.MQTT.AgentPasswordFile = "vigil-agent", agent
	}
}

// On an external Mosquitto with a password file and the documented ACL,
// Vigil does what it does on its own broker: the paper's unmodified script
// and a `vigil sim` fleet are stored (every acknowledged reading once), an
// intruder is recorded by an agent that logs in to Mosquitto, and the
// clip plays; the self-audit audits Mosquitto.
func TestVigilOnAnExternalMosquitto(t *testing.T) {
	python := "/usr/bin/python3"
	if out, err := exec.Command(python, "-c", "import paho.mqtt.client").CombinedOutput(); err != nil {
		testpeer.Need(t, "python3-paho-mqtt")
		t.Fatalf("paho-mqtt for %s: %v: %s", python, err, out)
	}
	m := externalMosquitto(t, 1883) // the paper's script hard-codes 127.0.0.1:1883
	ta := startApp(t, func(c *conf.Config) {
		intrusionConfig(t, c)
		externalConfig(t, m)(c)
	})
	if ta.Broker != nil {
		t.Fatal("an embedded broker started in external mode")
	}

	// The paper's script, anonymous on loopback.
	script := exec.Command(python, "-u", "testdata/paper_simulator.py")
	var out testkit.Buffer
	script.Stdout, script.Stderr = &out, &out
	must(t, script.Start())
	t.Cleanup(func() { script.Process.Kill(); script.Wait() })

	// A `vigil sim` fleet on site home, with its site's login: six
	// sensors and two cameras that see an intruder.
	sc := cameraFleet(fmt.Sprintf("mqtt://127.0.0.1:%d", m.Port), "home", 2)
	sc.Username, sc.Password = "home", externalLogins["home"]
	temp := sim.TypeDefaults(sim.TypeTemperature)
	temp.Name, temp.Site, temp.Count, temp.Period = "temps", "home", 6, 200*time.Millisecond
	sc.Fleets = append(sc.Fleets, temp)
	sc.Timeline[0].At = 4 * time.Second
	sc.ApplyDefaults()
	testkit.WaitFor(t, 20*time.Second, "an agent, logged in to Mosquitto", func() bool {
		v := ta.view(t)
		return liveAgents(v) == 1 && v.Agents[0].Status == "ready"
	})
	s, err := sim.New(sc, ta.log)
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()

	testkit.WaitFor(t, 60*time.Second, "two clips ready", func() bool {
		n := 0
		for _, c := range ta.clips(t, "home") {
			if c.State == coord.ClipReady {
				n++
			}
		}
		return n == 2
	})
	for _, c := range ta.clips(t, "home") {
		if c.Interrupted || c.PacketsLost > 0 {
			t.Errorf("clip %s of %s: %d packets lost, interrupted=%v", c.ID, c.Camera, c.PacketsLost, c.Interrupted)
		}
		checkClipFile(t, ta, c, 7) // 2 s of pre-roll and 5 s of clip
	}
	cancel()
	<-done
	st := s.Stats()

	// Every reading the fleet got a PUBACK for is stored, once.
	testkit.WaitFor(t, 10*time.Second, "the fleet's readings stored", func() bool {
		return storedReadings(t, ta, "home") >= int(st.Published.Load())
	})
	// A reading whose PUBACK was on its way as the fleet stopped is stored
	// and not counted as acknowledged: more may be stored, never fewer;
	// storedReadings fails on any (device, seq) stored twice.
	if n := storedReadings(t, ta, "home"); n < int(st.Published.Load()) {
		t.Errorf("%d readings stored, the fleet had %d acknowledged", n, st.Published.Load())
	}
	if rs := ta.readings(t, "1"); len(rs) < 2 || rs[0].Units != "Celsius" {
		t.Errorf("the paper's sensor: %+v; it printed %s", rs, firstLines(out.String(), 7))
	}
	t.Logf("external Mosquitto: %d fleet readings acknowledged and stored once, %d of the paper's, 2 clips", st.Published.Load(), len(ta.readings(t, "1")))

	// Zigbee2MQTT's devices, through Mosquitto: discovery configs and
	// states, as the bridge publishes them with its own login.
	z2m := deviceFixtures(t)["zigbee2mqtt"]
	replay(t, z2m, func(msg fixtureMessage) {
		args := []string{"-h", "127.0.0.1", "-p", fmt.Sprint(m.Port), "-u", "zigbee2mqtt", "-P", externalLogins["zigbee2mqtt"], "-q", "1", "-t", msg.Topic, "-m", msg.Payload}
		if msg.Retain {
			args = append(args, "-r")
		}
		if o, err := exec.Command(testpeer.Need(t, "mosquitto_pub"), args...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub: %v: %s", err, o)
		}
	}, func() bool { return listed(z2m, ta.devices(t)) })
	testkit.WaitFor(t, 10*time.Second, "Zigbee2MQTT's devices and values", func() bool {
		found := 0
		for _, d := range ta.devices(t) {
			for _, want := range z2m.Expect {
				if d.ID == want.UniqueID && d.LastValue != nil && *d.LastValue == *want.Value && d.Meta != nil && d.Meta.Name == want.Name {
					found++
				}
			}
		}
		return found == len(z2m.Expect)
	})

	// The self-audit audits Mosquitto: it sees that anonymous clients get in.
	rec, err := ta.Auditor.Run(context.Background(), "test")
	must(t, err)
	if !strings.Contains(rec.Target, fmt.Sprint(m.Port)) || !hasFinding(rec.Report, "anonymous") {
		t.Errorf("self-audit of %s: %+v", rec.Target, rec.Report.Findings)
	}
}

// storedReadings counts the readings of a site's devices (every one of
// them, by device and seq).
func storedReadings(t testing.TB, ta *testApp, site string) int {
	n := 0
	for _, d := range ta.devices(t) {
		if d.Site != site {
			continue
		}
		seen := map[int64]bool{}
		for _, r := range ta.readings(t, d.ID) {
			if r.Seq != nil && seen[*r.Seq] {
				t.Errorf("device %s: seq %d stored twice", d.ID, *r.Seq)
			}
			if r.Seq != nil {
				seen[*r.Seq] = true
			}
			n++
		}
	}
	return n
}

func hasFinding(r *audit.Report, id string) bool {
	for _, f := range r.Findings {
		if strings.Contains(f.ID, id) {
			return true
		}
	}
	return false
}

// vigil up refuses to start when the external broker is not there or
// refuses its login, and says which.
func TestVigilUpRefusesABrokerItCannotUse(t *testing.T) {
	m := externalMosquitto(t, 0)
	for _, c := range []struct {
		name, want string
		mutate     func(*conf.Config)
	}{
		{"wrong password", `refused Vigil's login as "vigil"`, func(c *conf.Config) {
			p := filepath.Join(t.TempDir(), "pw")
			must(t, os.WriteFile(p, []byte("not-the-password"), 0o600))
			c.MQTT.PasswordFile = p
		}},
		{"unreachable", "cannot reach the external broker", func(c *conf.Config) {
			c.MQTT.URLs = []string{fmt.Sprintf("mqtt://127.0.0.1:%d", testpeer.FreePort(t))}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := testConfig(t)
			externalConfig(t, m)(cfg)
			c.mutate(cfg)
			start := time.Now()
			a, err := app.Open(context.Background(), cfg, app.Options{AdminPassword: adminPassword, Out: &testkit.Buffer{}}, slog.New(slog.NewTextHandler(t.Output(), nil)))
			if err == nil {
				a.Close()
				t.Fatal("vigil started")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q, want it to say %q", err, c.want)
			}
			t.Logf("refused after %v: %v", time.Since(start).Round(time.Millisecond), err)
		})
	}
}
