// Package bench measures a broker under a simulated fleet: it starts the
// target (Vigil as a child `vigil up`, or Debian's Mosquitto) on loopback,
// runs the fleet and a subscriber in this process, and reports sustained
// rate, end-to-end latency, loss, storage (for Vigil) and the broker's CPU
// and memory.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vigilhq/vigil/internal/measure"
	"github.com/vigilhq/vigil/internal/sim"
)

// Options configure a run.
type Options struct {
	Target   string // "vigil" or "mosquitto"
	Devices  int
	Period   time.Duration
	Duration time.Duration // of the steady phase, after every device connected
	QoS      int
	// Subscriber adds a subscriber to every reading, to measure delivery
	// latency and loss; it doubles the broker's work.
	Subscriber bool
	Vigil      string // path of the vigil binary to start; default this executable
	Progress   io.Writer
	Log        *slog.Logger
	// ProfileDir, if set, is created and receives CPU profiles of the
	// steady phase, of this process (fleet and subscriber) and, for Vigil,
	// of the broker, and Vigil's heap profile at the end of it.
	ProfileDir string
}

// Result is what a run measured.
type Result struct {
	Target        string  `json:"target"`
	Devices       int     `json:"devices"`
	PeriodS       float64 `json:"period_s"`
	QoS           int     `json:"qos"`
	Connected     int64   `json:"connected"`
	AllConnectedS float64 `json:"all_connected_s"`
	SteadyS       float64 `json:"steady_s"`

	Published   int64   `json:"published"`     // acknowledged by the broker, whole run
	SteadyRate  float64 `json:"msgs_per_s"`    // published per second in the steady phase
	Expected    float64 `json:"expected_rate"` // devices / period
	PubErrors   int64   `json:"publish_errors"`
	ConnectErrs int64   `json:"connect_errors"`

	Subscriber bool            `json:"subscriber"`
	Received   int64           `json:"received"` // at the subscriber
	SubLost    int64           `json:"subscriber_lost"`
	SubLatency measure.Summary `json:"subscriber_latency"`
	AckLatency measure.Summary `json:"ack_latency"`

	Stored       int64   `json:"stored"`               // Vigil: readings in the database
	StoreMissing int64   `json:"store_missing"`        // acknowledged but not stored
	StoreP50ms   float64 `json:"store_latency_p50_ms"` // Vigil: device timestamp to write
	StoreP99ms   float64 `json:"store_latency_p99_ms"`

	BrokerCPUPct float64 `json:"broker_cpu_pct"` // of one core, steady phase
	BrokerRSSMB  float64 `json:"broker_peak_rss_mb"`
	// KBPerDevice is the broker's peak RSS over the devices connected;
	// USPerReading its CPU time in the steady phase over the readings
	// acknowledged then (each read, stored by Vigil, and delivered to the
	// subscriber when there is one).
	KBPerDevice  float64 `json:"kb_per_device"`
	USPerReading float64 `json:"cpu_us_per_reading"`
	// Runtime is where Vigil's memory goes at the end of the steady
	// phase, from its Go runtime, and what its broker held back or
	// dropped; nil for Mosquitto.
	Runtime *Internals `json:"runtime,omitempty"`
}

// Internals is Vigil's memory as its Go runtime counts it, and its
// broker's counts of back-pressure and loss.
type Internals struct {
	HeapInuseMB  float64 `json:"heap_inuse_mb"`
	StackInuseMB float64 `json:"stack_inuse_mb"`
	OtherMB      float64 `json:"other_sys_mb"` // GC metadata, mspans, buffers
	Goroutines   int     `json:"goroutines"`
	GCCycles     float64 `json:"gc_cycles"` // in the steady phase
	// PublisherWaits counts publishers held back for a subscriber behind,
	// SubscriberDropped messages a subscriber lost (its queue full), over
	// the whole run.
	PublisherWaits    float64 `json:"publisher_waits"`
	SubscriberDropped float64 `json:"subscriber_dropped"`
	// Batches is how many transactions stored the readings, in the steady
	// phase.
	Batches float64 `json:"store_batches"`
}

// target is a broker under test.
type target interface {
	url() string
	pid() int
	// stored returns readings stored and the storage latency quantiles, for
	// targets that store (Vigil); ok is false otherwise.
	stored(ctx context.Context) (n int64, p50, p99 float64, ok bool, err error)
	// runtime returns a Go target's memory (nil for others).
	runtime(ctx context.Context) (*Internals, error)
	close() error
}

