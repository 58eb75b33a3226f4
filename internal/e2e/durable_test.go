package e2e_test

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	_ "modernc.org/sqlite"

	"github.com/vigilhq/vigil/internal/sim"
	"github.com/vigilhq/vigil/internal/testkit"
	"github.com/vigilhq/vigil/internal/testpeer"
)

// vigilProcess is `vigil up` run as a process of its own, so that a test
// can kill it.
type vigilProcess struct {
	cmd  *exec.Cmd
	addr string // MQTT, on loopback
	log  *testkit.Buffer
	done chan struct{}
}

// freePort returns a loopback address nobody listens on (yet).
func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startVigilProcess runs `vigil up` on dataDir with env added, and waits
// until its broker answers.
func startVigilProcess(t testing.TB, dataDir string, env ...string) *vigilProcess {
	t.Helper()
	vp := &vigilProcess{addr: freePort(t), log: &testkit.Buffer{}, done: make(chan struct{})}
	vp.cmd = exec.Command(vigilBinary(t), "up")
	// Not the VIGIL_ variables of whoever runs the tests (VIGIL_FUZZTIME
	// for scripts/test.sh): vigil up refuses those that are no setting.
	inherited := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "VIGIL_") })
	vp.cmd.Env = append(inherited, append([]string{
		"VIGIL_DATA_DIR=" + dataDir, "VIGIL_MQTT_LISTEN=" + vp.addr, "VIGIL_MQTT_WS_LISTEN=",
		"VIGIL_HTTP_LISTEN=" + freePort(t), "VIGIL_AUDIT_ON_START=false", "VIGIL_LOG_LEVEL=warn",
	}, env...)...)
	vp.cmd.Stdout, vp.cmd.Stderr = vp.log, vp.log
	if err := vp.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { vp.cmd.Wait(); close(vp.done) }()
	t.Cleanup(func() { vp.cmd.Process.Kill(); <-vp.done })
	testkit.WaitFor(t, 30*time.Second, "vigil up's broker", func() bool {
		select {
		case <-vp.done:
			t.Fatalf("vigil up ended: %s", vp.log.String())
		default:
		}
		c, err := net.DialTimeout("tcp", vp.addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return vp
}

// stop sends sig and waits for the process to end; it returns how long
// that took.
func (vp *vigilProcess) stop(t testing.TB, sig os.Signal) time.Duration {
	t.Helper()
	start := time.Now()
	if err := vp.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-vp.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("vigil up did not end within a minute of %v:\n%s", sig, vp.log.String())
	}
	return time.Since(start)
}

// ackLog is what a fleet was acknowledged: for each device, the
// sequence numbers of its readings that got a PUBACK with success.
type ackLog struct {
	mu    sync.Mutex
	acked map[string][]int64
}

func (a *ackLog) add(dev string, seq int64) {
	a.mu.Lock()
	a.acked[dev] = append(a.acked[dev], seq)
	a.mu.Unlock()
}

func (a *ackLog) total() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, s := range a.acked {
		n += len(s)
	}
	return n
}

// runAckedFleet connects devices (QoS 1, anonymous on loopback) that publish
// readings with a sequence number as fast as they are acknowledged, each
// on its own connection, until ctx ends or their connection breaks.
func runAckedFleet(ctx context.Context, t testing.TB, addr, prefix string, devices int, log *ackLog) *sync.WaitGroup {
	var wg sync.WaitGroup
	for i := range devices {
		dev := fmt.Sprintf("%s-%02d", prefix, i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				t.Errorf("%s: %v", dev, err)
				return
			}
			lost, gone := context.WithCancel(context.Background()) // the connection broke
			defer gone()
			c := paho.NewClient(paho.ClientConfig{Conn: conn, ClientID: dev,
				OnClientError: func(error) { gone() }, OnServerDisconnect: func(*paho.Disconnect) { gone() }})
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			ca, err := c.Connect(cctx, &paho.Connect{ClientID: dev, KeepAlive: 30, CleanStart: true})
			cancel()
			if err != nil || ca.ReasonCode != 0 {
				t.Errorf("%s: connect: %v %v", dev, ca, err)
				return
			}
			defer conn.Close()
			for seq := int64(1); ctx.Err() == nil; seq++ {
				pctx, cancel := context.WithTimeout(lost, 10*time.Second)
				pr, err := c.Publish(pctx, &paho.Publish{Topic: "vigil/crash/" + dev + "/telemetry", QoS: 1,
					Payload: fmt.Appendf(nil, `{"value":%d,"units":"C","seq":%d}`, seq%40, seq)})
				cancel()
				if err != nil || pr == nil || pr.ReasonCode >= 0x80 {
					return // the broker went away: this one was not acknowledged
				}
				log.add(dev, seq)
			}
		}()
	}
	return &wg
}

