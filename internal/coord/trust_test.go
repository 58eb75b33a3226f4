package coord_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vigilhq/vigil/internal/agentrt"
	"github.com/vigilhq/vigil/internal/broker"
	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/coord"
	"github.com/vigilhq/vigil/internal/detect"
	"github.com/vigilhq/vigil/internal/ingest"
	"github.com/vigilhq/vigil/internal/media"
	"github.com/vigilhq/vigil/internal/store"
	"github.com/vigilhq/vigil/internal/telemetry"
	"github.com/vigilhq/vigil/internal/testkit"
	"github.com/vigilhq/vigil/internal/users"
)

// testUsers logs in the users it holds, each with the password "pw-<name>".
type testUsers map[string]*users.User

func (u testUsers) Authenticate(_ context.Context, name, password string) (*users.User, error) {
	if x := u[name]; x != nil && password == "pw-"+name {
		return x, nil
	}
	return nil, errors.New("wrong username or password")
}

func user(name, role string) *users.User {
	pub, sub := users.DefaultACL(role)
	return &users.User{Name: name, Role: role, Publish: pub, Subscribe: sub}
}

// scriptedRuntime hands the test the agents the coordinator starts; the
// test connects them itself (fakeAgent).
type scriptedRuntime struct{ specs chan agentrt.Spec }

func (r scriptedRuntime) Name() string { return "scripted" }
func (r scriptedRuntime) Start(_ context.Context, spec agentrt.Spec, _ func(error)) error {
	r.specs <- spec
	return nil
}
func (scriptedRuntime) Stop(context.Context, string) error { return nil }
func (scriptedRuntime) Close() error                       { return nil }

// control is a real broker and a coordinator with one agent, which the
// test plays over MQTT with the agent's own credential.
type control struct {
	b     *broker.Server
	c     *coord.Coordinator
	reg   *prometheus.Registry
	agent *fakeAgent
}

