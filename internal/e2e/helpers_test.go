package e2e_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigilhq/vigil/internal/app"
	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/telemetry"
	"github.com/vigilhq/vigil/internal/testkit"
)

const adminPassword = "e2e-admin-password"

type testApp struct {
	*app.App
	cfg  *conf.Config
	log  *slog.Logger
	logs *testkit.Buffer
	out  *testkit.Buffer
}

// testConfig is a Config on free loopback ports in a temporary directory.
func testConfig(t testing.TB) *conf.Config {
	cfg := conf.New()
	cfg.Data.Dir = t.TempDir()
	cfg.MQTT.Listen = "127.0.0.1:0"
	cfg.MQTT.WSListen = "127.0.0.1:0"
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Auth.BcryptCost = 4
	cfg.Telemetry.FlushInterval = 20 * time.Millisecond
	cfg.Log.Level = "debug"
	cfg.Audit.OnStart = false // tests that want a self-audit run it
	// The agents must be vigil: by default they are os.Executable(), this
	// test binary, which would run the whole suite again as an "agent".
	cfg.Agents.Binary = vigilBinary(t)
	return cfg
}

// startApp starts a Vigil in-process; mutate adjusts the config first.
func startApp(t testing.TB, mutate func(*conf.Config)) *testApp {
	t.Helper()
	cfg := testConfig(t)
	if mutate != nil {
		mutate(cfg)
	}
	return openApp(t, cfg, adminPassword)
}

func openApp(t testing.TB, cfg *conf.Config, password string) *testApp {
	t.Helper()
	ta := &testApp{cfg: cfg, logs: &testkit.Buffer{}, out: &testkit.Buffer{}}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(ta.logs, t.Output()), &slog.HandlerOptions{Level: slog.LevelDebug}))
	ta.log = log
	a, err := app.Open(context.Background(), cfg, app.Options{AdminPassword: password, Out: ta.out}, log)
	if err != nil {
		t.Fatalf("start vigil: %v", err)
	}
	ta.App = a
	t.Cleanup(func() { a.Close() })
	return ta
}

func (ta *testApp) mqttAddr() string { return ta.Broker.Addr("tcp").String() }

func (ta *testApp) mqttPort() string {
	_, p, _ := net.SplitHostPort(ta.mqttAddr())
	return p
}

// api calls the HTTP API and decodes a JSON answer into out (if not nil).
func (ta *testApp) api(t testing.TB, method, path, user, password string, out any) int {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+ta.HTTP.Addr().String()+path, nil)
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, body)
		}
	}
	return resp.StatusCode
}

func (ta *testApp) devices(t testing.TB) []telemetry.Device {
	t.Helper()
	var ds []telemetry.Device
	if code := ta.api(t, "GET", "/api/v1/devices", "admin", adminPassword, &ds); code != 200 {
		t.Fatalf("GET /api/v1/devices: %d", code)
	}
	return ds
}

func (ta *testApp) readings(t testing.TB, id string) []telemetry.Reading {
	t.Helper()
	var rs []telemetry.Reading
	ta.api(t, "GET", "/api/v1/devices/"+id+"/telemetry?limit=10000", "admin", adminPassword, &rs)
	return rs
}

// mqttConnect connects a raw paho (MQTT 5) client to addr.
func mqttConnect(t testing.TB, addr, clientID, user, password string) (*paho.Client, *paho.Connack, error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	cp := &paho.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: true}
	if user != "" {
		cp.Username, cp.UsernameFlag = user, true
		cp.Password, cp.PasswordFlag = []byte(password), true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := c.Connect(ctx, cp)
	if err == nil {
		t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
	}
	return c, ack, err
}

func run(t testing.TB, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// settleAlerts checks the alerts now and waits until the notifications
// they raised are delivered.
func (ta *testApp) settleAlerts(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ta.Alerts.Check(ctx)
	drain(t, ta)
}

// drain waits until the notifications handed to the notifier so far are
// delivered or given up.
func drain(t testing.TB, ta *testApp) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	must(t, ta.Notifier.Drain(ctx))
}