// Run runs one benchmark.
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	dir, err := os.MkdirTemp("", "vigil-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	var t target
	switch o.Target {
	case "vigil":
		t, err = startVigil(ctx, o.Vigil, dir)
	case "mosquitto":
		t, err = startMosquitto(ctx, dir)
	default:
		err = fmt.Errorf("unknown target %q (vigil or mosquitto)", o.Target)
	}
	if err != nil {
		return nil, err
	}
	defer t.close()
	fmt.Fprintf(o.Progress, "%s: broker at %s (pid %d); %d devices every %v, QoS %d\n", o.Target, t.url(), t.pid(), o.Devices, o.Period, o.QoS)

	var subscriber *subscriberProcess
	received := func() int64 { return 0 }
	if o.Subscriber {
		if subscriber, err = startSubscriber(ctx, o.Vigil, t.url(), o.QoS, "vigil/+/+/telemetry"); err != nil {
			return nil, err
		}
		defer subscriber.stop()
		received = subscriber.Received
	}

	fleet, err := startFleet(ctx, t.url(), o.Devices, o.Period, o.QoS, o.Log)
	if err != nil {
		return nil, err
	}
	defer fleet.end()
	st := fleet.st

	// Phase 1: connect everyone (bounded: 2 minutes plus the ramp).
	progressCtx, stopProgress := context.WithCancel(ctx)
	defer stopProgress()
	var prevPub, prevRecv int64
	prevAt := time.Now()
	go measure.Progress(progressCtx, o.Progress, 2*time.Second, func() string {
		now := time.Now()
		pub, recv := st.Published.Load(), received()
		secs := now.Sub(prevAt).Seconds()
		line := fmt.Sprintf("  connected %d/%d  published %.0f/s  received %.0f/s  errors %d",
			st.Connected.Load(), o.Devices, float64(pub-prevPub)/secs, float64(recv-prevRecv)/secs, st.Errors.Load()+st.ConnectErrors.Load())
		prevPub, prevRecv, prevAt = pub, recv, now
		return line
	})
	if err := fleet.connected(ctx); err != nil {
		return nil, err
	}
	sum := st.Summary()
	// Let every device publish once before the steady phase begins.
	if err := sleepCtx(ctx, o.Period+time.Second); err != nil {
		return nil, err
	}

	// Phase 2: steady state.
	cpu0, _ := cpuSeconds(t.pid())
	mem0, _ := t.runtime(ctx)
	pub0, t0 := st.Published.Load(), time.Now()
	st.Ack.Reset() // latency of the steady phase only, not of the ramp
	stopProfiles := startProfiles(ctx, o, t)
	select {
	case <-time.After(o.Duration):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	stopProfiles()
	pub1, t1 := st.Published.Load(), time.Now()
	cpu1, _ := cpuSeconds(t.pid())
	mem1, err := t.runtime(ctx)
	if err != nil {
		o.Log.Error("runtime memory", "error", err)
	}
	if mem0 != nil && mem1 != nil {
		mem1.GCCycles -= mem0.GCCycles
		mem1.Batches -= mem0.Batches
	}
	stopProgress()

	// Phase 3: stop the fleet, wait for the subscriber and storage to drain.
	fleet.end()
	end := st.Summary()
	drainBy := time.Now().Add(60 * time.Second)
	for o.Subscriber && received() < end.Published && time.Now().Before(drainBy) {
		time.Sleep(100 * time.Millisecond)
	}
	r := &Result{
		Target: o.Target, Devices: o.Devices, PeriodS: o.Period.Seconds(), QoS: o.QoS,
		Connected: end.Connected, AllConnectedS: sum.AllConnectedS, SteadyS: t1.Sub(t0).Seconds(),
		Published: end.Published, SteadyRate: float64(pub1-pub0) / t1.Sub(t0).Seconds(),
		Expected: float64(o.Devices) / o.Period.Seconds(), PubErrors: end.Errors, ConnectErrs: end.ConnectErrors,
		AckLatency: end.AckLatency,
	}
	if o.Subscriber {
		rep, err := subscriber.stop()
		if err != nil {
			return nil, err
		}
		r.Subscriber, r.Received, r.SubLost, r.SubLatency = true, rep.Received, rep.Loss.Lost, rep.Latency
	}
	r.BrokerCPUPct = 100 * (cpu1 - cpu0) / t1.Sub(t0).Seconds()
	r.BrokerRSSMB, _ = peakRSSMB(t.pid())
	r.Runtime = mem1
	if r.SubLost > 0 || mem1 != nil && mem1.SubscriberDropped > 0 {
		showLog(o.Progress, filepath.Join(dir, "vigil.log"), "level=WARN", 8)
	}
	if r.Connected > 0 {
		r.KBPerDevice = r.BrokerRSSMB * 1024 / float64(r.Connected)
	}
	if pub1 > pub0 {
		r.USPerReading = 1e6 * (cpu1 - cpu0) / float64(pub1-pub0)
	}
	for {
		n, p50, p99, ok, err := t.stored(ctx)
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		r.Stored, r.StoreP50ms, r.StoreP99ms = n, p50*1000, p99*1000
		r.StoreMissing = max(end.Published-n, 0)
		if n >= end.Published || time.Now().After(drainBy) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	return r, nil
}

// showLog copies the first n lines of a log that mention what to w: why a
// run lost messages, say.
func showLog(w io.Writer, path, what string, n int) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	for line := range strings.Lines(string(b)) {
		if n == 0 {
			return
		}
		if strings.Contains(line, what) {
			fmt.Fprintf(w, "  log: %s", line)
			n--
		}
	}
}

// benchFleet is the benchmarks' fleet: temperature sensors on one broker,
// running until end.
type benchFleet struct {
	st      *sim.Stats
	devices int
	stop    context.CancelFunc
	done    chan struct{}
}

func startFleet(ctx context.Context, url string, devices int, period time.Duration, qos int, log *slog.Logger) (*benchFleet, error) {
	sc := sim.NewScenario()
	sc.Brokers = []string{url}
	sc.QoS = qos
	sc.ConnectRate = 1000
	sc.KeepAlive = 60 * time.Second
	sc.Fleets = []sim.Fleet{{Name: "bench", Site: "bench", Type: sim.TypeTemperature, Count: devices, Period: period}}
	sc.ApplyDefaults()
	s, err := sim.New(sc, log)
	if err != nil {
		return nil, err
	}
	runCtx, stop := context.WithCancel(ctx)
	f := &benchFleet{st: s.Stats(), devices: devices, stop: stop, done: make(chan struct{})}
	go func() { defer close(f.done); s.Run(runCtx) }()
	return f, nil
}

// connected waits until every device connected once (2 minutes at most,
// plus the ramp).
func (f *benchFleet) connected(ctx context.Context) error {
	by := time.Now().Add(2*time.Minute + time.Duration(f.devices)*time.Second/1000)
	for f.st.EverConnected.Load() < int64(f.devices) {
		if time.Now().After(by) {
			return fmt.Errorf("only %d of %d devices connected", f.st.EverConnected.Load(), f.devices)
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// end stops the fleet (its devices disconnect) and waits for it.
func (f *benchFleet) end() {
	f.stop()
	<-f.done
}

// cpuSeconds returns the user+system CPU time of a process.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	// Fields after the command (which may hold spaces) start after ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100, nil // USER_HZ is 100 on Linux
}

// peakRSSMB returns a process's peak resident memory (VmHWM) in MB.
func peakRSSMB(pid int) (float64, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb / 1024, nil
		}
	}
	return 0, errors.New("no VmHWM")
}

// waitPort waits until something accepts on addr, or the process exits.
func waitPort(ctx context.Context, check func() error, done <-chan struct{}) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-done:
			return errors.New("the broker process exited")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after 30s: %w", err)
		}
	}
}

