package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/measure"
	"github.com/vigilhq/vigil/internal/pgtemp"
)

// ClusterOptions configure `vigil bench --target cluster`: the same fleet
// against one external Mosquitto, stored by 1, then 3 (Nodes) `vigil up`
// nodes on one PostgreSQL, to know what a node costs and brings.
type ClusterOptions struct {
	Nodes    []int // node counts to run, in order
	Devices  int
	Period   time.Duration
	Duration time.Duration // of the steady phase
	QoS      int
	Vigil    string // the vigil binary; default this executable
	// Database, if set, is a PostgreSQL server URL (its user may create
	// databases); otherwise the bench starts one (Debian's postgresql,
	// durable: fsync on).
	Database string
	Progress io.Writer
	Log      *slog.Logger
}

// ClusterResult is one node count's run.
type ClusterResult struct {
	Nodes      int       `json:"nodes"`
	Devices    int       `json:"devices"`
	Offered    float64   `json:"offered_per_s"`  // readings the fleet got acknowledged, per second, steady phase
	StoredRate float64   `json:"stored_per_s"`   // readings the nodes stored, per second, steady phase
	Share      []float64 `json:"share"`          // of the steady phase's stored readings, per node
	NodeCPUPct []float64 `json:"node_cpu_pct"`   // of one core, per node, steady phase
	BrokerCPU  float64   `json:"broker_cpu_pct"` // Mosquitto, of one core
	Published  int64     `json:"published"`      // acknowledged to the fleet, whole run
	Stored     int64     `json:"stored"`         // rows in the readings table at the end
	Distinct   int64     `json:"distinct"`       // distinct (device, seq) among them
	AckP99ms   float64   `json:"ack_latency_p99_ms"`
}

