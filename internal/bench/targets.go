package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/vigilhq/vigil/internal/broker"
	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/users"
)

// freeAddr returns a free loopback TCP address.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func dialCheck(addr string) func() error {
	return func() error {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	}
}

// vigilTarget is `vigil up` as a child process.
type vigilTarget struct {
	cmd           *exec.Cmd
	done          <-chan struct{}
	mqtt, http    string
	adminPassword string
}

// startVigil starts `vigil up` in dir on free loopback ports, with extra
// VIGIL_* settings in env.
func startVigil(ctx context.Context, bin, dir string, env ...string) (*vigilTarget, error) {
	if bin == "" {
		var err error
		if bin, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	mqttAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	httpAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	t := &vigilTarget{mqtt: mqttAddr, http: httpAddr, adminPassword: users.RandomPassword()}
	t.cmd = exec.Command(bin, "up", "--data-dir", filepath.Join(dir, "data"), "--mqtt-listen", mqttAddr, "--http-listen", httpAddr, "--log-level", "warn")
	t.cmd.Env = append(append(os.Environ(), "VIGIL_ADMIN_PASSWORD="+t.adminPassword, "VIGIL_MQTT_WS_LISTEN="), env...)
	if t.done, err = startProcess(t.cmd, dir, "vigil"); err != nil {
		return nil, err
	}
	ready := dialCheck(mqttAddr)
	if slices.Contains(env, "VIGIL_MQTT_MODE="+conf.MQTTExternal) {
		ready = dialCheck(httpAddr) // no broker of its own
	}
	if err := waitPort(ctx, ready, t.done); err != nil {
		t.close()
		return nil, fmt.Errorf("vigil up: %w (log in %s)", err, filepath.Join(dir, "vigil.log"))
	}
	return t, nil
}

func (t *vigilTarget) url() string  { return "mqtt://" + t.mqtt }
func (t *vigilTarget) pid() int     { return t.cmd.Process.Pid }
func (t *vigilTarget) close() error { return stopProcess(t.cmd, t.done) }

func (t *vigilTarget) stored(ctx context.Context) (int64, float64, float64, bool, error) {
	mfs, err := scrape(ctx, t.http, t.adminPassword)
	if err != nil {
		return 0, 0, 0, true, fmt.Errorf("metrics: %w", err)
	}
	var n int64
	if mf := mfs["vigil_telemetry_stored_total"]; mf != nil {
		n = int64(mf.GetMetric()[0].GetCounter().GetValue())
	}
	var p50, p99 float64
	if h := histogram(mfs, "vigil_telemetry_latency_seconds"); h != nil {
		p50, p99 = histogramQuantile(0.5, h), histogramQuantile(0.99, h)
	}
	return n, p50, p99, true, nil
}

// profile saves a CPU profile of the Vigil process.
func (t *vigilTarget) profile(ctx context.Context, d time.Duration, path string) error {
	return t.save(ctx, fmt.Sprintf("/debug/pprof/profile?seconds=%d", int(d.Seconds())), path)
}

// heapProfile saves a heap profile of the Vigil process, after a GC.
func (t *vigilTarget) heapProfile(ctx context.Context, path string) error {
	return t.save(ctx, "/debug/pprof/heap?gc=1", path)
}

// runtime reads Vigil's memory from its Go runtime's metrics.
func (t *vigilTarget) runtime(ctx context.Context) (*Internals, error) {
	mfs, err := scrape(ctx, t.http, t.adminPassword)
	if err != nil {
		return nil, err
	}
	v := func(name string) float64 { // summed over its labels
		var sum float64
		for _, m := range mfs[name].GetMetric() {
			switch {
			case m.GetHistogram() != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetSummary() != nil:
				sum += float64(m.GetSummary().GetSampleCount())
			}
		}
		return sum
	}
	const mb = 1 << 20
	return &Internals{
		HeapInuseMB:  v("go_memstats_heap_inuse_bytes") / mb,
		StackInuseMB: v("go_memstats_stack_inuse_bytes") / mb,
		OtherMB: (v("go_memstats_gc_sys_bytes") + v("go_memstats_mspan_sys_bytes") + v("go_memstats_mcache_sys_bytes") +
			v("go_memstats_buck_hash_sys_bytes") + v("go_memstats_other_sys_bytes")) / mb,
		Goroutines:        int(v("go_goroutines")),
		GCCycles:          v("go_gc_duration_seconds"),
		PublisherWaits:    v("vigil_mqtt_publisher_waits_total"),
		SubscriberDropped: v("vigil_mqtt_subscriber_dropped_total"),
		Batches:           v("vigil_telemetry_batch_seconds"),
	}, nil
}

// save saves what Vigil's HTTP server answers at path (an admin's).
func (t *vigilTarget) save(ctx context.Context, urlPath, path string) error {
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+t.http+urlPath, nil)
	req.SetBasicAuth("admin", t.adminPassword)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", urlPath, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(f, resp.Body)
	return err
}

// histogramQuantile estimates a quantile from cumulative buckets by linear
// interpolation, as Prometheus's histogram_quantile does.
func histogramQuantile(q float64, h *dto.Histogram) float64 {
	bs := h.GetBucket()
	sort.Slice(bs, func(i, j int) bool { return bs[i].GetUpperBound() < bs[j].GetUpperBound() })
	total := float64(h.GetSampleCount())
	if total == 0 {
		return math.NaN()
	}
	rank := q * total
	prevBound, prevCount := 0.0, 0.0
	for _, b := range bs {
		c := float64(b.GetCumulativeCount())
		if c >= rank {
			if c == prevCount {
				return b.GetUpperBound()
			}
			return prevBound + (b.GetUpperBound()-prevBound)*(rank-prevCount)/(c-prevCount)
		}
		prevBound, prevCount = b.GetUpperBound(), c
	}
	return prevBound
}

// mosquittoTarget is Debian's Mosquitto as a child process.
type mosquittoTarget struct {
	cmd  *exec.Cmd
	done <-chan struct{}
	addr string
}

func startMosquitto(ctx context.Context, dir string) (*mosquittoTarget, error) {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		return nil, fmt.Errorf("mosquitto is not installed (apt-get install mosquitto)")
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	// The limits of Vigil's defaults: anonymous on loopback, the same queue
	// of messages waiting for a client (mqtt.max_queued_messages) beyond
	// mochi's window of unacknowledged ones, no persistence on the hot
	// path.
	limits := conf.New().MQTT
	cfg := fmt.Sprintf("listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages %d\nmax_inflight_messages %d\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\n",
		port, limits.MaxQueuedMessages, broker.MaxInflight)
	confPath := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(confPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	t := &mosquittoTarget{addr: addr}
	t.cmd = exec.Command(bin, "-c", confPath)
	if t.done, err = startProcess(t.cmd, dir, "mosquitto"); err != nil {
		return nil, err
	}
	if err := waitPort(ctx, dialCheck(addr), t.done); err != nil {
		t.close()
		return nil, fmt.Errorf("mosquitto: %w", err)
	}
	return t, nil
}

func (t *mosquittoTarget) url() string  { return "mqtt://" + t.addr }
func (t *mosquittoTarget) pid() int     { return t.cmd.Process.Pid }
func (t *mosquittoTarget) close() error { return stopProcess(t.cmd, t.done) }
func (t *mosquittoTarget) stored(context.Context) (int64, float64, float64, bool, error) {
	return 0, 0, 0, false, nil
}
func (t *mosquittoTarget) runtime(context.Context) (*Internals, error) { return nil, nil }
