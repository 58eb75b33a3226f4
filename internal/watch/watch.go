// Package watch keeps an availability record of MQTT brokers: it probes
// each one periodically (connect, a publish/subscribe round trip, $SYS
// load), tracks outages and latency breaches, and reports them as events,
// Prometheus metrics and a status per broker. `vigil watch` runs it from
// the command line; `vigil up` runs it for configured brokers.
package watch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/internal/mqttconn"
)

// Target is a broker to watch.
type Target struct {
	Name     string `json:"name"` // shown in reports; default the URL
	URL      string `json:"url"`  // mqtt://, mqtts://, ws://, wss:// (a bare host:port is mqtt://)
	Username string `json:"username,omitempty"`
	Password string `json:"-"`
	CAFile   string `json:"ca_file,omitempty"` // PEM certificates that verify a TLS broker
	Insecure bool   `json:"insecure,omitempty"`
}

// Config is what to watch and how often.
type Config struct {
	Targets  []Target
	Interval time.Duration // between probes of a target (default 30s)
	Timeout  time.Duration // per probe, everything included (default 5s)
	Latency  time.Duration // a round trip slower than this is a latency breach (0: off)
	Window   time.Duration // how far back uptime percentages look (default 24h)
}

// Defaults of Config.
const (
	DefaultInterval = 30 * time.Second
	DefaultTimeout  = 5 * time.Second
	DefaultWindow   = 24 * time.Hour
)

// Probe is the result of one probe of a target.
type Probe struct {
	Target string    `json:"target"`
	At     time.Time `json:"at"` // when the probe started
	OK     bool      `json:"ok"`
	Error  string    `json:"error,omitempty"`
	// ConnectMS is CONNECT to CONNACK; RoundTripMS is a QoS 1 PUBLISH on a
	// fresh topic (vigil-watch/<random>) to the probe receiving it back.
	ConnectMS   float64 `json:"connect_ms,omitempty"`
	RoundTripMS float64 `json:"round_trip_ms,omitempty"`
	// Sys holds the broker's $SYS load values the probe could read (full
	// topic to payload): clients connected, messages received and sent
	// (totals, and per minute on Mosquitto). Empty when $SYS is not
	// readable.
	Sys map[string]string `json:"sys,omitempty"`
}

// Outage is a time a target was down: from its first failed probe to its
// next successful one.
type Outage struct {
	Target string     `json:"target"`
	Start  time.Time  `json:"start"`
	End    *time.Time `json:"end,omitempty"` // nil while it lasts
	Reason string     `json:"reason"`        // the first failed probe's error
}

// Status is what the watcher knows about a target.
type Status struct {
	Target string `json:"target"`
	URL    string `json:"url"`
	// Up is the last probe's result (false before the first probe).
	Up bool `json:"up"`
	// Since is when the target last went up or down.
	Since time.Time `json:"since"`
	// UptimePercent is the share of the time watched within the window
	// that the target was up (0 before the first probe).
	UptimePercent float64 `json:"uptime_percent"`
	// Probes counts the probes within the window.
	Probes    int    `json:"probes"`
	LastProbe *Probe `json:"last_probe,omitempty"`
	// Round-trip percentiles of the successful probes within the window.
	LatencyP50MS float64 `json:"latency_p50_ms"`
	LatencyP99MS float64 `json:"latency_p99_ms"`
	// Outages within the window, oldest first; the last may be open.
	Outages       []Outage `json:"outages"`
	LatencyBreach bool     `json:"latency_breach"`
}

// Event kinds.
const (
	EventOutage    = "outage"     // a target went down
	EventRecovered = "recovered"  // a target is up again
	EventLatency   = "latency"    // round trips above Config.Latency on 2 probes in a row
	EventLatencyOK = "latency_ok" // round trips back under it on 2 probes in a row
)

// Event is a change worth telling someone about.
type Event struct {
	Kind   string    `json:"kind"`
	Target string    `json:"target"`
	At     time.Time `json:"at"` // the probe's that caused it
	// Detail is, for an outage, the failed probe's error; for the others a
	// sentence ("up again after 1m30s (down since ...)").
	Detail string `json:"detail"`
}

