package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/vigilhq/vigil/internal/agentrt"
	"github.com/vigilhq/vigil/internal/broker"
	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/detect"
	"github.com/vigilhq/vigil/internal/ingest"
	"github.com/vigilhq/vigil/internal/mqttbus"
	"github.com/vigilhq/vigil/internal/mqttconn"
	"github.com/vigilhq/vigil/internal/mqttingest"
	"github.com/vigilhq/vigil/internal/users"
)

// Bus is how Vigil's parts speak MQTT: the embedded broker in-process, or
// Vigil's connection to an external broker (mqttbus). clientID, the
// publisher's, is "" on an external broker.
type Bus interface {
	Publish(topic string, payload []byte, retain bool, qos byte) error
	Subscribe(filter string, h func(topic string, payload []byte, clientID string)) error
	Unsubscribe(filter string) error
}

// connectWait is how long vigil up waits for an external broker at start.
const connectWait = 15 * time.Second

// openMQTT starts the embedded broker, with the pipeline as its ingest
// handler, or connects to the external broker (mqtt.mode external); the
// pipeline's own subscription there starts later, in openIngest.
func (a *App) openMQTT(ctx context.Context) error {
	cfg := a.cfg
	if cfg.MQTT.External() {
		c, err := a.externalClient("", cfg.MQTT.Username, cfg.MQTT.PasswordEnv, cfg.MQTT.PasswordFile, "mqtt.password")
		if err != nil {
			return err
		}
		// The node says it is online on its connection, and its last
		// will says it is not (the leader places agents on online nodes:
		// agentrt.Remote).
		state := agentrt.NodeStateTopic(a.node.ID)
		c.Will = &paho.WillMessage{Topic: state, Payload: []byte("offline"), QoS: 1, Retain: true}
		c.OnUp = func(ctx context.Context, cm *autopaho.ConnectionManager) error {
			if a.clustered() && !a.hosting.Load() {
				return nil // openHost says it, once it takes the leader's commands
			}
			_, err := cm.Publish(ctx, &paho.Publish{Topic: state, Payload: []byte("online"), QoS: 1, Retain: true})
			return err
		}
		var b *mqttbus.Bus
		if err := connectExternal(ctx, &c, func(ctx context.Context) (err error) {
			b, err = mqttbus.Open(ctx, c)
			return err
		}); err != nil {
			return err
		}
		a.onClose(func() error {
			b.Publish(state, []byte("offline"), true, 1)
			return b.Close()
		})
		a.Bus, a.extBus = b, b
		a.log.Info("connected to the external broker", "urls", strings.Join(cfg.MQTT.URLs, ","), "username", cfg.MQTT.Username)
		return nil
	}
	var err error
	if a.Broker, err = broker.Open(broker.Config{MQTT: cfg.MQTT, DataDir: cfg.Data.Dir,
		NoRetain: []string{detect.ModeSetFilter, ingest.CameraCommandFilter, ingest.AgentCommandFilter},
		// Every message on the pipeline's topics is stored before the
		// broker acknowledges it (the writer starts later; until then
		// publishers wait).
		Ingest: a.Telemetry.Ingest, IngestFilters: a.Telemetry.Filters()}, a.Users, a.log.With("component", "broker"), a.Registry); err != nil {
		return err
	}
	a.onClose(a.Broker.Close)
	a.Bus = a.Broker
	return nil
}

// openIngest takes telemetry from the external broker: a shared
// subscription whose messages are acknowledged once stored. Called once
// the pipeline runs, with every observer registered.
func (a *App) openIngest(ctx context.Context) error {
	if !a.cfg.MQTT.External() {
		return nil
	}
	m := a.cfg.MQTT
	c, err := a.externalClient("-ingest", m.Username, m.PasswordEnv, m.PasswordFile, "mqtt.password")
	if err != nil {
		return err
	}
	var s *mqttingest.Subscriber
	if err := connectExternal(ctx, &c, func(ctx context.Context) (err error) {
		s, err = mqttingest.Start(ctx, mqttingest.Config{
			Client: c, Group: m.ShareGroup, Filters: a.Telemetry.Filters(), SessionExpiry: m.SessionExpiry,
			Ingest: a.Telemetry.IngestAsync, Log: a.log.With("component", "ingest"),
		})
		return err
	}); err != nil {
		return err
	}
	a.onClose(s.Close)
	return nil
}

// externalClient is a connection of this node to the external broker;
// suffix tells its connections apart (each has a client id of its own,
// the same across restarts).
func (a *App) externalClient(suffix, username, passwordEnv, passwordFile, key string) (mqttconn.Client, error) {
	m := a.cfg.MQTT
	password, err := conf.Secret(key, passwordEnv, passwordFile, os.LookupEnv)
	if err != nil {
		return mqttconn.Client{}, err
	}
	return mqttconn.Client{
		Brokers: m.URLs, TLS: mqttconn.TLS{CA: m.CA, Cert: m.ClientCert, Key: m.ClientKey},
		Username: username, Password: password, ClientID: "vigil-" + a.node.ID + suffix,
		KeepAlive: 10, ConnectTimeout: 5 * time.Second, MinBackoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second,
	}, nil
}

// connectExternal runs connect (which connects with c) and turns its
// failure into an error that says what to fix: the broker refused the
// login, or no URL answered (each tried once, or for connectWait).
func connectExternal(ctx context.Context, c *mqttconn.Client, connect func(context.Context) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	ctx, stop := context.WithTimeout(ctx, connectWait)
	defer stop()
	var mu sync.Mutex
	var failed []string
	connected := false
	c.OnConnectError = func(err error) {
		if _, refused := errors.AsType[*autopaho.ConnackError](err); refused {
			return // Connect returns that
		}
		mu.Lock()
		defer mu.Unlock()
		if connected {
			return // later failures are the reconnection's to log
		}
		failed = append(failed, err.Error())
		if len(failed) >= len(c.Brokers) {
			cancel(errors.New(strings.Join(failed, "; ")))
		}
	}
	err := connect(ctx)
	mu.Lock()
	connected, failed = true, nil
	mu.Unlock()
	if err == nil {
		return nil
	}
	who := "the external broker (mqtt.urls " + strings.Join(c.Brokers, ", ") + ")"
	switch {
	case strings.Contains(err.Error(), "(0x86)") || strings.Contains(err.Error(), "(0x87)"):
		return fmt.Errorf("%s refused Vigil's login as %q: %w (check mqtt.username and its password)", who, c.Username, err)
	case strings.Contains(err.Error(), "refused the connection"):
		return fmt.Errorf("%s refused Vigil's connection: %w", who, err)
	case context.Cause(ctx) != nil && !errors.Is(context.Cause(ctx), context.DeadlineExceeded) && !errors.Is(context.Cause(ctx), context.Canceled):
		return fmt.Errorf("cannot reach %s: %v", who, context.Cause(ctx))
	}
	return fmt.Errorf("%s: %w", who, err)
}

// externalBroker is the coordinator's broker on an external broker. The
// broker's ACLs, not Vigil, decide who may publish on the agents' and
// cameras' topics (coord.Config.TrustBroker), and agents log in with
// mqtt.agent_username: Vigil makes no credentials and knows no publisher.
type externalBroker struct{ Bus }

func (externalBroker) AddCredential(string, string, *users.User, ...string) {}
func (externalBroker) RemoveCredential(string)                              {}
func (externalBroker) ClientIP(string) string                               { return "" }
func (externalBroker) ClientLogin(string) (string, bool)                    { return "", false }
