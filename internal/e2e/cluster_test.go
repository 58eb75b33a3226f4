package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vigilhq/vigil/internal/coord"
	"github.com/vigilhq/vigil/internal/detect"
	"github.com/vigilhq/vigil/internal/sim"
	"github.com/vigilhq/vigil/internal/telemetry"
	"github.com/vigilhq/vigil/internal/testkit"
	"github.com/vigilhq/vigil/internal/testpeer"
)

// clusterNode is one `vigil up` process of a cluster test.
type clusterNode struct {
	name, dir, http string
	env             []string
	cmd             *exec.Cmd
	done            chan struct{}

	mu     sync.Mutex
	up     bool          // supposed to answer
	lastOK time.Time     // its last /healthz 200
	gap    time.Duration // its longest gap between two while up
}

// id is the node's id, kept in its data directory.
func (n *clusterNode) id() string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "data", "node-id"))
	return strings.TrimSpace(string(b))
}

func (n *clusterNode) start(t *testing.T) {
	t.Helper()
	log, err := os.OpenFile(filepath.Join(n.dir, "vigil.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	must(t, err)
	defer log.Close()
	n.cmd = exec.Command(vigilBinary(t), "up")
	n.cmd.Env = append(os.Environ(), n.env...)
	n.cmd.Stdout, n.cmd.Stderr = log, log
	must(t, n.cmd.Start())
	n.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(n.cmd, n.done)
	testkit.WaitFor(t, 30*time.Second, n.name+" answering", func() bool { return n.healthy() })
	n.mu.Lock()
	n.up, n.lastOK = true, time.Now()
	n.mu.Unlock()
}

// kill is kill -9.
func (n *clusterNode) kill() {
	n.mu.Lock()
	n.up = false
	n.mu.Unlock()
	n.cmd.Process.Kill()
	<-n.done
}

func (n *clusterNode) stop() {
	n.mu.Lock()
	n.up = false
	n.mu.Unlock()
	if n.cmd == nil || n.cmd.ProcessState != nil {
		return
	}
	n.cmd.Process.Signal(os.Interrupt)
	select {
	case <-n.done:
	case <-time.After(30 * time.Second):
		n.cmd.Process.Kill()
		<-n.done
	}
}

func (n *clusterNode) healthy() bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(n.http + "/healthz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

// watch polls /healthz every 100 ms and keeps the longest gap between two
// answers while the node is up.
func (n *clusterNode) watch(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ok := n.healthy()
		n.mu.Lock()
		if n.up {
			now := time.Now()
			if ok {
				n.gap = max(n.gap, now.Sub(n.lastOK))
				n.lastOK = now
			}
		}
		n.mu.Unlock()
	}
}

func (n *clusterNode) get(t *testing.T, path string, out any) error {
	req, _ := http.NewRequest("GET", n.http+path, nil)
	req.SetBasicAuth("admin", adminPassword)
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func (n *clusterNode) post(t *testing.T, path string) int {
	req, _ := http.NewRequest("POST", n.http+path, nil)
	req.SetBasicAuth("admin", adminPassword)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// streamed counts the lines holding want that the node's event stream
// sends in d (the first second not counted: the node takes the devices'
// messages once a browser listens).
func (n *clusterNode) streamed(t *testing.T, path, want string, d time.Duration) int {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", n.http+path, nil)
	req.SetBasicAuth("admin", adminPassword)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	start := time.Now()
	count := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.Contains(sc.Text(), want) && time.Since(start) > time.Second {
			count++
		}
	}
	return count
}

// leads tells whether the node runs the coordinator (the others relay
// its view, which names it).
func (n *clusterNode) leads(t *testing.T) bool {
	var v coord.View
	return n.get(t, "/api/v1/agents", &v) == nil && v.Leader != "" && v.Leader == n.id()
}

// Three `vigil up` on one Mosquitto and one PostgreSQL, under a 300-device
// QoS 1 fleet: the nodes share the readings; a non-leader, then the leader
// five times, are killed with SIGKILL and started again. Every reading the
// fleet got a PUBACK for is stored exactly once; the surviving nodes answer
// throughout; a new leader takes over each time; a recording under way
// when the leader dies ends as a playable clip; a detection made while no
// node leads is served by the next leader.
func TestThreeNodesSurviveKills(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts three nodes")
	}
	pub := testpeer.Need(t, "mosquitto_pub")
	testpeer.Need(t, "ffprobe")
	pg := testpeer.NeedPostgres(t)
	db := pg.NewDatabase(t)
	m := externalMosquitto(t, 0)
	broker := fmt.Sprintf("mqtt://127.0.0.1:%d", m.Port)
	logins := testConfig(t) // the password files of the documented logins
	externalConfig(t, m)(logins)
	storage := t.TempDir() // the clip storage every node mounts
	var nodes []*clusterNode
	for i := range 3 {
		n := &clusterNode{name: fmt.Sprintf("node%d", i+1), dir: t.TempDir(), http: fmt.Sprintf("127.0.0.1:%d", testpeer.FreePort(t))}
		n.env = []string{
			"VIGIL_ADMIN_PASSWORD=" + adminPassword, "VIGIL_DATA_DIR=" + filepath.Join(n.dir, "data"), "VIGIL_HTTP_LISTEN=" + n.http,
			"VIGIL_DATABASE_URL=" + db, "VIGIL_MQTT_MODE=external", "VIGIL_MQTT_URLS=" + broker,
			"VIGIL_MQTT_USERNAME=vigil", "VIGIL_MQTT_PASSWORD_FILE=" + logins.MQTT.PasswordFile,
			"VIGIL_MQTT_AGENT_USERNAME=vigil-agent", "VIGIL_MQTT_AGENT_PASSWORD_FILE=" + logins.MQTT.AgentPasswordFile,
			"VIGIL_RECORDING_STORAGE=" + storage, "VIGIL_RECORDING_CLIP_SECONDS=6", "VIGIL_RECORDING_PRE_ROLL_SECONDS=1",
			"VIGIL_AUDIT_ON_START=false", "VIGIL_AGENTS_IDLE=2s", "VIGIL_AGENTS_MIN=3", "VIGIL_AGENTS_SCALE_DOWN_COOLDOWN=2s", "VIGIL_TELEMETRY_OFFLINE_AFTER=0s", "VIGIL_LOG_LEVEL=debug",
		}
		n.http = "http://" + n.http
		nodes = append(nodes, n)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.stop()
		}
		if t.Failed() {
			for _, n := range nodes {
				b, _ := os.ReadFile(filepath.Join(n.dir, "vigil.log"))
				if dir := os.Getenv("KEEP_NODE_LOGS"); dir != "" {
					os.WriteFile(filepath.Join(dir, n.name+".log"), b, 0o600)
				}
				t.Logf("%s's log (last 4 KB):\n%s", n.name, b[max(0, len(b)-4096):])
			}
		}
	})
	for _, n := range nodes {
		n.start(t)
	}
	watchCtx, stopWatch := context.WithCancel(context.Background())
	var watchers sync.WaitGroup
	for _, n := range nodes {
		watchers.Go(func() { n.watch(watchCtx) })
	}
	defer func() { stopWatch(); watchers.Wait() }()

	leader := func() *clusterNode {
		var found *clusterNode
		testkit.WaitFor(t, 20*time.Second, "a leader", func() bool {
			for _, n := range nodes {
				n.mu.Lock()
				up := n.up
				n.mu.Unlock()
				if up && n.leads(t) {
					found = n
					return true
				}
			}
			return false
		})
		return found
	}
	first := leader()
	// The leader runs an agent on every node: three, one each.
	agentNodes := func(n *clusterNode) map[string]int {
		var v coord.View
		n.get(t, "/api/v1/agents", &v)
		on := map[string]int{}
		for _, a := range v.Agents {
			if a.Status == "ready" {
				on[a.Node]++
			}
		}
		return on
	}
	testkit.WaitFor(t, 30*time.Second, "the leader's three agents ready", func() bool {
		on := agentNodes(first)
		return on[""] == 0 && on[nodes[0].id()]+on[nodes[1].id()]+on[nodes[2].id()] == 3
	})

	// The fleet: 300 sensors and a camera on site home, QoS 1.
	sc := sim.NewScenario()
	sc.Brokers = []string{broker}
	sc.Username, sc.Password = "home", externalLogins["home"]
	sc.QoS = 1
	temp := sim.TypeDefaults(sim.TypeTemperature)
	temp.Name, temp.Site, temp.Count, temp.Period = "temps", "home", 300, time.Second
	cam := sim.TypeDefaults(sim.TypeCamera)
	cam.Name, cam.Site, cam.Count, cam.Period = "cams", "home", 1, time.Second
	cam.Camera = sim.CameraConfig{Width: 160, Height: 120, FPS: 5, Quality: 60, PreRoll: time.Second}
	sc.Fleets = []sim.Fleet{temp, cam}
	sc.ApplyDefaults()
	fleet, err := sim.New(sc, slog.New(slog.DiscardHandler))
	must(t, err)
	camera := fleet.DeviceIDs()[300] // in fleet order: the 300 sensors, then the camera
	fctx, stopFleet := context.WithCancel(context.Background())
	fleetDone := make(chan struct{})
	go func() { defer close(fleetDone); fleet.Run(fctx) }()
	defer func() { stopFleet(); <-fleetDone }()
	st := fleet.Stats()
	testkit.WaitFor(t, 60*time.Second, "301 devices connected", func() bool { return st.EverConnected.Load() == 301 })
	// Every node's API lists every device, whichever node stored it.
	for _, n := range nodes {
		testkit.WaitFor(t, 20*time.Second, n.name+" listing the 301 devices", func() bool {
			var ds []struct{ ID string }
			return n.get(t, "/api/v1/devices", &ds) == nil && len(ds) == 301
		})
	}
	time.Sleep(3 * time.Second) // some readings on every node

	stored := func(n *clusterNode) float64 {
		req, _ := http.NewRequest("GET", n.http+"/metrics", nil)
		req.SetBasicAuth("admin", adminPassword)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		defer resp.Body.Close()
		var v float64
		body, _ := io.ReadAll(resp.Body)
		for line := range strings.Lines(string(body)) {
			if strings.HasPrefix(line, "vigil_telemetry_stored_total ") {
				fmt.Sscan(strings.TrimPrefix(line, "vigil_telemetry_stored_total "), &v)
			}
		}
		return v
	}
	var split []string
	for _, n := range nodes {
		split = append(split, fmt.Sprintf("%s %.0f", n.name, stored(n)))
	}
	t.Logf("readings stored per node before the kills: %s", strings.Join(split, ", "))

	// Zigbee2MQTT's devices through Home Assistant discovery: the leader
	// reads them, and every node lists them.
	z2m := deviceFixtures(t)["zigbee2mqtt"]
	z2mPub := func(msg fixtureMessage) {
		t.Helper()
		args := []string{"-h", "127.0.0.1", "-p", fmt.Sprint(m.Port), "-u", "zigbee2mqtt", "-P", externalLogins["zigbee2mqtt"], "-q", "1", "-t", msg.Topic, "-m", msg.Payload}
		if msg.Retain {
			args = append(args, "-r")
		}
		if out, err := exec.Command(pub, args...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub: %v: %s", err, out)
		}
	}
	replay(t, z2m, z2mPub, func() bool {
		var ds []telemetry.Device
		return nodes[0].get(t, "/api/v1/devices", &ds) == nil && listed(z2m, ds)
	})
	const climate = "0x00158d0003d4e5f6_temperature_zigbee2mqtt"
	climateValue := func(n *clusterNode) float64 {
		var d struct {
			LastValue *float64 `json:"last_value"`
		}
		if n.get(t, "/api/v1/devices/"+climate, &d) != nil || d.LastValue == nil {
			return -1
		}
		return *d.LastValue
	}
	for _, n := range nodes {
		testkit.WaitFor(t, 20*time.Second, n.name+" listing Zigbee2MQTT's temperature", func() bool { return climateValue(n) == 21.84 })
	}

	// Someone 0.4 m from the camera: two readings back to back (one
	// connection, -l), so that none of the camera's own in between resets
	// the detector's count.
	motion := func() {
		t.Helper()
		cmd := exec.Command(pub, "-h", "127.0.0.1", "-p", fmt.Sprint(m.Port), "-u", "home", "-P", externalLogins["home"],
			"-q", "1", "-t", "vigil/home/"+camera+"/motion", "-l")
		cmd.Stdin = strings.NewReader("{\"distance_m\":0.4}\n{\"distance_m\":0.4}\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub: %v: %s", err, out)
		}
	}
	events := func(n *clusterNode) []detect.Event {
		var evs []detect.Event
		n.get(t, "/api/v1/events?site=home", &evs)
		return evs
	}

	// A non-leader dies and comes back.
	var other *clusterNode
	for _, n := range nodes {
		if n != first {
			other = n
			break
		}
	}
	other.kill()
	time.Sleep(2 * time.Second)
	other.start(t)

	// recording waits for a clip of the camera being recorded, other than
	// those in not, and returns its id.
	recording := func(n *clusterNode, not ...string) string {
		id := ""
		testkit.WaitFor(t, 20*time.Second, "a recording under way", func() bool {
			var clips []coord.Clip
			n.get(t, "/api/v1/clips?site=home&limit=100", &clips)
			for _, c := range clips {
				if c.State == coord.ClipRecording && !slices.Contains(not, c.ID) {
					id = c.ID
					return true
				}
			}
			return false
		})
		return id
	}
	// The leader dies five times at least: while a clip is being recorded
	// by an agent on its own node (round 0: at first all agents are on the
	// first node) and by an agent on another node (from round 3, the first
	// leader with an agent on another node: a leader adopts the agents
	// of the one before, which may all run on its own node, and starts no
	// other while they suffice); followed at once by a detection, before
	// any node leads (round 1).
	var takeovers []time.Duration
	var lostClip, keptClip string // recorded by an agent that died with the leader; by one that did not
	keptOnOther := false
	for round := 0; round < 5 || keptClip == "" && round < 9; round++ {
		old := leader()
		survivor := nodes[0]
		if survivor == old {
			survivor = nodes[1]
		}
		evsBefore := len(events(survivor))
		keep := false // this round records across the leader's death
		if round >= 3 && keptClip == "" {
			var v coord.View
			old.get(t, "/api/v1/agents", &v)
			keep = slices.ContainsFunc(v.Agents, func(a coord.AgentView) bool { return a.Status == "ready" && a.Node != "" && a.Node != old.id() })
		}
		if round == 0 {
			// A browser on a node that does not lead hears of the event.
			req, _ := http.NewRequest("GET", survivor.http+"/api/v1/stream?events=event", nil)
			req.SetBasicAuth("admin", adminPassword)
			resp, err := http.DefaultClient.Do(req)
			must(t, err)
			heard := make(chan string, 1)
			go func() {
				defer resp.Body.Close()
				buf := make([]byte, 4096)
				var got strings.Builder
				for {
					n, err := resp.Body.Read(buf)
					got.Write(buf[:n])
					if strings.Contains(got.String(), "event: event") || err != nil {
						heard <- got.String()
						return
					}
				}
			}()
			motion()
			select {
			case s := <-heard:
				if !strings.Contains(s, "event: event") {
					t.Errorf("%s's event stream: %q", survivor.name, s)
				}
			case <-time.After(15 * time.Second):
				t.Errorf("%s (not the leader) streamed no event to its browser", survivor.name)
			}
			lostClip = recording(survivor)
			time.Sleep(2 * time.Second)
		}
		if keep {
			testkit.WaitFor(t, 30*time.Second, "no recording under way", func() bool {
				var clips []coord.Clip
				survivor.get(t, "/api/v1/clips?site=home&limit=100", &clips)
				return !slices.ContainsFunc(clips, func(c coord.Clip) bool { return c.State == coord.ClipRecording })
			})
			motion()
			keptClip = recording(survivor, lostClip)
			var v coord.View
			testkit.WaitFor(t, 10*time.Second, "the stream's agent", func() bool {
				old.get(t, "/api/v1/agents", &v)
				return slices.ContainsFunc(v.Streams, func(s coord.StreamView) bool { return s.ClipID == keptClip && s.Agent != "" })
			})
			for _, st := range v.Streams {
				for _, a := range v.Agents {
					if st.ClipID == keptClip && a.ID == st.Agent {
						keptOnOther = a.Node != old.id()
					}
				}
			}
			if !keptOnOther {
				// Seen in CI: the agent on another node did not take the
				// stream; another round, another leader.
				t.Logf("round %d: the recording went to an agent on the leader's node; again next round", round)
				keptClip, keep = "", false
			}
			time.Sleep(2 * time.Second)
		}
		killed := time.Now()
		old.kill()
		if round == 1 {
			motion() // while no node leads
		}
		var took time.Duration
		testkit.WaitFor(t, 20*time.Second, "the new leader's first decision", func() bool {
			var hist []coord.HistoryEntry
			survivor.get(t, "/api/v1/agents/history?limit=20", &hist)
			for _, h := range hist {
				if h.At.After(killed) {
					took = h.At.Sub(killed)
					return true
				}
			}
			return false
		})
		takeovers = append(takeovers, took)
		if round == 1 {
			testkit.WaitFor(t, 20*time.Second, "the detection made without a leader served", func() bool {
				return len(events(survivor)) == evsBefore+1
			})
		}
		if keep {
			// The recording goes on under the new leader: let it end
			// before the next kill (which may take its agent's node).
			testkit.WaitFor(t, 30*time.Second, "the adopted recording's clip", func() bool {
				var c coord.Clip
				return survivor.get(t, "/api/v1/clips/"+keptClip, &c) == nil && (c.State == coord.ClipReady || c.State == coord.ClipFailed)
			})
		}
		old.start(t)
	}

	// The last leader runs three agents again; the agents of the leaders
	// before, adopted, are scaled down to agents.min: three agent
	// processes run. They may all be on the leader's own node (a gap CI
	// found: its death would then end every recording under way; one
	// cause is fixed, TestTheLastAgentOnAnotherNodeStays... in
	// internal/coord, others are not ruled out, docs/ha.md).
	last := leader()
	var on map[string]int
	procs := 0
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		on, procs = agentNodes(last), agentProcesses(nodes)
		n := 0
		for _, c := range on {
			n += c
		}
		if n == 3 && on[""] == 0 && procs == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s: the leader's ready agents by node %v, %d agent processes; want 3, and 3 processes", on, procs)
		}
	}
	t.Logf("the last leader's agents by node: %v (all on its own node, %s: %v)", on, last.id(), on[last.id()] == 3)

	// The last leader reads Zigbee2MQTT's devices: a new state is stored,
	// once (two states in all).
	z2mPub(fixtureMessage{Topic: "zigbee2mqtt/Living room climate", Payload: `{"battery":100,"humidity":47.1,"linkquality":120,"pressure":1008.1,"temperature":22.5,"voltage":3025}`})
	testkit.WaitFor(t, 20*time.Second, "the new leader storing Zigbee2MQTT's temperature", func() bool { return climateValue(last) == 22.5 })

	// A site disarmed through a node that does not lead: the leader
	// records nothing there until it is armed again.
	follower := nodes[0]
	if follower == last {
		follower = nodes[1]
	}
	if code := follower.post(t, "/api/v1/sites/home/disarm"); code != 200 {
		t.Fatalf("disarm on %s: %d", follower.name, code)
	}
	before := len(events(follower))
	time.Sleep(time.Second) // the site's retained mode reaches the leader
	motion()
	time.Sleep(3 * time.Second) // a detection would have made its event by now
	if n := len(events(follower)); n != before {
		t.Errorf("the leader recorded %d event(s) on a site disarmed on another node", n-before)
	}
	if code := follower.post(t, "/api/v1/sites/home/arm"); code != 200 {
		t.Fatalf("arm on %s: %d", follower.name, code)
	}

	// Both recordings under way when the leader died end as playable
	// clips: the one whose agent died with the leader interrupted, the
	// one whose agent lived on adopted by the new leader and whole.
	clipOf := func(id string) coord.Clip {
		var c coord.Clip
		testkit.WaitFor(t, 60*time.Second, "clip "+id+" finished", func() bool {
			return nodes[0].get(t, "/api/v1/clips/"+id, &c) == nil && (c.State == coord.ClipReady || c.State == coord.ClipFailed)
		})
		return c
	}
	if keptClip == "" {
		t.Fatalf("in %d rounds, no recording went to an agent on another node than the leader's: adoption not tested", len(takeovers))
	}
	clip, kept := clipOf(lostClip), clipOf(keptClip)
	codec, secs := ffprobe(t, filepath.Join(storage, filepath.FromSlash(clip.File)))
	if clip.State != coord.ClipReady || codec == "" || secs < 1 {
		t.Errorf("the clip whose agent died with the leader: %s, %s, %.1f s", clip.State, codec, secs)
	}
	keptCodec, keptSecs := ffprobe(t, filepath.Join(storage, filepath.FromSlash(kept.File)))
	switch {
	case kept.State != coord.ClipReady || keptCodec == "":
		t.Errorf("the clip recorded across the leader's death: %s, %s", kept.State, keptCodec)
	case !keptOnOther:
		t.Errorf("the recording went to an agent on the leader's node, not another's: adoption not tested")
	case kept.Interrupted || keptSecs < 6:
		t.Errorf("the clip whose agent lived on: interrupted=%v, %.1f s; want it whole (1 s of pre-roll and 6 s)", kept.Interrupted, keptSecs)
	}
	t.Logf("recording whose agent died with the leader: %.1f s, interrupted=%v; recording whose agent was on another node (%v): %.1f s, interrupted=%v",
		secs, clip.Interrupted, keptOnOther, keptSecs, kept.Interrupted)
	// It plays from every node (the clip storage is shared).
	for _, n := range nodes {
		if code, body, _ := firstKB(t, n.http, clip.ID); code != http.StatusPartialContent || len(body) != 1024 || string(body[4:8]) != "ftyp" {
			t.Errorf("%s serves the clip: %d, %d bytes", n.name, code, len(body))
		}
	}

	// A browser on any node sees every reading of a device live, not only
	// the share its node stores: one a second here.
	sensor := fleet.DeviceIDs()[0]
	for _, n := range nodes {
		if got := n.streamed(t, "/api/v1/stream?events=reading&device="+sensor, "event: reading", 6*time.Second); got < 4 {
			t.Errorf("%s streamed %d readings of %s in 6 s, want about 5 (one a second)", n.name, got, sensor)
		}
	}

	// Every acknowledged reading stored, once.
	stopFleet()
	<-fleetDone
	acked := st.Published.Load()
	conn, err := pgx.Connect(context.Background(), db)
	must(t, err)
	defer conn.Close(context.Background())
	var rows, distinct int64
	// The fleet's readings all carry a seq; mosquitto_pub's motions do
	// not (and are not the fleet's).
	testkit.WaitFor(t, 30*time.Second, "every acknowledged reading stored", func() bool {
		must(t, conn.QueryRow(context.Background(), "SELECT count(*), count(DISTINCT (device, seq)) FROM readings WHERE seq IS NOT NULL").Scan(&rows, &distinct))
		return rows >= acked
	})
	var climateRows int
	must(t, conn.QueryRow(context.Background(), "SELECT count(*) FROM readings r JOIN devices d ON d.pk = r.device WHERE d.id = $1", climate).Scan(&climateRows))
	if climateRows != 2 {
		t.Errorf("Zigbee2MQTT's temperature: %d readings stored, want its 2 states once each", climateRows)
	}
	if rows != distinct {
		t.Errorf("%d rows for %d distinct (device, seq): some stored twice", rows, distinct)
		rs, err := conn.Query(context.Background(), "SELECT device, seq, count(*), array_agg(ts)::text, array_agg(received)::text FROM readings GROUP BY device, seq HAVING count(*) > 1 LIMIT 20")
		must(t, err)
		for rs.Next() {
			var dev, n int64
			var seq *int64
			var ts, rec string
			must(t, rs.Scan(&dev, &seq, &n, &ts, &rec))
			t.Logf("device %d seq %v: %d rows, ts %s, received %s", dev, seq, n, ts, rec)
		}
		rs.Close()
	}
	stopWatch()
	watchers.Wait()
	var gaps []string
	for _, n := range nodes {
		gaps = append(gaps, fmt.Sprintf("%s %v", n.name, n.gap.Round(time.Millisecond)))
		// Seen from 0.5 s to 2.3 s on 2 cores shared with the other
		// packages' tests (CI runs two at once): a node that stops
		// answering for good, or for longer than a takeover, is what this
		// catches.
		if n.gap > 3*time.Second {
			t.Errorf("%s did not answer /healthz for %v while up", n.name, n.gap)
		}
	}
	sorted := slices.Clone(takeovers)
	slices.Sort(sorted)
	t.Logf("%d readings acknowledged, %d rows, %d distinct; longest /healthz gap: %s; leader takeovers %v (p50 %v, max %v); clip %s %.1f s",
		acked, rows, distinct, strings.Join(gaps, ", "), takeovers, sorted[len(sorted)/2], sorted[len(sorted)-1], codec, secs)
}

// agentProcesses counts the `vigil agent` processes the nodes started.
func agentProcesses(nodes []*clusterNode) int {
	pids := map[string]bool{}
	for _, n := range nodes {
		if n.cmd != nil && n.cmd.ProcessState == nil {
			pids[fmt.Sprint(n.cmd.Process.Pid)] = true
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/stat")
	count := 0
	for _, p := range procs {
		stat, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		rest := string(stat[strings.LastIndexByte(string(stat), ')')+2:])
		fields := strings.Fields(rest)
		if len(fields) < 2 || !pids[fields[1]] {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join(filepath.Dir(p), "cmdline"))
		if strings.Contains(string(cmdline), "\x00agent\x00--id\x00") {
			count++
		}
	}
	return count
}
