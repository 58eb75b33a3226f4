// Package app wires Vigil's components into one running system: the
// database, users, the telemetry pipeline, the embedded broker, the HTTP
// API and the demo fleet. `vigil up` runs an App; end-to-end tests start
// one in-process on :0 ports and a temporary data directory.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/agentrt"
	"github.com/vigilhq/vigil/internal/alert"
	"github.com/vigilhq/vigil/internal/broker"
	"github.com/vigilhq/vigil/internal/cluster"
	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/detect"
	"github.com/vigilhq/vigil/internal/hadisc"
	"github.com/vigilhq/vigil/internal/httpapi"
	"github.com/vigilhq/vigil/internal/hub"
	"github.com/vigilhq/vigil/internal/mqttbus"
	"github.com/vigilhq/vigil/internal/notify"
	"github.com/vigilhq/vigil/internal/selfaudit"
	"github.com/vigilhq/vigil/internal/store"
	"github.com/vigilhq/vigil/internal/telemetry"
	"github.com/vigilhq/vigil/internal/users"
	"github.com/vigilhq/vigil/internal/version"
	"github.com/vigilhq/vigil/internal/watch"
	"github.com/vigilhq/vigil/internal/web"
)

// Options are the inputs of an App besides its configuration.
type Options struct {
	// AdminPassword, if set, is the password of the admin user created on
	// first start (VIGIL_ADMIN_PASSWORD); otherwise a random one is made,
	// written to <data>/initial-admin-password and printed once to Out.
	AdminPassword string
	// Out receives the one-time admin password notice; nil: os.Stdout.
	Out io.Writer
}

// App is a running Vigil.
type App struct {
	cfg     *conf.Config
	log     *slog.Logger
	started time.Time

	Store     *store.Store
	Users     *users.Verifier
	Registry  *prometheus.Registry
	Telemetry *telemetry.Pipeline
	Broker    *broker.Server // the embedded broker; nil on an external broker
	Bus       Bus            // the broker Vigil's parts publish and subscribe on
	extBus    *mqttbus.Bus   // Bus on an external broker; nil on the embedded one
	HTTP      *httpapi.Server
	Detector  *detect.Detector
	coord     *coordinator    // this node's coordinator, or the leader's (lead.go)
	disc      *discovery      // Home Assistant discovery (discovery.go)
	Runtime   agentrt.Runtime // the agents' runtime of a single node's coordinator
	Storage   string          // clip storage root

	ownStorage bool        // the clip storage is Vigil's own (coord.PrepareStorage)
	hosting    atomic.Bool // this node takes the leader's agent commands (openHost)
	parser     telemetry.Parser
	Hub        *hub.Hub
	Sessions   *users.Sessions
	demo       *demo

	node     cluster.Node // this one, as GET /api/v1/cluster lists it
	Notifier *notify.Notifier
	Alerts   *alert.Engine
	Auditor  *selfaudit.Auditor
	Watcher  *watch.Watcher // nil when no broker is watched

	closers []func() error // in reverse order of opening
}

