package app

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/vigilhq/vigil/internal/agentrt"
	"github.com/vigilhq/vigil/internal/alert"
	"github.com/vigilhq/vigil/internal/broker"
	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/coord"
	"github.com/vigilhq/vigil/internal/detect"
	"github.com/vigilhq/vigil/internal/hub"
	"github.com/vigilhq/vigil/internal/media"
	"github.com/vigilhq/vigil/internal/mqttconn"
)

// openIntrusion starts the detector and the coordinator with its agent
// runtime, and hooks them to the pipeline and the broker. The coordinator
// closes after the pipeline (closers run in reverse) but before the broker.
func (a *App) openIntrusion(ctx context.Context, log *slog.Logger) error {
	cfg := a.cfg
	storage := cfg.Recording.Storage
	if storage == "" {
		storage = filepath.Join(cfg.Data.Dir, "clips")
	}
	storage, err := filepath.Abs(storage)
	if err != nil {
		return err
	}
	clog := log.With("component", "coordinator")
	if a.ownStorage, err = coord.PrepareStorage(storage, cfg.Data.Dir, clog); err != nil {
		return fmt.Errorf("clip storage: %w", err)
	}
	a.Storage = storage
	a.Alerts.Add(alert.Disk{Name: "clips", Path: storage})

	a.Detector = detect.New(cfg.Detection, a.Store, log.With("component", "detect"))
	a.Detector.Mode = func(site string, armed bool) {
		mode := "disarmed"
		if armed {
			mode = "armed"
		}
		if err := a.Bus.Publish(detect.ModeTopic(site), []byte(mode), true, 1); err != nil {
			a.log.Warn("publish the site's mode", "site", site, "error", err)
		}
		if p := a.disc.pub.Load(); p != nil {
			p.Site(site, armed)
		}
		plan, _ := a.planFor(site)
		a.share(hub.Message{Event: hub.EventSite, Data: hub.Site{Name: site, Armed: armed, Plan: plan}})
	}
	if err := a.Bus.Subscribe(detect.ModeSetFilter, func(topic string, payload []byte, _ string) {
		a.Detector.ModeCommand(topic, payload)
	}); err != nil {
		return err
	}

	a.coord = &coordinator{app: a, last: emptyView}
	a.Alerts.Add(a.coord) // agents lost
	a.Detector.Out = a.coord.Detected
	if a.clustered() {
		// Only the leader coordinates: it detects, and learns of the
		// cameras, from a session of its own (lead.go).
		if err := a.relayUpdates(); err != nil {
			return err
		}
		if err := a.openHost(ctx, clog); err != nil {
			return err
		}
		a.openLeadership()
		return nil
	}
	rt, err := a.newRuntime(ctx, clog)
	if err != nil {
		return err
	}
	a.Runtime = rt
	c, err := a.newCoordinator(rt, a.coordBroker(a.Bus), clog)
	if err != nil {
		return err
	}
	a.Telemetry.Observe(a.Detector.Observe)
	a.Telemetry.Observe(c.Observe)
	if err := c.Start(ctx); err != nil {
		c.Close()
		return err
	}
	a.coord.set(c)
	a.onClose(func() error { a.coord.set(nil); return c.Close() })
	return nil
}

