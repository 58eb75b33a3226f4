package e2e_test

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigilhq/vigil/internal/app"
	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/coord"
	"github.com/vigilhq/vigil/internal/mqttconn"
	"github.com/vigilhq/vigil/internal/sim"
	"github.com/vigilhq/vigil/internal/store"
	"github.com/vigilhq/vigil/internal/sub"
	"github.com/vigilhq/vigil/internal/telemetry"
	"github.com/vigilhq/vigil/internal/testkit"
	"github.com/vigilhq/vigil/internal/testpeer"
	"github.com/vigilhq/vigil/internal/users"
)

func TestDemoFleetShowsUpInTheAPIWithinSeconds(t *testing.T) {
	ta := startApp(t, func(c *conf.Config) {
		c.Demo.Enabled = true
		c.Demo.Period = 500 * time.Millisecond
	})
	start := time.Now()
	testkit.WaitFor(t, 10*time.Second, "7 demo devices with values (6 sensors and a camera)", func() bool {
		ds := ta.devices(t)
		withValue := 0
		for _, d := range ds {
			if d.LastValue != nil && d.Status == "online" {
				withValue++
			}
		}
		return withValue == 7
	})
	t.Logf("demo devices listed with values after %v", time.Since(start))
	types := map[string]bool{}
	for _, d := range ta.devices(t) {
		types[d.Type] = true
	}
	for _, typ := range []string{"temperature", "humidity", "distance", "door"} {
		if !types[typ] {
			t.Errorf("no demo device of type %s", typ)
		}
	}
}

// TestThePapersScriptRunsUnchanged runs the paper's Python simulator, byte
// for byte as printed in the paper, against Vigil. The script hard-codes
// 127.0.0.1:1883, so Vigil listens there for this test.
func TestThePapersScriptRunsUnchanged(t *testing.T) {
	python := "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		testpeer.Need(t, "python3-paho-mqtt's /usr/bin/python3")
	}
	if out, err := exec.Command(python, "-c", "import paho.mqtt.client").CombinedOutput(); err != nil {
		testpeer.Need(t, "python3-paho-mqtt") // skips or fails with the install hint
		t.Fatalf("paho-mqtt for %s: %v: %s", python, err, out)
	}
	ta := startApp(t, func(c *conf.Config) { c.MQTT.Listen = "127.0.0.1:1883" })

	cmd := exec.Command(python, "-u", "testdata/paper_simulator.py")
	var out testkit.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	must(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	testkit.WaitFor(t, 15*time.Second, "two readings from the paper's sensor", func() bool {
		return len(ta.readings(t, "1")) >= 2
	})
	rs := ta.readings(t, "1")
	for _, r := range rs {
		if r.Units != "Celsius" || r.Value < 10 || r.Value > 35 {
			t.Errorf("reading %+v is not the paper's temperature", r)
		}
		if d := r.Received.Sub(r.Time); d < -time.Second || d > 2*time.Second {
			t.Errorf("the paper's local timestamp was read %v off", d)
		}
	}
	var d telemetry.Device
	ta.api(t, "GET", "/api/v1/devices/1", "admin", adminPassword, &d)
	if d.Site != "default" || d.Type != "temperature" || d.ClientID != "TempPub" {
		t.Errorf("the paper's device = %+v", d)
	}
	if !strings.Contains(out.String(), `"sensor_id": "1"`) {
		t.Errorf("script output: %s", out.String())
	}
	t.Logf("the paper's script: %d readings stored; it printed:\n%s", len(rs), firstLines(out.String(), 7))
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}