// Open starts every component. It binds every listener before it returns,
// so a port in use is an error here. On error, whatever started is closed.
func Open(ctx context.Context, cfg *conf.Config, opts Options, log *slog.Logger) (a *App, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Out == nil {
		opts.Out = os.Stdout
	}
	a = &App{cfg: cfg, log: log, started: time.Now()}
	opened := a // the returns below set a to nil
	defer func() {
		if err != nil {
			opened.Close()
		}
	}()

	// The database holds the VAPID private key, channel secrets and
	// sessions: the directory and Vigil's files in it are this user's
	// only, also where an earlier Vigil or the owner made them 0755/0644
	// (vigil.db and its -wal and -shm: store.Open).
	if err := privateDir(cfg.Data.Dir); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	if err := os.Chmod(filepath.Join(cfg.Data.Dir, "broker.bolt"), 0o600); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	dsn := filepath.Join(cfg.Data.Dir, "vigil.db")
	if cfg.Database.URL != "" {
		dsn = cfg.Database.URL
	}
	if a.node.ID, err = nodeID(cfg.Data.Dir); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	if a.Store, err = store.Open(ctx, dsn); err != nil {
		return nil, err
	}
	a.onClose(a.Store.Close)
	if err := a.bootstrapAdmin(ctx, opts); err != nil {
		return nil, err
	}
	a.Users = users.NewVerifier(a.Store, time.Minute, cfg.Auth.BcryptCost)
	// One budget of password tries per client address and per username,
	// whatever they come through: the API, the web UI, MQTT.
	a.Users.Limiter = &users.Limiter{Max: 5, Window: 5 * time.Minute}

	a.Registry = prometheus.NewRegistry()
	a.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "vigil_build_info", Help: "Vigil's version, as a label.", ConstLabels: prometheus.Labels{"version": version.Version},
	}, func() float64 { return 1 }))

	tz, _ := time.LoadLocation(cfg.Telemetry.LegacyTimezone) // validated
	t := cfg.Telemetry
	a.parser = telemetry.Parser{MaxPayload: t.MaxPayload, LegacySite: t.LegacySite, LegacyTZ: tz}
	if a.Telemetry, err = telemetry.New(telemetry.Config{
		Parser:        a.parser,
		QueueSize:     t.QueueSize,
		BatchSize:     t.BatchSize,
		FlushInterval: t.FlushInterval,
		Retention:     t.Retention,
		OfflineAfter:  t.OfflineAfter,
		LogInterval:   t.LogInterval,
	}, a.Store, log.With("component", "telemetry"), a.Registry); err != nil {
		return nil, err
	}
	// Closed after the broker (closers run in reverse): the broker stops
	// taking messages first, then the pipeline stores what it holds.
	a.onClose(a.Telemetry.Close)

	if err := a.openMQTT(ctx); err != nil {
		return nil, err
	}
	a.Hub = &hub.Hub{}
	a.disc = &discovery{app: a, placed: map[string]hadisc.Placement{}, started: make(chan struct{})}
	if err := a.openNotify(ctx); err != nil {
		return nil, err
	}
	if err := a.openIntrusion(ctx, log); err != nil {
		return nil, err
	}
	if err := a.openSecurity(ctx); err != nil {
		return nil, err
	}
	a.openLive()
	a.Telemetry.Observe(a.disc.observe) // Vigil's devices' states for Home Assistant
	a.Telemetry.Start()                 // once every observer is registered
	if err := a.openIngest(ctx); err != nil {
		return nil, err
	}
	if err := a.openDiscovery(ctx); err != nil {
		return nil, err
	}

	ui, err := web.New(log.With("component", "web"))
	if err != nil {
		return nil, err
	}
	if a.HTTP, err = httpapi.Open(cfg.HTTP.Listen, httpapi.Deps{
		Devices:  devicesAPI{a.Store, a},
		Auth:     a.Users,
		Health:   a.health,
		System:   a.system,
		Gatherer: a.Registry,

		Hub:      a.Hub,
		Sessions: a.Sessions,

		TrustedProxies: cfg.HTTP.ProxyNets(),

		Intrusion:   a.Store,
		Sites:       a.Detector,
		Agents:      a.coord.View,
		PlanOf:      func(site string) string { name, _ := a.planFor(site); return name },
		ClipStorage: a.Storage,
		Cameras:     a.coord,
		CameraTest:  a.testCamera,
		Plans:       a,

		Users: a.Store,
		// A user changed or removed through the API forgets its cached
		// password and loses its MQTT sessions at once.
		Forget: func(name string) {
			a.Users.Forget(name)
			if a.Broker != nil {
				a.Broker.EndSessions(name)
			}
		},
		BcryptCost: cfg.Auth.BcryptCost,

		Notifier:    a.Notifier,
		NotifyStore: a.Store,
		Alerts:      a.Alerts.List,
		Cluster:     func(ctx context.Context) ([]cluster.Node, error) { return a.Store.ListNodes(ctx, time.Now()) },
		Web:         ui.Handler(),
		Security:    securityAPI{a},
		Discovery:   a.disc,
	}, log.With("component", "http")); err != nil {
		return nil, err
	}
	a.onClose(a.HTTP.Close)
	if err := a.openNode(); err != nil {
		return nil, err
	}

	if cfg.Demo.Enabled {
		if a.demo, err = a.startDemo(log.With("component", "demo")); err != nil {
			return nil, err
		}
		a.onClose(a.demo.Close)
	}
	return a, nil
}