func startControl(t *testing.T) *control {
	t.Helper()
	cfg := conf.New()
	cfg.MQTT.Listen, cfg.MQTT.WSListen, cfg.MQTT.Persistence = "127.0.0.1:0", "", false
	cfg.MQTT.Anonymous = conf.AnonymousLoopback
	// Anonymous clients may publish anything here, as with
	// mqtt.anonymous_publish: ["#"]: the coordinator must hold even when
	// the broker's ACL lets a forgery through.
	cfg.MQTT.AnonymousPublish = []string{"#"}
	cfg.Agents.Min, cfg.Agents.Max, cfg.Agents.Capacity = 1, 1, 3
	cfg.Agents.HeartbeatTimeout = time.Hour // the test sends heartbeats when it wants
	cfg.Recording.ClipSeconds, cfg.Recording.PreRollSeconds = 60, 0
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	accounts := testUsers{"admin": user("admin", users.RoleAdmin), "camA": user("camA", users.RoleDevice), "camB": user("camB", users.RoleDevice)}
	b, err := broker.Open(broker.Config{MQTT: cfg.MQTT, DataDir: t.TempDir()}, accounts, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	st, err := store.Open(t.Context(), filepath.Join(t.TempDir(), "vigil.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rt := scriptedRuntime{specs: make(chan agentrt.Spec, 4)}
	reg := prometheus.NewRegistry()
	fin := media.NewFinisher()
	fin.FFmpeg = ""
	c, err := coord.New(coord.ConfigFrom(cfg, t.TempDir()), b, st, rt, fin, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctl := &control{b: b, c: c, reg: reg}
	select {
	case spec := <-rt.specs:
		ctl.agent = newFakeAgent(t, ctl, spec)
	case <-time.After(10 * time.Second):
		t.Fatal("the coordinator started no agent")
	}
	ctl.agent.heartbeat(ctl.agent.addr)
	if v := ctl.agentView(t); v.Status != "ready" || v.Addr != ctl.agent.addr {
		t.Fatalf("agent %+v after its first heartbeat, want ready at %s", v, ctl.agent.addr)
	}
	return ctl
}

func (ctl *control) addr() string { return ctl.b.Addr(broker.TCP).String() }

// agentView is the coordinator's view of the test's agent.
func (ctl *control) agentView(t *testing.T) coord.AgentView {
	t.Helper()
	ctl.sync(t)
	for _, a := range ctl.c.View().Agents {
		if a.ID == ctl.agent.id {
			return a
		}
	}
	t.Fatalf("agent %s is gone", ctl.agent.id)
	return coord.AgentView{}
}

// sync returns once the coordinator has handled everything it was given
// before (its inputs are handled in order).
func (ctl *control) sync(t *testing.T) {
	t.Helper()
	// Twice: View is copied after each input, so after the second the
	// copy made after the first (and everything before it) is in.
	for range 2 {
		if _, _, err := ctl.c.CameraStream(t.Context(), "-", "-"); err != nil {
			t.Fatal(err)
		}
	}
}

// camera announces a camera whose client id is its name, as the telemetry
// pipeline does when the camera publishes its meta, and returns a client
// logged in as it.
func (ctl *control) camera(t *testing.T, site, id string) *mqttClient {
	t.Helper()
	ctl.c.Observe(telemetry.Event{DeviceID: id, Site: site, ClientID: id, Meta: &telemetry.Meta{Capabilities: []string{telemetry.CapCamera}}})
	return ctl.connect(t, id, id, "pw-"+id, ingest.CameraTopic(site, id, "marker"))
}

// detect makes the coordinator record camera id and waits for its stream
// to be under way.
func (ctl *control) detect(t *testing.T, site, id string) coord.StreamView {
	t.Helper()
	ctl.c.Detected(detect.Detection{Site: site, Sensor: id, At: time.Now()})
	var v coord.StreamView
	testkit.WaitFor(t, 10*time.Second, "the stream of "+id+" under way", func() bool {
		var ok bool
		v, ok, _ = ctl.c.CameraStream(t.Context(), site, id)
		return ok && v.State == "streaming"
	})
	return v
}

func (ctl *control) refused(t *testing.T, want string) {
	t.Helper()
	const name = "vigil_coordinator_refused_messages_total"
	exp := ""
	if want != "" {
		exp = "# HELP " + name + " Agent and camera reports the coordinator refused, by topic (heartbeat, state, segment, stream) and reason (other_client, other_login, not_connected, bad_addr, other_camera).\n# TYPE " + name + " counter\n" + want
	}
	if err := testutil.GatherAndCompare(ctl.reg, strings.NewReader(exp), name); err != nil {
		t.Error(err)
	}
}

// mqttClient is an MQTT 5 client of the test.
type mqttClient struct {
	t  *testing.T
	cl *paho.Client
	in chan *paho.Publish
	// marker is a topic the client may publish on, which the test hears
	// in-process (seen) and the coordinator ignores.
	marker string
	seen   chan struct{}
}

// connect connects a client to ctl's broker; marker is a topic its ACL
// allows.
func (ctl *control) connect(t *testing.T, clientID, username, password, marker string) *mqttClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", ctl.addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m := &mqttClient{t: t, in: make(chan *paho.Publish, 100), marker: marker, seen: make(chan struct{}, 1)}
	if err := ctl.b.Subscribe(marker, func(string, []byte, string) { m.seen <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	m.cl = paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) { m.in <- pr.Packet; return true, nil },
	}})
	cp := &paho.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: true}
	if username != "" {
		cp.Username, cp.UsernameFlag = username, true
		cp.Password, cp.PasswordFlag = []byte(password), true
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if ack, err := m.cl.Connect(ctx, cp); err != nil {
		t.Fatalf("connect %s: %v (%+v)", clientID, err, ack)
	}
	t.Cleanup(func() { m.cl.Disconnect(&paho.Disconnect{}) })
	return m
}

// publish sends v (JSON, or a string as it is) at QoS 1 and returns once
// the broker has delivered it, so the coordinator has it queued. (The
// broker acknowledges before it delivers; it delivers a client's messages
// in order: when the marker published next has been heard, v was
// delivered.)
func (m *mqttClient) publish(topic string, v any) {
	m.t.Helper()
	b, ok := v.(string)
	if !ok {
		j, _ := json.Marshal(v)
		b = string(j)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, p := range []*paho.Publish{{Topic: topic, Payload: []byte(b), QoS: 1}, {Topic: m.marker, Payload: []byte("."), QoS: 1}} {
		r, err := m.cl.Publish(ctx, p)
		if err != nil || r.ReasonCode >= 0x80 {
			m.t.Fatalf("publish on %s: %v %+v", p.Topic, err, r)
		}
	}
	select {
	case <-m.seen:
	case <-ctx.Done():
		m.t.Fatalf("the marker after a message on %s was not delivered", topic)
	}
}

func (m *mqttClient) subscribe(filter string) {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if r, err := m.cl.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}}); err != nil || r.Reasons[0] >= 0x80 {
		m.t.Fatalf("subscribe %s: %v %+v", filter, err, r)
	}
}

// fakeAgent plays an agent over MQTT, logged in with the credential the
// coordinator made for it: it takes every stream at once and reports the
// RTP address it is told to.
type fakeAgent struct {
	id   string
	mqtt *mqttClient
	addr string // the real RTP address it announces

	mu   sync.Mutex
	cmds []ingest.AgentCommand
}