// startProcess starts cmd with its output in a log file in dir.
func startProcess(cmd *exec.Cmd, dir, name string) (<-chan struct{}, error) {
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	// A child starts with the soft file limit this process started with
	// (often 1024); 10,000 clients need more.
	var lim unix.Rlimit
	if unix.Prlimit(cmd.Process.Pid, unix.RLIMIT_NOFILE, nil, &lim) == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		unix.Prlimit(cmd.Process.Pid, unix.RLIMIT_NOFILE, &lim, nil)
	}
	return done, nil
}

// stopProcess sends SIGINT and waits up to 30s, then kills.
func stopProcess(cmd *exec.Cmd, done <-chan struct{}) error {
	cmd.Process.Signal(os.Interrupt)
	select {
	case <-done:
		return nil
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		return errors.New("did not stop within 30s; killed")
	}
}

// startProfiles starts CPU profiles for the steady phase when asked for.
func startProfiles(ctx context.Context, o Options, t target) (stop func()) {
	if o.ProfileDir == "" {
		return func() {}
	}
	if err := os.MkdirAll(o.ProfileDir, 0o755); err != nil {
		o.Log.Error("profile directory", "error", err)
	}
	f, err := os.Create(filepath.Join(o.ProfileDir, o.Target+"-fleet.cpu.pprof"))
	if err == nil {
		pprof.StartCPUProfile(f)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if p, ok := t.(interface {
			profile(ctx context.Context, d time.Duration, path string) error
		}); ok {
			if err := p.profile(ctx, o.Duration-time.Second, filepath.Join(o.ProfileDir, o.Target+"-broker.cpu.pprof")); err != nil {
				o.Log.Error("broker profile", "error", err)
			}
		}
	}()
	return func() {
		pprof.StopCPUProfile()
		if f != nil {
			f.Close()
		}
		<-done
		if p, ok := t.(interface {
			heapProfile(ctx context.Context, path string) error
		}); ok {
			if err := p.heapProfile(ctx, filepath.Join(o.ProfileDir, o.Target+"-broker.heap.pprof")); err != nil {
				o.Log.Error("broker heap profile", "error", err)
			}
		}
	}
}