func (a *App) onClose(f func() error) { a.closers = append(a.closers, f) }

// privateDir makes dir, or makes an existing dir, readable by this user
// only (0700).
func privateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.Chmod(dir, 0o700)
}

// Close stops everything in reverse order: the demo fleet, the HTTP server,
// the broker (which stops taking messages, lets those being stored be
// acknowledged, then disconnects clients), then the pipeline, which stores
// all it has queued, and the database.
func (a *App) Close() error {
	var errs []error
	for i := len(a.closers) - 1; i >= 0; i-- {
		errs = append(errs, a.closers[i]())
	}
	a.closers = nil
	return errors.Join(errs...)
}

// bootstrapAdmin creates the admin user on first start.
func (a *App) bootstrapAdmin(ctx context.Context, opts Options) error {
	list, err := a.Store.ListUsers(ctx)
	if err != nil || len(list) > 0 {
		return err
	}
	password, generated := opts.AdminPassword, false
	if password == "" {
		password, generated = users.RandomPassword(), true
	}
	hash, err := users.HashPassword(password, a.cfg.Auth.BcryptCost)
	if err != nil {
		return fmt.Errorf("VIGIL_ADMIN_PASSWORD: %w", err)
	}
	pub, sub := users.DefaultACL(users.RoleAdmin)
	if err := a.Store.CreateUser(ctx, &users.User{Name: "admin", Role: users.RoleAdmin, PasswordHash: hash, Publish: pub, Subscribe: sub}); err != nil {
		return err
	}
	if !generated {
		a.log.Info("created user admin with the password from VIGIL_ADMIN_PASSWORD")
		return nil
	}
	path := filepath.Join(a.cfg.Data.Dir, "initial-admin-password")
	if err := os.WriteFile(path, []byte(password+"\n"), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// Printed, not logged: logs are kept and shipped, this must not be.
	fmt.Fprintf(opts.Out, "\nCreated user \"admin\" with password: %s\n(also in %s, readable by you only; change it with `vigil user passwd admin`)\n\n", password, path)
	return nil
}

func (a *App) health(ctx context.Context) error {
	if err := a.Store.Ping(ctx); err != nil {
		return vigil.Errorf(vigil.EUnavailable, "the database does not answer: %v", err)
	}
	if err := a.Telemetry.Health(); err != nil {
		return vigil.Errorf(vigil.EUnavailable, "%v", err)
	}
	return nil
}

func (a *App) system() httpapi.System {
	s := httpapi.System{
		Version:       version.Version,
		Started:       a.started.UTC(),
		UptimeSeconds: time.Since(a.started).Seconds(),
		MQTT:          map[string]string{},
		HTTP:          "http://" + a.HTTP.Addr().String(),
		Anonymous:     a.cfg.MQTT.Anonymous,
		Demo:          a.demo != nil,
	}
	if a.Broker == nil {
		s.Anonymous = ""
		for i, u := range a.cfg.MQTT.URLs {
			s.MQTT[fmt.Sprintf("external%d", i+1)] = u
		}
		return s
	}
	s.ClientsConnected = a.Broker.ClientsConnected()
	for _, k := range []string{broker.TCP, broker.WS, broker.TLS} {
		if u := a.Broker.URL(k); u != "" {
			s.MQTT[k] = u
		}
	}
	return s
}
