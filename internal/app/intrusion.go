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
	ownStorage, err := coord.PrepareStorage(storage, cfg.Data.Dir, clog)
	if err != nil {
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
		plan, _ := a.planFor(site)
		a.Hub.Publish(hub.Message{Event: hub.EventSite, Data: hub.Site{Name: site, Armed: armed, Plan: plan}})
	}
	if err := a.Bus.Subscribe(detect.ModeSetFilter, func(topic string, payload []byte, _ string) {
		a.Detector.ModeCommand(topic, payload)
	}); err != nil {
		return err
	}

	switch cfg.Agents.Runtime {
	case conf.RuntimeProcess:
		bin := cfg.Agents.Binary
		if bin == "" {
			if bin, err = os.Executable(); err != nil {
				return err
			}
		}
		url, tls := a.agentBroker()
		a.Runtime = &agentrt.Process{
			Binary: bin, Broker: url, TLS: tls, Listen: cfg.Agents.Listen, Storage: storage,
			LogDir: filepath.Join(cfg.Data.Dir, "agents"), Log: clog,
		}
	case conf.RuntimeDocker:
		dir, _ := filepath.Abs(cfg.Data.Dir)
		sum := sha256.Sum256([]byte(dir))
		rt := &agentrt.Docker{
			Image: cfg.Agents.DockerImage, Network: cfg.Agents.DockerNetwork, Storage: storage,
			Instance: hex.EncodeToString(sum[:6]), OwnStorage: ownStorage, Log: clog,
			Memory: noLimit(cfg.Agents.DockerMemory), PidsLimit: noLimit(cfg.Agents.DockerPids),
		}
		gw, err := rt.Setup(ctx)
		if err != nil {
			return fmt.Errorf("agents.runtime docker: %w", err)
		}
		if a.Broker == nil {
			rt.Broker, _ = a.agentBroker()
		} else {
			// Agents in containers reach the broker on the network's
			// gateway; the listener is not on loopback, so they must log
			// in.
			addr, err := a.Broker.AddListener("agents", net.JoinHostPort(gw.String(), "0"))
			if err != nil {
				rt.Close()
				return err
			}
			rt.Broker = "mqtt://" + addr.String()
		}
		a.Runtime = rt
	default:
		return fmt.Errorf("agents.runtime %q is not one of process, docker", cfg.Agents.Runtime)
	}
	ccfg := coord.ConfigFrom(cfg, storage)
	ccfg.PlanFor = a.planFor // the UI's plans win over vigil.yaml's
	var cb coord.Broker = a.Broker
	if a.Broker == nil {
		m := cfg.MQTT
		cb, ccfg.TrustBroker = externalBroker{a.Bus}, true
		ccfg.AgentLogin.Username = cmp.Or(m.AgentUsername, m.Username)
		env, file, key := m.AgentPasswordEnv, m.AgentPasswordFile, "mqtt.agent_password"
		if m.AgentUsername == "" {
			env, file, key = m.PasswordEnv, m.PasswordFile, "mqtt.password"
		}
		if ccfg.AgentLogin.Password, err = conf.Secret(key, env, file, os.LookupEnv); err != nil {
			return err
		}
	}
	c, err := coord.New(ccfg, cb, a.Store, a.Runtime, a.finisher(), clog, a.Registry)
	if err != nil {
		return err
	}
	a.Coord = c
	a.Alerts.Add(c) // agents lost
	c.Changed = func(kind string, v any) {
		a.Hub.Publish(hub.Message{Event: kind, Data: v})
		if kind == hub.EventEvent {
			a.Notifier.EventSaved(v.(detect.Event))
		}
	}
	a.Detector.Out = c.Detected
	a.Telemetry.Observe(a.Detector.Observe)
	a.Telemetry.Observe(c.Observe)
	if err := c.Start(ctx); err != nil {
		return err
	}
	a.onClose(c.Close)
	return nil
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