func TestMosquittoClientsInteroperateOnLoopbackWithoutAuth(t *testing.T) {
	pub, subBin := testpeer.Need(t, "mosquitto_pub"), testpeer.Need(t, "mosquitto_sub")
	ta := startApp(t, nil)
	port := ta.mqttPort()

	for _, v := range []string{"mqttv311", "mqttv5"} {
		t.Run(v, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s := exec.CommandContext(ctx, subBin, "-h", "127.0.0.1", "-p", port, "-V", v, "-q", "2", "-t", "vigil/lab/"+v+"/#", "-C", "1", "-v")
			var out testkit.Buffer
			s.Stdout, s.Stderr = &out, &out
			must(t, s.Start())
			done := make(chan error, 1)
			go func() { done <- s.Wait() }()
			// Publish until the subscriber has it (it may not be subscribed yet).
			for i := 0; ; i++ {
				o, err := run(t, 5*time.Second, pub, "-h", "127.0.0.1", "-p", port, "-V", v, "-q", "1", "-t", "vigil/lab/"+v+"/telemetry", "-m", `{"value": 1}`)
				if err != nil {
					t.Fatalf("mosquitto_pub: %v: %s", err, o)
				}
				select {
				case err := <-done:
					if err != nil || !strings.Contains(out.String(), "vigil/lab/"+v+`/telemetry {"value": 1}`) {
						t.Fatalf("mosquitto_sub: %v: %q", err, out.String())
					}
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
		})
	}

	// $SYS topics are there for the asking.
	o, err := run(t, 10*time.Second, subBin, "-h", "127.0.0.1", "-p", port, "-t", "$SYS/broker/version", "-C", "1", "-W", "8")
	if err != nil || !regexp.MustCompile(`^\d+\.\d+\.\d+`).MatchString(o) {
		t.Errorf("$SYS/broker/version: %v %q", err, o)
	}

	// A reading published by mosquitto_pub is stored like any other.
	o, err = run(t, 5*time.Second, pub, "-h", "127.0.0.1", "-p", port, "-q", "1", "-t", "vigil/lab/mosq1/telemetry", "-m", `{"type":"temperature","value":21.5,"units":"Celsius"}`)
	if err != nil {
		t.Fatalf("%v: %s", err, o)
	}
	testkit.WaitFor(t, 5*time.Second, "mosquitto_pub's reading in the API", func() bool { return len(ta.readings(t, "mosq1")) == 1 })
}

// addUser adds a user straight to the running app's database, as
// `vigil user add` does.
func addUser(t *testing.T, ta *testApp, name, role, password string, pub, subs []string) {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(ta.cfg.Data.Dir, "vigil.db"))
	must(t, err)
	defer st.Close()
	hash, err := users.HashPassword(password, 4)
	must(t, err)
	if pub == nil && subs == nil {
		pub, subs = users.DefaultACL(role)
	}
	must(t, st.CreateUser(context.Background(), &users.User{Name: name, Role: role, PasswordHash: hash, Publish: pub, Subscribe: subs}))
}