// Store persists probes and outages; the watcher works without one.
type Store interface {
	SaveProbe(ctx context.Context, p Probe) error
	// ListProbes returns the target's probes at or after since, oldest
	// first, at most limit.
	ListProbes(ctx context.Context, target string, since time.Time, limit int) ([]Probe, error)
	// DeleteProbesBefore forgets probes older than cutoff.
	DeleteProbesBefore(ctx context.Context, cutoff time.Time) error
	// SaveOutage inserts an outage, or updates it (End set on recovery);
	// an outage is identified by its Target and Start.
	SaveOutage(ctx context.Context, o *Outage) error
	// ListOutages returns the target's outages that started or were still
	// open at or after since.
	ListOutages(ctx context.Context, target string, since time.Time) ([]Outage, error)
}

// Errors of the Watcher.
var (
	ErrUnknownTarget = errors.New("unknown target")
	ErrClosed        = errors.New("watcher closed")
)

// Watcher probes targets on a schedule and keeps their record.
type Watcher struct {
	cfg     Config
	store   Store
	notify  func(Event)
	log     *slog.Logger
	metrics *metrics
	targets []*target

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	startOnce sync.Once
	closeOnce sync.Once

	pruneMu   sync.Mutex
	lastPrune time.Time // when stored probes older than the window were last deleted
}

// target is a Target with its record.
type target struct {
	Target
	url *url.URL
	tls *tls.Config

	probeMu sync.Mutex // one probe of the target at a time
	mu      sync.Mutex
	rec     record
}