// RunCluster runs the cluster benchmark.
func RunCluster(ctx context.Context, o ClusterOptions) ([]ClusterResult, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	dir, err := os.MkdirTemp("", "vigil-bench-cluster-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	m, err := startMosquitto(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer m.close()
	server := o.Database
	if server == "" {
		pg, err := pgtemp.Start(pgtemp.Options{Durable: true})
		if err != nil {
			return nil, fmt.Errorf("PostgreSQL: %w", err)
		}
		defer pg.Close()
		server = pg.URL
	}
	var out []ClusterResult
	for _, n := range o.Nodes {
		r, err := runCluster(ctx, o, filepath.Join(dir, fmt.Sprint(n)), m, server, n)
		if err != nil {
			return out, fmt.Errorf("%d nodes: %w", n, err)
		}
		out = append(out, *r)
	}
	return out, nil
}

func runCluster(ctx context.Context, o ClusterOptions, dir string, m *mosquittoTarget, server string, n int) (*ClusterResult, error) {
	db, err := (&pgtemp.Server{URL: server}).NewDatabase(ctx, fmt.Sprintf("bench_%d_nodes", n))
	if err != nil {
		return nil, err
	}
	var nodes []*vigilTarget
	defer func() {
		for _, t := range nodes {
			t.close()
		}
	}()
	for i := range n {
		node := filepath.Join(dir, fmt.Sprintf("node%d", i+1))
		if err := os.MkdirAll(node, 0o700); err != nil {
			return nil, err
		}
		// A share group per run: Mosquitto keeps the sessions of an
		// earlier run's nodes, and would give them a share.
		t, err := startVigil(ctx, o.Vigil, node,
			"VIGIL_MQTT_MODE="+conf.MQTTExternal, "VIGIL_MQTT_URLS="+m.url(), fmt.Sprintf("VIGIL_MQTT_SHARE_GROUP=bench%d", n),
			"VIGIL_DATABASE_URL="+db, "VIGIL_AUDIT_ON_START=false")
		if err != nil {
			return nil, err
		}
		if i > 0 { // the first node made the admin user, in the shared database
			t.adminPassword = nodes[0].adminPassword
		}
		nodes = append(nodes, t)
	}
	fmt.Fprintf(o.Progress, "cluster: %d node(s) on Mosquitto %s and one PostgreSQL; %d devices every %v, QoS %d\n", n, m.url(), o.Devices, o.Period, o.QoS)

	fleet, err := startFleet(ctx, m.url(), o.Devices, o.Period, o.QoS, o.Log)
	if err != nil {
		return nil, err
	}
	defer fleet.end()
	st := fleet.st

	// storedBy is what each node stored (0 for one that does not answer).
	storedBy := func() []int64 {
		out := make([]int64, len(nodes))
		for i, t := range nodes {
			out[i], _, _, _, _ = t.stored(ctx)
		}
		return out
	}
	sum := func(v []int64) (s int64) {
		for _, x := range v {
			s += x
		}
		return s
	}
	progressCtx, stopProgress := context.WithCancel(ctx)
	defer stopProgress()
	var prevPub, prevStored int64
	prevAt := time.Now()
	go measure.Progress(progressCtx, o.Progress, 2*time.Second, func() string {
		now := time.Now()
		pub := st.Published.Load()
		stored := sum(storedBy())
		secs := now.Sub(prevAt).Seconds()
		line := fmt.Sprintf("  connected %d/%d  acknowledged %.0f/s  stored %.0f/s  errors %d",
			st.Connected.Load(), o.Devices, float64(pub-prevPub)/secs, float64(stored-prevStored)/secs, st.Errors.Load()+st.ConnectErrors.Load())
		prevPub, prevStored, prevAt = pub, stored, now
		return line
	})
	if err := fleet.connected(ctx); err != nil {
		return nil, err
	}
	if err := sleepCtx(ctx, o.Period+time.Second); err != nil {
		return nil, err
	}

	// The steady phase.
	cpu := func() []float64 {
		out := []float64{}
		for _, t := range nodes {
			c, _ := cpuSeconds(t.pid())
			out = append(out, c)
		}
		c, _ := cpuSeconds(m.pid())
		return append(out, c)
	}
	cpu0, stored0, pub0, t0 := cpu(), storedBy(), st.Published.Load(), time.Now()
	st.Ack.Reset()
	if err := sleepCtx(ctx, o.Duration); err != nil {
		return nil, err
	}
	cpu1, stored1, pub1, t1 := cpu(), storedBy(), st.Published.Load(), time.Now()
	stopProgress()
	secs := t1.Sub(t0).Seconds()
	r := &ClusterResult{Nodes: n, Devices: o.Devices, Offered: float64(pub1-pub0) / secs, StoredRate: float64(sum(stored1)-sum(stored0)) / secs}
	for i := range nodes {
		r.NodeCPUPct = append(r.NodeCPUPct, 100*(cpu1[i]-cpu0[i])/secs)
		r.Share = append(r.Share, float64(stored1[i]-stored0[i])/float64(max(sum(stored1)-sum(stored0), 1)))
	}
	r.BrokerCPU = 100 * (cpu1[n] - cpu0[n]) / secs

	// Stop the fleet and let the nodes store the rest; then count the
	// rows: every acknowledged reading, each once.
	fleet.end()
	end := st.Summary()
	r.Published, r.AckP99ms = end.Published, end.AckLatency.P99ms
	c, err := pgx.Connect(ctx, db)
	if err != nil {
		return nil, err
	}
	defer c.Close(context.Background())
	drainBy := time.Now().Add(60 * time.Second)
	for {
		if err := c.QueryRow(ctx, "SELECT count(*), count(DISTINCT (device, seq)) FROM readings").Scan(&r.Stored, &r.Distinct); err != nil {
			return nil, err
		}
		if r.Stored >= r.Published || time.Now().After(drainBy) {
			break
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return nil, err
		}
	}
	shares := make([]string, len(r.Share))
	for i, s := range r.Share {
		shares[i] = fmt.Sprintf("%.0f%%", 100*s)
	}
	fmt.Fprintf(o.Progress, "  %d node(s): stored %.0f/s of %.0f/s acknowledged, split %s\n", n, r.StoredRate, r.Offered, strings.Join(shares, "/"))
	return r, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