// TestNonLoopbackListenerRequiresAuthAndEnforcesACLs binds 0.0.0.0 and
// connects over loopback: Vigil must treat it as a public listener.
func TestNonLoopbackListenerRequiresAuthAndEnforcesACLs(t *testing.T) {
	ta := startApp(t, func(c *conf.Config) { c.MQTT.Listen = "0.0.0.0:0" })
	addUser(t, ta, "sensor7", users.RoleDevice, "sensor7-password", nil, nil)
	addr := net.JoinHostPort("127.0.0.1", ta.mqttPort())

	t.Run("an anonymous client is refused", func(t *testing.T) {
		_, ack, err := mqttConnect(t, addr, "anon", "", "")
		if err == nil || ack == nil || ack.ReasonCode != 0x86 {
			t.Fatalf("connect = %v, %+v; want bad username or password (0x86)", err, ack)
		}
	})
	t.Run("a wrong password is refused", func(t *testing.T) {
		_, ack, err := mqttConnect(t, addr, "c1", "sensor7", "not-the-password")
		if err == nil || ack == nil || ack.ReasonCode != 0x86 {
			t.Fatalf("connect = %v, %+v; want 0x86", err, ack)
		}
	})
	t.Run("an unknown user is refused", func(t *testing.T) {
		if _, _, err := mqttConnect(t, addr, "c2", "nobody", "whatever-pass"); err == nil {
			t.Fatal("unknown user connected")
		}
	})

	c, _, err := mqttConnect(t, addr, "sensor7", "sensor7", "sensor7-password")
	if err != nil {
		t.Fatalf("the right password was refused: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	t.Run("the ACL allows the device's own subtree", func(t *testing.T) {
		r, err := c.Publish(ctx, &paho.Publish{Topic: "vigil/lab/sensor7/telemetry", QoS: 1, Payload: []byte(`{"value":3}`)})
		if err != nil || r.ReasonCode >= 0x80 {
			t.Fatalf("publish to own topic: %v %+v", err, r)
		}
		testkit.WaitFor(t, 5*time.Second, "the device's reading", func() bool { return len(ta.readings(t, "sensor7")) == 1 })
	})
	t.Run("the ACL denies publishing to a foreign topic", func(t *testing.T) {
		r, err := c.Publish(ctx, &paho.Publish{Topic: "vigil/lab/other/telemetry", QoS: 1, Payload: []byte(`{"value":3}`)})
		if r == nil || r.ReasonCode != 0x87 {
			t.Fatalf("publish to a foreign topic: %v %+v; want not authorized (0x87)", err, r)
		}
		time.Sleep(100 * time.Millisecond) // a wrongly accepted message would be stored by now
		for _, d := range ta.devices(t) {
			if d.ID == "other" {
				t.Fatal("the denied reading was stored")
			}
		}
	})
	t.Run("the ACL denies subscribing to everything", func(t *testing.T) {
		ack, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "vigil/#", QoS: 1}, {Topic: "vigil/lab/sensor7/cmd", QoS: 1}}})
		if err != nil && ack == nil {
			t.Fatal(err)
		}
		if ack.Reasons[0] < 0x80 || ack.Reasons[1] >= 0x80 {
			t.Fatalf("suback reasons %x: want vigil/# denied and the own cmd topic granted", ack.Reasons)
		}
	})

	t.Run("mosquitto clients authenticate too", func(t *testing.T) {
		pub := testpeer.Need(t, "mosquitto_pub")
		port := ta.mqttPort()
		o, err := run(t, 5*time.Second, pub, "-h", "127.0.0.1", "-p", port, "-t", "vigil/lab/x/telemetry", "-m", `{"value":1}`, "-q", "1")
		if err == nil || !strings.Contains(strings.ToLower(o), "not authori") {
			t.Errorf("anonymous mosquitto_pub: %v %q; want refused", err, o)
		}
		o, err = run(t, 5*time.Second, pub, "-h", "127.0.0.1", "-p", port, "-u", "sensor7", "-P", "sensor7-password", "-t", "vigil/lab/sensor7/telemetry", "-m", `{"value":2}`, "-q", "1")
		if err != nil {
			t.Errorf("authenticated mosquitto_pub: %v %q", err, o)
		}
		testkit.WaitFor(t, 5*time.Second, "mosquitto_pub's authenticated reading", func() bool { return len(ta.readings(t, "sensor7")) == 2 })
	})

	if strings.Contains(ta.logs.String(), "sensor7-password") || strings.Contains(ta.logs.String(), "not-the-password") {
		t.Error("a password appears in the logs")
	}
}

func TestLoopbackListenerAcceptsAnonymousUnlessNever(t *testing.T) {
	ta := startApp(t, func(c *conf.Config) { c.MQTT.Anonymous = conf.AnonymousNever })
	if _, _, err := mqttConnect(t, ta.mqttAddr(), "anon", "", ""); err == nil {
		t.Fatal("anonymous client accepted with mqtt.anonymous: never")
	}
	ta2 := startApp(t, nil)
	if _, _, err := mqttConnect(t, ta2.mqttAddr(), "anon", "", ""); err != nil {
		t.Fatalf("anonymous client refused on loopback: %v", err)
	}
}