func newFakeAgent(t *testing.T, ctl *control, spec agentrt.Spec) *fakeAgent {
	t.Helper()
	a := &fakeAgent{id: spec.ID, addr: "127.0.0.1:40000"}
	a.mqtt = ctl.connect(t, ingest.AgentClientID(spec.ID), spec.Username, spec.Password, ingest.AgentTopic(spec.ID, "marker"))
	a.mqtt.subscribe(ingest.AgentTopic(spec.ID, "cmd"))
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		for {
			select {
			case <-done:
				return
			case p := <-a.mqtt.in:
				var cmd ingest.AgentCommand
				json.Unmarshal(p.Payload, &cmd)
				a.mu.Lock()
				a.cmds = append(a.cmds, cmd)
				a.mu.Unlock()
				if cmd.Action == "expect" {
					b, _ := json.Marshal(ingest.SegmentReport{StreamID: cmd.StreamID, Dir: cmd.Dir, Segment: cmd.Segment, State: "expecting"})
					a.mqtt.cl.Publish(context.Background(), &paho.Publish{Topic: ingest.AgentTopic(a.id, "segment"), Payload: b, QoS: 1})
				}
			}
		}
	}()
	return a
}

func (a *fakeAgent) heartbeat(addr string) {
	a.mqtt.publish(ingest.AgentTopic(a.id, "heartbeat"), ingest.Heartbeat{ID: a.id, Addr: addr, Capacity: 3, State: ingest.StateEmpty})
}

// stops returns the streams the agent was told to stop, in order.
func (a *fakeAgent) stops() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, c := range a.cmds {
		if c.Action == "stop" {
			out = append(out, c.StreamID)
		}
	}
	return out
}

// forgers are clients that may publish on any agent's topics but are not
// the agent.
var forgers = []struct {
	name                         string
	clientID, username, password string
}{
	{"an anonymous loopback client", "forger", "", ""},
	{"an admin user", "admin-laptop", "admin", "pw-admin"},
}