// storedSeqs reads, from a stopped Vigil's database, how many times each
// (device, seq) of the devices whose id starts with prefix is stored.
func storedSeqs(t testing.TB, dataDir, prefix string) map[string]map[int64]int {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dataDir, "vigil.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT d.id, r.seq FROM readings r JOIN devices d ON d.pk = r.device WHERE d.id LIKE ? || '%'`, prefix)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]map[int64]int{}
	for rows.Next() {
		var id string
		var seq int64
		if err := rows.Scan(&id, &seq); err != nil {
			t.Fatal(err)
		}
		if out[id] == nil {
			out[id] = map[int64]int{}
		}
		out[id][seq]++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkAcked fails t for every acknowledged reading that is not stored
// exactly once, and returns how many were acknowledged.
func checkAcked(t testing.TB, acks *ackLog, stored map[string]map[int64]int) int {
	t.Helper()
	acks.mu.Lock()
	defer acks.mu.Unlock()
	n, missing, twice := 0, 0, 0
	for dev, seqs := range acks.acked {
		for _, seq := range seqs {
			n++
			switch stored[dev][seq] {
			case 0:
				if missing++; missing <= 5 {
					t.Errorf("%s seq %d was acknowledged but is not stored", dev, seq)
				}
			case 1:
			default:
				if twice++; twice <= 5 {
					t.Errorf("%s seq %d is stored %d times", dev, seq, stored[dev][seq])
				}
			}
		}
	}
	if missing > 0 || twice > 0 {
		t.Errorf("of %d acknowledged readings, %d are missing and %d stored more than once", n, missing, twice)
	}
	return n
}

// underLoad starts vigil up on dir with a telemetry queue of queue and 24
// devices publishing as fast as they are acknowledged, and returns once
// 5,000 readings are acknowledged; the fleet stops when its connections
// break.
func underLoad(t *testing.T, dir, queue string) (*vigilProcess, *ackLog, *sync.WaitGroup) {
	t.Helper()
	vp := startVigilProcess(t, dir, "VIGIL_TELEMETRY_QUEUE_SIZE="+queue)
	acks := &ackLog{acked: map[string][]int64{}}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	fleet := runAckedFleet(ctx, t, vp.addr, "dev", 24, acks)
	testkit.WaitFor(t, 30*time.Second, "5,000 acknowledged readings", func() bool { return acks.total() >= 5000 })
	return vp, acks, fleet
}

// A PUBACK means the reading is in the database: kill -9 of vigil up under
// load loses nothing it acknowledged, with the storage queue empty or full
// (a queue of 8 with 24 devices publishing as fast as they are
// acknowledged is full all the time).
func TestAKilledVigilHasStoredEveryReadingItAcknowledged(t *testing.T) {
	if testing.Short() {
		t.Skip("kills vigil up five times")
	}
	for round, queue := range []string{"50000", "50000", "50000", "8", "8"} {
		t.Run(fmt.Sprintf("round %d, queue %s", round+1, queue), func(t *testing.T) {
			dir := t.TempDir()
			vp, acks, fleet := underLoad(t, dir, queue)
			vp.stop(t, syscall.SIGKILL)
			fleet.Wait()
			// The next start recovers the database; then it stops cleanly.
			startVigilProcess(t, dir).stop(t, syscall.SIGTERM)
			n := checkAcked(t, acks, storedSeqs(t, dir, "dev"))
			t.Logf("%d readings acknowledged before the kill", n)
		})
	}
}

// SIGTERM under load: Vigil stops taking readings first, then stores what
// it holds; nothing it acknowledged is missing.
func TestAStoppedVigilHasStoredEveryReadingItAcknowledged(t *testing.T) {
	if testing.Short() {
		t.Skip("runs vigil up as a process")
	}
	for _, queue := range []string{"50000", "8"} {
		t.Run("queue "+queue, func(t *testing.T) {
			dir := t.TempDir()
			vp, acks, fleet := underLoad(t, dir, queue)
			took := vp.stop(t, syscall.SIGTERM)
			fleet.Wait()
			n := checkAcked(t, acks, storedSeqs(t, dir, "dev"))
			t.Logf("%d readings acknowledged; vigil up stopped %v after SIGTERM", n, took.Round(time.Millisecond))
		})
	}
}

// clipRow is a clip as the database holds it.
type clipRow struct {
	id, state, file, thumbnail, errText string
	interrupted                         bool
}

// clipRows reads the clips of a Vigil's database (running or not).
func clipRows(t testing.TB, dataDir string) []clipRow {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dataDir, "vigil.db")+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT id, state, file, thumbnail, error, interrupted FROM clips`)
	if err != nil {
		return nil // not created yet
	}
	defer rows.Close()
	var out []clipRow
	for rows.Next() {
		var c clipRow
		if err := rows.Scan(&c.id, &c.state, &c.file, &c.thumbnail, &c.errText, &c.interrupted); err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

// A clip recording when vigil up is killed is finished at the next start,
// once, kept and marked interrupted: its video and thumbnail are there.
func TestAClipRecordingAtACrashPlaysAfterRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("kills vigil up")
	}
	dir := t.TempDir()
	env := []string{"VIGIL_RECORDING_CLIP_SECONDS=30", "VIGIL_RECORDING_PRE_ROLL_SECONDS=2", "VIGIL_TELEMETRY_OFFLINE_AFTER=0s"}
	vp := startVigilProcess(t, dir, env...)
	s, err := sim.New(cameraFleet("mqtt://"+vp.addr, "home", 1), slog.New(slog.DiscardHandler))
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	fleetDone := make(chan struct{})
	go func() { defer close(fleetDone); s.Run(ctx) }()
	defer func() { cancel(); <-fleetDone }()
	testkit.WaitFor(t, 60*time.Second, "a clip recording", func() bool {
		cs := clipRows(t, dir)
		return len(cs) == 1 && cs[0].state == "recording"
	})
	time.Sleep(4 * time.Second) // a few seconds of it on disk
	vp.stop(t, syscall.SIGKILL)
	cancel()
	<-fleetDone

	vp = startVigilProcess(t, dir, env...)
	testkit.WaitFor(t, 60*time.Second, "the clip finished", func() bool {
		cs := clipRows(t, dir)
		return len(cs) == 1 && (cs[0].state == "ready" || cs[0].state == "failed")
	})
	vp.stop(t, syscall.SIGTERM)
	c := clipRows(t, dir)[0]
	if c.state != "ready" || !c.interrupted || c.file == "" || c.thumbnail == "" {
		t.Fatalf("after the restart the clip is %s (interrupted %v, file %q, thumbnail %q, error %q)", c.state, c.interrupted, c.file, c.thumbnail, c.errText)
	}
	for _, f := range []string{c.file, c.thumbnail} {
		if st, err := os.Stat(filepath.Join(dir, "clips", filepath.FromSlash(f))); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// A restarted vigil up, after a kill or a stop, delivers every message
// queued for an offline persistent session, in order.
func TestQueuedMessagesOfAnOfflineSessionSurviveARestart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs vigil up as a process")
	}
	const n, topic = 100, "vigil-watch/queue"
	for _, sig := range []os.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			vp := startVigilProcess(t, dir)
			ps, _ := testpeer.Resume(t, vp.addr, "away", true)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := ps.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}}); err != nil {
				t.Fatal(err)
			}
			must(t, ps.Disconnect(&paho.Disconnect{}))

			pub, _, err := mqttConnect(t, vp.addr, "publisher", "", "")
			must(t, err)
			for i := range n {
				if _, err := pub.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(fmt.Sprint(i))}); err != nil {
					t.Fatal(err)
				}
			}
			// The broker writes a queued message before it reads the
			// publisher's next packet: once this one is acknowledged, the
			// n before it are on disk.
			_, err = pub.Publish(ctx, &paho.Publish{Topic: "vigil-watch/other", QoS: 1, Payload: []byte("done")})
			must(t, err)
			vp.stop(t, sig)

			vp = startVigilProcess(t, dir)
			ps, present := testpeer.Resume(t, vp.addr, "away", false)
			if !present {
				t.Fatal("the session did not survive the restart")
			}
			testkit.WaitFor(t, 10*time.Second, fmt.Sprintf("%d queued messages", n), func() bool { return len(ps.Received()) >= n })
			time.Sleep(200 * time.Millisecond) // nothing more
			got := ps.Received()
			for i, p := range got {
				if p != fmt.Sprint(i) {
					t.Fatalf("message %d of %d is %q: %v", i, len(got), p, got)
				}
			}
			if len(got) != n {
				t.Fatalf("got %d messages, want %d: %v", len(got), n, got)
			}
		})
	}
}