func TestAPIAuthentication(t *testing.T) {
	ta := startApp(t, nil)
	addUser(t, ta, "viewer1", users.RoleViewer, "viewer-password", nil, nil)
	addUser(t, ta, "dev1", users.RoleDevice, "device-password", nil, nil)
	for _, tt := range []struct {
		name, path, user, password string
		want                       int
	}{
		{"no credentials", "/api/v1/devices", "", "", 401},
		{"a wrong password", "/api/v1/devices", "admin", "wrong-password", 401},
		{"an unknown user", "/api/v1/devices", "mallory", "whatever", 401},
		{"metrics without credentials", "/metrics", "", "", 401},
		{"the admin", "/api/v1/devices", "admin", adminPassword, 200},
		{"a viewer", "/api/v1/devices", "viewer1", "viewer-password", 200},
		{"a device account", "/api/v1/devices", "dev1", "device-password", 403},
		{"health without credentials", "/healthz", "", "", 200},
		{"metrics for the admin", "/metrics", "admin", adminPassword, 200},
		{"an unknown device", "/api/v1/devices/nope", "admin", adminPassword, 404},
		{"a bad limit", "/api/v1/devices/x/telemetry?limit=0", "admin", adminPassword, 400},
		{"an unknown endpoint", "/api/v1/nothing", "admin", adminPassword, 404},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := ta.api(t, "GET", tt.path, tt.user, tt.password, nil); got != tt.want {
				t.Errorf("GET %s as %q = %d, want %d", tt.path, tt.user, got, tt.want)
			}
		})
	}
}

func TestFirstStartCreatesAdminWithAPrintedRandomPassword(t *testing.T) {
	cfg := testConfig(t)
	ta := openApp(t, cfg, "")
	data, err := os.ReadFile(filepath.Join(cfg.Data.Dir, "initial-admin-password"))
	must(t, err)
	password := strings.TrimSpace(string(data))
	if len(password) < 20 {
		t.Fatalf("password %q is short", password)
	}
	fi, _ := os.Stat(filepath.Join(cfg.Data.Dir, "initial-admin-password"))
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("initial-admin-password has mode %v, want 0600", fi.Mode().Perm())
	}
	if !strings.Contains(ta.out.String(), password) {
		t.Error("the password was not printed")
	}
	if strings.Contains(ta.logs.String(), password) {
		t.Error("the password was logged")
	}
	if code := ta.api(t, "GET", "/api/v1/devices", "admin", password, nil); code != 200 {
		t.Errorf("the printed password does not work: %d", code)
	}
	ta.Close()

	// A second start neither makes a new password nor prints one.
	ta2 := openApp(t, cfg, "")
	if strings.Contains(ta2.out.String(), "password") {
		t.Errorf("second start printed: %q", ta2.out.String())
	}
}