// newRuntime makes the agents' runtime (agents.runtime).
func (a *App) newRuntime(ctx context.Context, clog *slog.Logger) (agentrt.Runtime, error) {
	cfg, storage := a.cfg, a.Storage
	switch cfg.Agents.Runtime {
	case conf.RuntimeProcess:
		bin := cfg.Agents.Binary
		if bin == "" {
			var err error
			if bin, err = os.Executable(); err != nil {
				return nil, err
			}
		}
		url, tls := a.agentBroker()
		return &agentrt.Process{
			Binary: bin, Broker: url, TLS: tls, Listen: cfg.Agents.Listen, Storage: storage,
			LogDir: filepath.Join(cfg.Data.Dir, "agents"), Log: clog,
		}, nil
	case conf.RuntimeDocker:
		dir, _ := filepath.Abs(cfg.Data.Dir)
		sum := sha256.Sum256([]byte(dir))
		rt := &agentrt.Docker{
			Image: cfg.Agents.DockerImage, Network: cfg.Agents.DockerNetwork, Storage: storage,
			Instance: hex.EncodeToString(sum[:6]), OwnStorage: a.ownStorage, Log: clog,
			Memory: noLimit(cfg.Agents.DockerMemory), PidsLimit: noLimit(cfg.Agents.DockerPids),
		}
		gw, err := rt.Setup(ctx)
		if err != nil {
			return nil, fmt.Errorf("agents.runtime docker: %w", err)
		}
		if a.Broker == nil {
			rt.Broker, _ = a.agentBroker()
			return rt, nil
		}
		// Agents in containers reach the broker on the network's gateway;
		// the listener is not on loopback, so they must log in.
		addr, err := a.Broker.AddListener("agents", net.JoinHostPort(gw.String(), "0"))
		if err != nil {
			rt.Close()
			return nil, err
		}
		rt.Broker = "mqtt://" + addr.String()
		return rt, nil
	}
	return nil, fmt.Errorf("agents.runtime %q is not one of process, docker", cfg.Agents.Runtime)
}

// agentLogin is the agents' login on an external broker:
// mqtt.agent_username, else Vigil's own.
func (a *App) agentLogin() (user, password string, err error) {
	m := a.cfg.MQTT
	env, file, key := m.AgentPasswordEnv, m.AgentPasswordFile, "mqtt.agent_password"
	if m.AgentUsername == "" {
		env, file, key = m.PasswordEnv, m.PasswordFile, "mqtt.password"
	}
	password, err = conf.Secret(key, env, file, os.LookupEnv)
	return cmp.Or(m.AgentUsername, m.Username), password, err
}

// coordBroker is the coordinator's broker: the embedded one, or b on an
// external broker, whose ACL it trusts (externalBroker).
func (a *App) coordBroker(b Bus) coord.Broker {
	if a.Broker != nil {
		return a.Broker
	}
	return externalBroker{b}
}

// newCoordinator makes a coordinator on rt and b, its changes sent to the
// browsers and the notifier.
func (a *App) newCoordinator(rt agentrt.Runtime, b coord.Broker, clog *slog.Logger) (*coord.Coordinator, error) {
	cfg := a.cfg
	ccfg := coord.ConfigFrom(cfg, a.Storage)
	ccfg.PlanFor = a.planFor // the UI's plans win over vigil.yaml's
	if a.clustered() {
		// The agents of a leader that died go on: adopt them and their
		// recordings, and give them a heartbeat timeout to be heard.
		ccfg.AdoptAfter = cfg.Agents.HeartbeatTimeout
	}
	if a.Broker == nil {
		ccfg.TrustBroker = true
		var err error
		if ccfg.AgentLogin.Username, ccfg.AgentLogin.Password, err = a.agentLogin(); err != nil {
			return nil, err
		}
	}
	c, err := coord.New(ccfg, b, a.Store, rt, a.finisher(), clog, a.Registry)
	if err != nil {
		return nil, err
	}
	c.Changed = func(kind string, v any) {
		a.share(hub.Message{Event: kind, Data: v})
		a.disc.eventChanged(kind, v)
		if kind == hub.EventEvent {
			a.Notifier.EventSaved(v.(detect.Event))
		}
	}
	return c, nil
}

// agentBroker is where agents connect: the embedded broker's own TCP (or
// WebSocket) listener, or the external broker's URLs and CA.
func (a *App) agentBroker() (string, mqttconn.TLS) {
	if a.Broker == nil {
		m := a.cfg.MQTT
		return strings.Join(m.URLs, ","), mqttconn.TLS{CA: m.CA}
	}
	url := a.Broker.URL(broker.TCP)
	if url == "" {
		url = a.Broker.URL(broker.WS)
	}
	return url, mqttconn.TLS{}
}

func (a *App) finisher() *media.Finisher {
	f := media.NewFinisher()
	if !a.cfg.Recording.Transcode {
		f.FFmpeg = ""
	}
	return f
}

// noLimit maps a configured limit, where 0 is none, to the runtime's,
// where 0 is its default and negative none.
func noLimit(v int64) int64 {
	if v == 0 {
		return -1
	}
	return v
}