// New checks the configuration and returns a watcher that has not started
// probing. With a store, the record picks up where the previous run left
// it: probes within the window count towards uptime and latency again, and
// an outage still open (the previous run ended during one) is continued
// rather than reported again. notify receives
// every event on the probing goroutine and must return quickly; it may be
// nil. reg may be nil (no metrics).
func New(cfg Config, store Store, notify func(Event), log *slog.Logger, reg prometheus.Registerer) (*Watcher, error) {
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Window == 0 {
		cfg.Window = DefaultWindow
	}
	switch {
	case len(cfg.Targets) == 0:
		return nil, errors.New("watch: no target")
	case cfg.Interval < 0 || cfg.Timeout < 0 || cfg.Window < 0 || cfg.Latency < 0:
		return nil, errors.New("watch: interval, timeout, latency and window must not be negative")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if notify == nil {
		notify = func(Event) {}
	}
	w := &Watcher{cfg: cfg, store: store, notify: notify, log: log}
	seen := map[string]bool{}
	for _, t := range cfg.Targets {
		u, err := mqttconn.ParseBrokerURL(t.URL)
		if err != nil {
			return nil, fmt.Errorf("watch: %w", err)
		}
		if t.Name == "" {
			t.Name = t.URL
		}
		if seen[t.Name] {
			return nil, fmt.Errorf("watch: target %q is given twice", t.Name)
		}
		seen[t.Name] = true
		tlsCfg, err := mqttconn.TLSConfig(mqttconn.TLS{CA: t.CAFile, Insecure: t.Insecure})
		if err != nil {
			return nil, fmt.Errorf("watch: target %q: %w", t.Name, err)
		}
		w.targets = append(w.targets, &target{Target: t, url: u, tls: tlsCfg})
	}
	var err error
	if w.metrics, err = newMetrics(reg); err != nil {
		return nil, fmt.Errorf("watch: metrics: %w", err)
	}
	for _, t := range w.targets {
		w.metrics.init(t.Name)
	}
	if store != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		since := time.Now().Add(-cfg.Window)
		for _, t := range w.targets {
			probes, err := store.ListProbes(ctx, t.Name, since, maxSamples)
			if err != nil {
				return nil, fmt.Errorf("watch: load probes of %q: %w", t.Name, err)
			}
			outages, err := store.ListOutages(ctx, t.Name, since)
			if err != nil {
				return nil, fmt.Errorf("watch: load outages of %q: %w", t.Name, err)
			}
			t.rec.load(probes, outages)
		}
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	return w, nil
}

// Start probes every target at once, then every Interval, each on its own
// goroutine, until Close.
func (w *Watcher) Start() {
	w.startOnce.Do(func() {
		if w.ctx.Err() != nil {
			return
		}
		for _, t := range w.targets {
			w.wg.Add(1)
			go w.loop(t)
		}
	})
}

func (w *Watcher) loop(t *target) {
	defer w.wg.Done()
	tick := time.NewTicker(w.cfg.Interval)
	defer tick.Stop()
	for {
		w.run(w.ctx, t)
		select {
		case <-w.ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Close stops probing and waits for probes under way to end (each is
// bounded by Timeout; Close cuts them short).
func (w *Watcher) Close() error {
	w.closeOnce.Do(func() {
		w.cancel()
		w.wg.Wait()
	})
	return nil
}

// ProbeNow probes a target outside the schedule and records the result
// like a scheduled probe (it waits for a probe of the target under way).
// A failed probe is a Probe with OK false, not an error; errors are
// ErrUnknownTarget, ErrClosed and ctx's.
func (w *Watcher) ProbeNow(ctx context.Context, name string) (Probe, error) {
	for _, t := range w.targets {
		if t.Name == name {
			if w.ctx.Err() != nil {
				return Probe{}, ErrClosed
			}
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			stop := context.AfterFunc(w.ctx, cancel)
			defer stop()
			p, ok := w.run(ctx, t)
			switch {
			case ok:
				return p, nil
			case w.ctx.Err() != nil:
				return p, ErrClosed
			default:
				return p, ctx.Err()
			}
		}
	}
	return Probe{}, fmt.Errorf("%w %q", ErrUnknownTarget, name)
}

// Status returns every target's status, in the configured order.
func (w *Watcher) Status() []Status {
	now := time.Now()
	out := make([]Status, 0, len(w.targets))
	for _, t := range w.targets {
		t.mu.Lock()
		s := t.rec.status(now, w.cfg.Window)
		t.mu.Unlock()
		s.Target, s.URL = t.Name, t.URL
		out = append(out, s)
	}
	return out
}

// run probes t once and records the result. A probe that failed because
// ctx ended (Close, or the caller of ProbeNow gave up) says nothing about
// the broker: it is dropped and run returns false.
func (w *Watcher) run(ctx context.Context, t *target) (Probe, bool) {
	t.probeMu.Lock()
	defer t.probeMu.Unlock()
	p := w.probe(ctx, t)
	if !p.OK && ctx.Err() != nil {
		return p, false
	}
	t.mu.Lock()
	ch := t.rec.add(p, w.cfg)
	t.mu.Unlock()

	w.metrics.observe(p, ch.outageStarted)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.Timeout)
	defer cancel()
	if w.store != nil {
		if err := w.store.SaveProbe(sctx, p); err != nil {
			w.log.Warn("could not save a probe", "target", t.Name, "error", err)
		}
		w.pruneStore(sctx, p.At)
		if ch.outage != nil {
			if err := w.store.SaveOutage(sctx, ch.outage); err != nil {
				w.log.Warn("could not save an outage", "target", t.Name, "error", err)
			}
		}
	}
	for _, e := range ch.events {
		switch e.Kind {
		case EventOutage:
			w.log.Warn("broker down", "target", t.Name, "url", t.URL, "reason", p.Error)
		case EventRecovered:
			w.log.Info("broker up again", "target", t.Name, "url", t.URL, "detail", e.Detail)
		case EventLatency:
			w.log.Warn("broker slow", "target", t.Name, "url", t.URL, "detail", e.Detail)
		case EventLatencyOK:
			w.log.Info("broker latency back to normal", "target", t.Name, "url", t.URL, "detail", e.Detail)
		}
		w.notify(e)
	}
	return p, true
}

// pruneStore deletes stored probes older than the window, at most once an
// hour: the record only ever reads that far back.
func (w *Watcher) pruneStore(ctx context.Context, now time.Time) {
	w.pruneMu.Lock()
	due := now.Sub(w.lastPrune) >= time.Hour
	if due {
		w.lastPrune = now
	}
	w.pruneMu.Unlock()
	if due {
		if err := w.store.DeleteProbesBefore(ctx, now.Add(-w.cfg.Window)); err != nil {
			w.log.Warn("could not delete old probes", "error", err)
		}
	}
}