func TestShutdownStoresEverythingAcknowledged(t *testing.T) {
	ta := startApp(t, func(c *conf.Config) {
		c.Telemetry.FlushInterval = time.Second // readings sit in the queue at shutdown
		c.Telemetry.BatchSize = 100000
	})
	sc := sim.NewScenario()
	sc.Brokers = []string{"mqtt://" + ta.mqttAddr()}
	sc.Duration = 2 * time.Second
	sc.Fleets = []sim.Fleet{{Name: "f", Site: "lab", Type: "temperature", Count: 50, Period: 50 * time.Millisecond}}
	sc.ApplyDefaults()
	s, err := sim.New(sc, ta.log)
	must(t, err)
	must(t, s.Run(context.Background()))
	published := s.Stats().Published.Load()
	must(t, ta.App.Close()) // what `vigil up` does on SIGINT

	st, err := store.Open(context.Background(), filepath.Join(ta.cfg.Data.Dir, "vigil.db"))
	must(t, err)
	defer st.Close()
	n, err := st.CountReadings(context.Background())
	must(t, err)
	// Every acknowledged reading is stored, none twice; a few more may be
	// stored, whose acknowledgement was still in flight when the fleet
	// stopped.
	// How many the fleet gets acknowledged in 2 s depends on the machine's
	// load (926 on a busy CI run with -race); a few hundred are enough to
	// have readings queued at shutdown, with a 1 s flush interval.
	if published < 200 {
		t.Fatalf("the fleet got only %d readings acknowledged; too few to test a shutdown", published)
	}
	if n < published {
		t.Fatalf("stored %d readings of %d acknowledged", n, published)
	}
	devs, err := st.ListDevices(context.Background(), telemetry.DeviceFilter{})
	must(t, err)
	for _, d := range devs {
		rs, err := st.ListReadings(context.Background(), telemetry.ReadingQuery{DeviceID: d.ID, Limit: 10000})
		must(t, err)
		seen := map[int64]bool{}
		for _, r := range rs {
			if r.Seq == nil || seen[*r.Seq] {
				t.Fatalf("device %s: reading seq %v stored twice or without seq", d.ID, r.Seq)
			}
			seen[*r.Seq] = true
		}
	}
	t.Logf("%d readings acknowledged, %d stored, none twice", published, n)
}

func TestRetainedMessagesSurviveARestart(t *testing.T) {
	cfg := testConfig(t)
	ta := openApp(t, cfg, adminPassword)
	c, _, err := mqttConnect(t, ta.mqttAddr(), "p", "", "")
	must(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = c.Publish(ctx, &paho.Publish{Topic: "vigil/lab/d1/meta", QoS: 1, Retain: true, Payload: []byte(`{"capabilities":["camera"]}`)})
	must(t, err)
	c.Disconnect(&paho.Disconnect{})
	ta.Close()

	ta2 := openApp(t, cfg, adminPassword)
	got := make(chan string, 1)
	s, err := sub.Subscribe(ctx, sub.Options{Brokers: []string{ta2.mqttAddr()}, Filters: []string{"vigil/lab/+/meta"}, QoS: 1}, func(m sub.Message) {
		select {
		case got <- string(m.Payload):
		default:
		}
	})
	must(t, err)
	defer s.Close()
	select {
	case p := <-got:
		if p != `{"capabilities":["camera"]}` {
			t.Errorf("retained payload after restart = %q", p)
		}
	case <-ctx.Done():
		t.Fatal("the retained message did not survive the restart")
	}
}

func TestWebSocketAndTLSListeners(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeSelfSigned(t, dir)
	ta := startApp(t, func(c *conf.Config) {
		c.MQTT.TLSListen = "127.0.0.1:0"
		c.MQTT.TLSCert, c.MQTT.TLSKey = certFile, keyFile
	})
	for _, tt := range []struct {
		name, url string
		tls       mqttconn.TLS
	}{
		{"websocket", ta.Broker.URL("ws"), mqttconn.TLS{}},
		{"tls", ta.Broker.URL("tls"), mqttconn.TLS{CA: certFile}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := make(chan string, 10)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			// WebSocket and TLS listeners have no anonymous access.
			s, err := sub.Subscribe(ctx, sub.Options{Brokers: []string{tt.url}, Filters: []string{"vigil/+/+/telemetry"}, QoS: 1, TLS: tt.tls,
				Username: "admin", Password: adminPassword}, func(m sub.Message) { got <- m.Topic })
			must(t, err)
			defer s.Close()
			sc := sim.NewScenario()
			sc.Brokers, sc.TLS, sc.Duration = []string{tt.url}, tt.tls, 3*time.Second
			sc.Username, sc.Password = "admin", adminPassword
			sc.Fleets = []sim.Fleet{{Name: tt.name, Site: tt.name, Count: 2, Period: 200 * time.Millisecond}}
			sc.ApplyDefaults()
			sm, err := sim.New(sc, ta.log)
			must(t, err)
			simCtx, stopSim := context.WithCancel(ctx)
			simDone := make(chan struct{})
			go func() { defer close(simDone); sm.Run(simCtx) }()
			defer func() { stopSim(); <-simDone }()
			select {
			case topic := <-got:
				if !strings.HasPrefix(topic, "vigil/"+tt.name+"/") {
					t.Errorf("got %s", topic)
				}
			case <-ctx.Done():
				t.Fatalf("no message over %s", tt.name)
			}
		})
	}
}

