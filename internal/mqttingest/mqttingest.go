// Package mqttingest takes telemetry from an external MQTT broker
// (Mosquitto, EMQX, HiveMQ, VerneMQ) the way several Vigil nodes share it:
// an MQTT 5 shared subscription ($share/<group>/...) at QoS 1, so that the
// broker splits the messages between the nodes, and a message is
// acknowledged to the broker only once it is durably stored. A node that
// dies before storing a message leaves it unacknowledged: the broker
// delivers it again (to the node's resumed session; see docs/ha.md for
// what each broker does with a dead shared subscriber's messages), and the
// store keeps a reading delivered twice once.
package mqttingest

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/vigilhq/vigil/internal/mqttconn"
)

// Ingest queues one message for storage, in the order of the calls, and
// returns a channel that hears when it is stored (nil) or will not be;
// telemetry.Pipeline.IngestAsync is one.
type Ingest func(ctx context.Context, topic string, payload []byte, clientID string) (<-chan error, error)

// Config is what a Subscriber needs.
type Config struct {
	// Client is the node's connection: brokers, login, TLS, and a client
	// id of its own that stays the same across restarts (its session,
	// with the messages it did not acknowledge, is resumed).
	Client mqttconn.Client
	// Group is the shared subscription's group: nodes of one Vigil share
	// it ("vigil" if empty).
	Group string
	// Filters are the topic filters to take (the pipeline's).
	Filters []string
	// SessionExpiry is how long the broker keeps the node's session while
	// it is away; 0 means a day, negative a clean session on every
	// connection (see docs/ha.md for the trade-off).
	SessionExpiry time.Duration
	Ingest        Ingest
	Log           *slog.Logger
}

// Subscriber is a running shared subscription.
type Subscriber struct {
	cm     *autopaho.ConnectionManager
	cancel context.CancelFunc
	acks   sync.WaitGroup // messages waiting to be stored, then acknowledged
}

// SharedFilter is filter as a shared subscription of group.
func SharedFilter(group, filter string) string { return "$share/" + group + "/" + filter }

// Start connects and subscribes; it returns once the first connection is
// subscribed, or with an error (the broker is unreachable, refuses the
// login or a subscription). The connection then lives, reconnecting,
// until Close.
func Start(ctx context.Context, cfg Config) (*Subscriber, error) {
	if cfg.Ingest == nil || len(cfg.Filters) == 0 {
		return nil, errors.New("mqttingest: no Ingest or no filters")
	}
	if cfg.Group == "" {
		cfg.Group = "vigil"
	}
	switch {
	case cfg.SessionExpiry == 0:
		cfg.SessionExpiry = 24 * time.Hour
	case cfg.SessionExpiry < 0:
		cfg.SessionExpiry = 0
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	life, cancel := context.WithCancel(context.Background())
	s := &Subscriber{cancel: cancel}
	c := cfg.Client
	c.SessionExpiry = cfg.SessionExpiry
	c.Subscriptions = nil
	for _, f := range cfg.Filters {
		c.Subscriptions = append(c.Subscriptions, paho.SubscribeOptions{Topic: SharedFilter(cfg.Group, f), QoS: 1})
	}
	c.OnMessageAck = func(p *paho.Publish, ack func()) {
		// On paho's goroutine, in the order of arrival: the pipeline's
		// queue holds the broker back when it is full.
		stored, err := cfg.Ingest(life, p.Topic, p.Payload, "")
		if err != nil {
			// Not queued (closing): unacknowledged, it comes again.
			return
		}
		if p.QoS == 0 {
			return
		}
		s.acks.Go(func() {
			select {
			case err := <-stored:
				if err == nil {
					ack()
				}
			case <-life.Done():
			}
		})
	}
	cm, err := mqttconn.Connect(ctx, life, c)
	if err != nil {
		mqttconn.Stop(cm, cancel)
		return nil, err
	}
	s.cm = cm
	return s, nil
}

// Close disconnects; messages not yet stored stay unacknowledged, the
// broker's to deliver again.
func (s *Subscriber) Close() error {
	err := mqttconn.Stop(s.cm, s.cancel)
	s.acks.Wait()
	return err
}