// TestAForgedHeartbeatDoesNotRedirectCameras: a heartbeat naming another
// host, published on an agent's topic by anyone but the agent, changes
// nothing: the camera is told the agent's own address.
func TestAForgedHeartbeatDoesNotRedirectCameras(t *testing.T) {
	for _, f := range forgers {
		t.Run(f.name+" cannot point cameras at another host", func(t *testing.T) {
			ctl := startControl(t)
			cam := ctl.camera(t, "lab", "camA")
			cam.subscribe(ingest.CameraTopic("lab", "camA", "cmd"))

			forger := ctl.connect(t, f.clientID, f.username, f.password, "test/marker/"+f.clientID)
			forger.publish(ingest.AgentTopic(ctl.agent.id, "heartbeat"), ingest.Heartbeat{ID: ctl.agent.id, Addr: "203.0.113.7:5004", Capacity: 3})

			ctl.detect(t, "lab", "camA")
			select {
			case p := <-cam.in:
				var cmd ingest.StreamCommand
				json.Unmarshal(p.Payload, &cmd)
				if got := net.JoinHostPort(cmd.Host, fmt.Sprint(cmd.Port)); got != ctl.agent.addr {
					t.Errorf("the camera was told to send to %s, want the agent's %s", got, ctl.agent.addr)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the camera was told nothing")
			}
			ctl.refused(t, `vigil_coordinator_refused_messages_total{reason="other_client",topic="heartbeat"} 1`+"\n")
		})
	}
}

// TestForgedAgentReportsChangeNothing: a forged "offline" does not take the
// agent out of service, and a forged "done" does not end its stream.
func TestForgedAgentReportsChangeNothing(t *testing.T) {
	for _, f := range forgers {
		t.Run(f.name+" cannot say an agent is offline", func(t *testing.T) {
			ctl := startControl(t)
			forger := ctl.connect(t, f.clientID, f.username, f.password, "test/marker/"+f.clientID)
			forger.publish(ingest.AgentTopic(ctl.agent.id, "state"), ingest.StateOffline)
			if v := ctl.agentView(t); v.Status != "ready" {
				t.Errorf("agent is %s after a forged offline, want ready", v.Status)
			}
			ctl.refused(t, `vigil_coordinator_refused_messages_total{reason="other_client",topic="state"} 1`+"\n")
		})
		t.Run(f.name+" cannot end a stream for its agent", func(t *testing.T) {
			ctl := startControl(t)
			ctl.camera(t, "lab", "camA")
			st := ctl.detect(t, "lab", "camA")
			forger := ctl.connect(t, f.clientID, f.username, f.password, "test/marker/"+f.clientID)
			forger.publish(ingest.AgentTopic(ctl.agent.id, "segment"), ingest.SegmentReport{StreamID: st.ID, State: "done", Reason: ingest.EndQuit, Frames: 1})
			ctl.sync(t)
			if v, ok, _ := ctl.c.CameraStream(t.Context(), "lab", "camA"); !ok || v.State != "streaming" {
				t.Errorf("the stream ended on a forged report: %+v", v)
			}
			ctl.refused(t, `vigil_coordinator_refused_messages_total{reason="other_client",topic="segment"} 1`+"\n")
		})
	}
}

// TestTheAgentsOwnReportsCount: the agent's own "offline" takes it out of
// service, and a heartbeat of its own naming another host leaves it with
// no address: the stream waits rather than go there.
func TestTheAgentsOwnReportsCount(t *testing.T) {
	t.Run("its own offline takes it out of service", func(t *testing.T) {
		ctl := startControl(t)
		ctl.agent.mqtt.publish(ingest.AgentTopic(ctl.agent.id, "state"), ingest.StateOffline)
		if v := ctl.agentView(t); v.Status != "lost" {
			t.Errorf("agent is %s after its own offline, want lost", v.Status)
		}
		ctl.refused(t, "")
	})
	t.Run("its own heartbeat naming another host gives it no address", func(t *testing.T) {
		ctl := startControl(t)
		cam := ctl.camera(t, "lab", "camA")
		cam.subscribe(ingest.CameraTopic("lab", "camA", "cmd"))
		ctl.agent.heartbeat("203.0.113.7:5004")
		if v := ctl.agentView(t); v.Addr != "" {
			t.Errorf("agent's address is %q, want none", v.Addr)
		}
		ctl.c.Detected(detect.Detection{Site: "lab", Sensor: "camA", At: time.Now()})
		ctl.sync(t)
		if v, ok, _ := ctl.c.CameraStream(t.Context(), "lab", "camA"); !ok || v.State != "queued" {
			t.Errorf("stream %+v, want queued", v)
		}
		// Its address back: the stream goes to it, and the camera is told
		// that address.
		ctl.agent.heartbeat(ctl.agent.addr)
		select {
		case p := <-cam.in:
			var cmd ingest.StreamCommand
			json.Unmarshal(p.Payload, &cmd)
			if got := net.JoinHostPort(cmd.Host, fmt.Sprint(cmd.Port)); got != ctl.agent.addr {
				t.Errorf("the camera was told to send to %s, want %s", got, ctl.agent.addr)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the camera was told nothing")
		}
		ctl.refused(t, `vigil_coordinator_refused_messages_total{reason="bad_addr",topic="heartbeat"} 1`+"\n")
	})
}

// TestACameraReportEndsOnlyItsOwnStream: a "quit" naming camera A's stream
// ends it only when camera A says it on its own topic.
func TestACameraReportEndsOnlyItsOwnStream(t *testing.T) {
	ctl := startControl(t)
	camA := ctl.camera(t, "lab", "camA")
	camB := ctl.camera(t, "lab", "camB")
	admin := ctl.connect(t, "admin-laptop", "admin", "pw-admin", "test/marker/admin-laptop")
	a := ctl.detect(t, "lab", "camA")
	b := ctl.detect(t, "lab", "camB")
	quit := func(id string) ingest.CameraStreamEvent {
		return ingest.CameraStreamEvent{StreamID: id, State: ingest.CameraQuit}
	}

	// Camera B names A's stream on its own topic; an admin on A's topic.
	camB.publish(ingest.CameraTopic("lab", "camB", "stream"), quit(a.ID))
	admin.publish(ingest.CameraTopic("lab", "camA", "stream"), quit(a.ID))
	// Camera B's own quit is told to the agent after anything they caused.
	camB.publish(ingest.CameraTopic("lab", "camB", "stream"), quit(b.ID))
	testkit.WaitFor(t, 10*time.Second, "the agent told to stop B's stream", func() bool { return len(ctl.agent.stops()) > 0 && ctl.agent.stops()[len(ctl.agent.stops())-1] == b.ID })
	if got := ctl.agent.stops(); len(got) != 1 {
		t.Errorf("the agent was told to stop %v, want only B's %s", got, b.ID)
	}
	// A's own quit ends A's stream.
	camA.publish(ingest.CameraTopic("lab", "camA", "stream"), quit(a.ID))
	testkit.WaitFor(t, 10*time.Second, "the agent told to stop A's stream", func() bool { return len(ctl.agent.stops()) == 2 && ctl.agent.stops()[1] == a.ID })
	ctl.refused(t, `vigil_coordinator_refused_messages_total{reason="other_camera",topic="stream"} 1
vigil_coordinator_refused_messages_total{reason="other_client",topic="stream"} 1
`)
}