func TestSubStatsSeeNoLossFromASimFleet(t *testing.T) {
	ta := startApp(t, nil)
	stats := sub.NewStats()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := sub.Subscribe(ctx, sub.Options{Brokers: []string{ta.mqttAddr()}, Filters: []string{"vigil/+/+/telemetry"}, QoS: 1}, stats.Add)
	must(t, err)
	sc := sim.NewScenario()
	// 400 readings/s for 5 s: each is stored before it is acknowledged
	// and delivered, which under -race on a busy CI machine is slow, and
	// every device must have had time to connect and publish.
	sc.Brokers, sc.Duration = []string{ta.mqttAddr()}, 5*time.Second
	sc.Fleets = []sim.Fleet{{Name: "f", Site: "lab", Count: 100, Period: 250 * time.Millisecond}}
	sc.ApplyDefaults()
	sm, err := sim.New(sc, ta.log)
	must(t, err)
	must(t, sm.Run(ctx))
	published := sm.Stats().Published.Load()
	testkit.WaitFor(t, 10*time.Second, "all messages at the subscriber", func() bool {
		return stats.Received() >= published && stats.Report().Loss.Sources == 100
	})
	s.Close()
	r := stats.Report()
	// Messages whose acknowledgement was still on its way when the fleet
	// stopped arrive without being counted as published, so more may
	// arrive than were acknowledged; none may be missing or doubled.
	if r.Loss.Lost != 0 || r.Loss.Duplicates != 0 || r.Received < published || r.Loss.Sources != 100 {
		t.Fatalf("for %d published (%d errors):\n%s%+v", published, sm.Stats().Errors.Load(), r, r.Loss)
	}
	if r.Latency.Count != r.Received || r.Latency.P50ms <= 0 {
		t.Errorf("latency %+v", r.Latency)
	}
	fmt.Fprint(t.Output(), r.String())
}

func TestAFailedStartClosesWhatItOpened(t *testing.T) {
	cfg := testConfig(t)
	cfg.Agents.Runtime = conf.RuntimeDocker
	cfg.Agents.DockerImage = "vigil-agent-missing:none"
	_, err := app.Open(context.Background(), cfg, app.Options{AdminPassword: adminPassword, Out: io.Discard}, slog.New(slog.DiscardHandler))
	if err == nil {
		t.Fatal("started with a missing agent image")
	}
	// Everything was closed: the same data directory and ports open again.
	cfg.Agents.Runtime = conf.RuntimeProcess
	cfg.Agents.Binary = vigilBinary(t)
	a, err := app.Open(context.Background(), cfg, app.Options{AdminPassword: adminPassword, Out: io.Discard}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("reopen after a failed start: %v", err)
	}
	a.Close()
}

