package main

import (
	"context"
	"flag"
	"fmt"
	"strings"

	"github.com/vigilhq/vigil/internal/app"
	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/version"
)

type upFlags struct {
	config, dataDir, mqttListen, httpListen, logLevel string
	demo                                              bool
}

var upCommand = &command{
	name:    "up",
	summary: "run Vigil: MQTT broker, telemetry pipeline, database, detection, web UI and API",
	usage:   "up [flags]",
	help: `
Starts everything in one process on embedded defaults: the MQTT broker (TCP
127.0.0.1:1883, WebSocket 127.0.0.1:9001, TLS when configured), the SQLite
database in --data-dir, the telemetry pipeline, intrusion detection with its
ingest agents, notifications, and on 127.0.0.1:8080 the web UI (log in as
admin), the HTTP API (/api/v1, described at /api/v1/openapi.json), /healthz
and /metrics.

On first start it creates the user "admin" and prints its password once
(also written to <data-dir>/initial-admin-password), unless
VIGIL_ADMIN_PASSWORD is set. While every MQTT listener is on loopback,
anonymous MQTT clients are allowed; a listener on any other address requires
a username and password (see 'vigil user').

Configuration: defaults, then --config FILE (or VIGIL_CONFIG), then
VIGIL_<SECTION>_<KEY> environment variables, then these flags. vigil.yaml in
the source tree documents every key. Port 0 picks a free port; the chosen
address is logged.

What survives: a QoS 1 or 2 reading is acknowledged (PUBACK) only once it
is committed to the database, so a crash of vigil up (kill -9) loses
nothing acknowledged; messages queued for an offline persistent MQTT
session, and clips being recorded (kept, marked interrupted), survive it
too. A power loss can take back what was committed since SQLite's last
checkpoint (synchronous=NORMAL: no fsync per commit). Intrusion detection
never waits for the database. Ctrl-C (SIGINT) or SIGTERM stops gracefully:
the broker stops taking readings first (clients sending one are
disconnected unacknowledged and send it again later), then queued readings
are stored before exit.

It runs with the Go runtime setting GODEBUG=gcshrinkstackoff=1 (it starts
itself again with it, in the same process): with thousands of devices it
costs less memory and CPU than the GC shrinking their stacks. A GODEBUG
that sets gcshrinkstackoff is left as it is.`,
	examples: `  vigil up --demo
  vigil up --config /etc/vigil/vigil.yaml
  vigil up --data-dir /var/lib/vigil --mqtt-listen 0.0.0.0:1883 --http-listen 0.0.0.0:8080
  VIGIL_ADMIN_PASSWORD=s3cret-pass vigil up --mqtt-listen 127.0.0.1:0 --http-listen 127.0.0.1:0
  # on your Mosquitto and PostgreSQL instead of the embedded broker and SQLite (docs/ha.md):
  VIGIL_MQTT_MODE=external VIGIL_MQTT_URLS=mqtt://broker.lan:1883 VIGIL_MQTT_USERNAME=vigil \
    VIGIL_MQTT_PASSWORD_FILE=/etc/vigil/mqtt-password VIGIL_DATABASE_URL=postgres://vigil@db.lan/vigil vigil up`,
	flags: func(fs *flag.FlagSet) any {
		f := &upFlags{}
		fs.StringVar(&f.config, "config", "", "config file (YAML); default $VIGIL_CONFIG")
		fs.StringVar(&f.dataDir, "data-dir", "", "data directory (data.dir; default ./vigil-data)")
		fs.StringVar(&f.mqttListen, "mqtt-listen", "", "MQTT TCP listen address (mqtt.listen; default 127.0.0.1:1883)")
		fs.StringVar(&f.httpListen, "http-listen", "", "HTTP listen address (http.listen; default 127.0.0.1:8080)")
		fs.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error (log.level)")
		fs.BoolVar(&f.demo, "demo", false, "also run a built-in demo fleet (demo.enabled)")
		return f
	},
	run: runUp,
}

// loadConfig loads the configuration for commands that use it and applies
// the flags that were given.
func loadConfig(e *env, path string) (*conf.Config, error) {
	if path == "" {
		path = e.getenv("VIGIL_CONFIG")
	}
	return conf.Load(path, e.environ)
}

func runUp(ctx context.Context, e *env, o any, args []string) error {
	f := o.(*upFlags)
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	cfg, err := loadConfig(e, f.config)
	if err != nil {
		return err
	}
	if e.set("data-dir") {
		cfg.Data.Dir = f.dataDir
	}
	if e.set("mqtt-listen") {
		cfg.MQTT.Listen = f.mqttListen
	}
	if e.set("http-listen") {
		cfg.HTTP.Listen = f.httpListen
	}
	if e.set("log-level") {
		cfg.Log.Level = f.logLevel
	}
	if e.set("demo") {
		cfg.Demo.Enabled = f.demo
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	log := newLogger(e.err, cfg.Log.Level, cfg.Log.Format)
	log.Info("vigil starting", "version", version.Version, "data_dir", cfg.Data.Dir)
	a, err := app.Open(ctx, cfg, app.Options{AdminPassword: e.getenv("VIGIL_ADMIN_PASSWORD"), Out: e.out}, log)
	if err != nil {
		return err
	}
	mqtt := strings.Join(cfg.MQTT.URLs, ",")
	if a.Broker != nil {
		mqtt = a.Broker.URL("tcp")
	}
	log.Info("vigil is up", "api", "http://"+a.HTTP.Addr().String()+"/api/v1", "mqtt", mqtt)
	<-ctx.Done()
	log.Info("shutting down")
	if err := a.Close(); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("stopped")
	return nil
}