// TestTheDataDirectoryIsPrivate: the database (VAPID private key, channel
// secrets, sessions), the broker's state, agent logs and clips are this user's only, even in a data directory (and files
// in it) that an earlier Vigil or the owner made readable by everyone.
func TestTheDataDirectoryIsPrivate(t *testing.T) {
	cfg := testConfig(t)
	intrusionConfig(t, cfg)
	dir := cfg.Data.Dir
	must(t, os.Chmod(dir, 0o755))
	for _, d := range []string{"clips", "agents"} {
		must(t, os.Mkdir(filepath.Join(dir, d), 0o755))
	}
	for _, f := range []string{"vigil.db", "broker.bolt"} { // empty: both open an empty file as new
		must(t, os.WriteFile(filepath.Join(dir, f), nil, 0o644))
	}
	must(t, os.Chmod(dir, 0o755))
	ta := openApp(t, cfg, adminPassword)
	testkit.WaitFor(t, 20*time.Second, "the first agent", func() bool { return liveAgents(ta.view(t)) == 1 && ta.view(t).Agents[0].Status == "ready" })
	stop := runFleet(t, ta, cameraFleet(ta.mqttAddr(), "home", 1))
	defer stop()
	testkit.WaitFor(t, 30*time.Second, "a clip", func() bool {
		cs := ta.clips(t, "home")
		return len(cs) == 1 && cs[0].State == coord.ClipReady
	})
	seen := map[string]bool{}
	must(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		seen[rel], seen[d.Name()], seen[filepath.Dir(rel)+"/*"+filepath.Ext(rel)] = true, true, true
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %v, want %v", rel, fi.Mode().Perm(), want)
		}
		return nil
	}))
	for _, f := range []string{".", "vigil.db", "vigil.db-wal", "vigil.db-shm", "broker.bolt",
		"agents", "agents/*.log", "clips", "clips/home", "clip.mp4", "thumb.jpg"} {
		if !seen[f] {
			t.Errorf("no %s in the data directory", f)
		}
	}
}

// usersClipStorage is a clip storage root of the user's, elsewhere than
// the data directory (a NAS mount, /srv): 0755, someone else's when the
// test runs as root, with a file and a directory of theirs in it.
// unchanged checks that none of it has another mode or owner.
func usersClipStorage(t *testing.T) (root string, unchanged func(t *testing.T)) {
	t.Helper()
	root = t.TempDir()
	paths := []string{root, filepath.Join(root, "notes.txt"), filepath.Join(root, "photos")}
	must(t, os.WriteFile(paths[1], []byte("not Vigil's"), 0o644))
	must(t, os.Mkdir(paths[2], 0o755))
	before := map[string]string{}
	for _, p := range paths {
		if p != paths[1] {
			must(t, os.Chmod(p, 0o755))
		}
		if os.Getuid() == 0 {
			must(t, os.Lchown(p, 4321, 4321))
		}
		before[p] = modeAndOwner(t, p)
	}
	return root, func(t *testing.T) {
		t.Helper()
		for _, p := range paths {
			if got := modeAndOwner(t, p); got != before[p] {
				t.Errorf("%s is now %s, was %s", p, got, before[p])
			}
		}
	}
}

func modeAndOwner(t *testing.T, p string) string {
	t.Helper()
	fi, err := os.Lstat(p)
	must(t, err)
	st := fi.Sys().(*syscall.Stat_t)
	return fmt.Sprintf("%v %d:%d", fi.Mode(), st.Uid, st.Gid)
}

// recordAClip has a camera of site record a clip, and waits for it.
func recordAClip(t *testing.T, ta *testApp, site string) {
	t.Helper()
	testkit.WaitFor(t, 30*time.Second, "the first agent", func() bool { return liveAgents(ta.view(t)) == 1 && ta.view(t).Agents[0].Status == "ready" })
	stop := runFleet(t, ta, cameraFleet(ta.mqttAddr(), site, 1))
	defer stop()
	testkit.WaitFor(t, 60*time.Second, "a clip", func() bool {
		cs := ta.clips(t, site)
		return len(cs) == 1 && cs[0].State == coord.ClipReady
	})
}

// checkPrivate checks that the directories under dir are 0700 and the
// files 0600, and that there is a clip.
func checkPrivate(t *testing.T, dir string) {
	t.Helper()
	clips := 0
	must(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %v, want %v", p, fi.Mode().Perm(), want)
		}
		if d.Name() == "clip.mp4" {
			clips++
		}
		return nil
	}))
	if clips != 1 {
		t.Errorf("%d clip.mp4 in %s, want 1", clips, dir)
	}
}

// TestAClipStorageOfTheUsersIsLeftAsItIs: with recording.storage pointing
// at a directory of the user's, Vigil records there and keeps the
// directories it makes private, but changes the mode and owner of nothing
// it did not make, and warns once that others may read the directory.
func TestAClipStorageOfTheUsersIsLeftAsItIs(t *testing.T) {
	root, unchanged := usersClipStorage(t)
	ta := startApp(t, func(c *conf.Config) {
		intrusionConfig(t, c)
		c.Recording.Storage = root
	})
	recordAClip(t, ta, "home")
	unchanged(t)
	checkPrivate(t, filepath.Join(root, "home"))
	if n := strings.Count(ta.logs.String(), "other users may read the clip storage"); n != 1 {
		t.Errorf("%d warnings that others may read the clip storage, want 1", n)
	}
}

// TestLoginAnswersTheSameForEveryRole: the login page tells nobody which
// accounts exist, what role they have or whether a device's password is
// right: every refusal is the same 401.
func TestLoginAnswersTheSameForEveryRole(t *testing.T) {
	ta := startApp(t, nil)
	addUser(t, ta, "viewer1", users.RoleViewer, "viewer-password", nil, nil)
	addUser(t, ta, "dev1", users.RoleDevice, "device-password", nil, nil)
	login := func(user, password string) (int, string) {
		body := fmt.Sprintf(`{"username": %q, "password": %q}`, user, password)
		resp, err := http.Post("http://"+ta.HTTP.Addr().String()+"/api/v1/login", "application/json", strings.NewReader(body))
		must(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := login("viewer1", "viewer-password"); code != 200 {
		t.Errorf("a viewer's login: %d", code)
	}
	_, want := login("nobody", "wrong-password") // 5 refusals per address: this and 4 more
	for _, tc := range []struct{ name, user, password string }{
		{"the admin with a wrong password", "admin", "wrong-password"},
		{"a viewer with a wrong password", "viewer1", "wrong-password"},
		{"a device with a wrong password", "dev1", "wrong-password"},
		{"a device with its right password", "dev1", "device-password"},
	} {
		t.Run(tc.name+" gets 401", func(t *testing.T) {
			code, body := login(tc.user, tc.password)
			if code != 401 || body != want {
				t.Errorf("login: %d %s, want 401 %s", code, body, want)
			}
		})
	}
}

// Shutdown order: the broker closes before the pipeline, so the last
// wills it publishes as it disconnects its clients are stored: a device
// connected when Vigil stops is offline when it starts again.
func TestLastWillsPublishedAtShutdownAreStored(t *testing.T) {
	cfg := testConfig(t)
	ta := openApp(t, cfg, adminPassword)
	conn, err := net.DialTimeout("tcp", ta.mqttAddr(), 5*time.Second)
	must(t, err)
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = c.Connect(ctx, &paho.Connect{ClientID: "d1", KeepAlive: 30, CleanStart: true,
		WillMessage: &paho.WillMessage{Topic: "vigil/lab/d1/status", Payload: []byte("offline"), QoS: 1, Retain: true}})
	must(t, err)
	_, err = c.Publish(ctx, &paho.Publish{Topic: "vigil/lab/d1/status", QoS: 1, Retain: true, Payload: []byte("online")})
	must(t, err)
	testkit.WaitFor(t, 5*time.Second, "d1 online", func() bool {
		for _, d := range ta.devices(t) {
			if d.ID == "d1" && d.Status == "online" {
				return true
			}
		}
		return false
	})
	must(t, ta.Close())

	ta = openApp(t, cfg, adminPassword)
	for _, d := range ta.devices(t) {
		if d.ID == "d1" {
			if d.Status != "offline" {
				t.Fatalf("d1 is %q after a restart: its last will, published as Vigil stopped, was not stored", d.Status)
			}
			return
		}
	}
	t.Fatal("d1 is not known after the restart")
}
