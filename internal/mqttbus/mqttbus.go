// Package mqttbus is Vigil's own connection to an external broker: what the
// embedded broker offers in-process (Publish; Subscribe with a handler per
// filter), over MQTT 5, so that the detector, the coordinator and the
// notifier can run against Mosquitto, EMQX, HiveMQ or VerneMQ through the
// same calls. Subscriptions are made again on every connection.
package mqttbus

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/vigilhq/vigil/internal/mqttconn"
	"github.com/vigilhq/vigil/internal/users"
)

// Handler takes a message. clientID, the publisher's, is "": an external
// broker does not say who published.
type Handler = func(topic string, payload []byte, clientID string)

// Bus is a running connection.
type Bus struct {
	cm     *autopaho.ConnectionManager
	cancel context.CancelFunc

	mu   sync.RWMutex
	subs []sub

	holdMu  sync.Mutex
	holding bool   // messages wait in held until Release
	held    []held // in their order of arrival
}

// held is a message not handed out yet, nor acknowledged.
type held struct {
	p   *paho.Publish
	ack func()
}

type sub struct {
	filter string
	h      Handler
	qos    byte
}

// ErrClosed is returned by a Bus after Close.
var ErrClosed = errors.New("mqttbus: closed")

// Open connects; it returns once the first connection is up, or with an
// error (the broker is unreachable or refuses the login). c's
// Subscriptions and OnMessage are the Bus's own; c.OnUp, if set, runs on
// every connection once the Bus's subscriptions are made (to say "online"
// where c.Will says "offline").
func Open(ctx context.Context, c mqttconn.Client) (*Bus, error) {
	return open(ctx, c, false)
}

// OpenHolding is Open for a persistent session (c.SessionExpiry) whose
// queued messages arrive as it connects, before anyone subscribed a
// handler: every message is held until Release, then handed out in order.
func OpenHolding(ctx context.Context, c mqttconn.Client) (*Bus, error) {
	return open(ctx, c, true)
}

func open(ctx context.Context, c mqttconn.Client, hold bool) (*Bus, error) {
	life, cancel := context.WithCancel(context.Background())
	b := &Bus{cancel: cancel, holding: hold}
	c.Subscriptions = nil
	// A message is acknowledged once its handlers ran: one held when the
	// connection ends is the broker's to send again.
	c.OnMessage, c.OnMessageAck = nil, b.dispatch
	up := c.OnUp
	c.OnUp = func(ctx context.Context, cm *autopaho.ConnectionManager) error {
		b.mu.RLock()
		subs := slices.Clone(b.subs)
		b.mu.RUnlock()
		if err := subscribe(ctx, cm, subs...); err != nil || up == nil {
			return err
		}
		return up(ctx, cm)
	}
	cm, err := mqttconn.Connect(ctx, life, c)
	if err != nil {
		mqttconn.Stop(cm, cancel)
		return nil, err
	}
	b.cm = cm
	return b, nil
}

func subscribe(ctx context.Context, cm *autopaho.ConnectionManager, subs ...sub) error {
	if len(subs) == 0 {
		return nil
	}
	s := &paho.Subscribe{}
	for _, f := range subs {
		s.Subscriptions = append(s.Subscriptions, paho.SubscribeOptions{Topic: f.filter, QoS: f.qos})
	}
	ack, err := cm.Subscribe(ctx, s)
	if err != nil {
		return err
	}
	for i, code := range ack.Reasons {
		if code >= 0x80 && i < len(subs) {
			return errors.New("mqttbus: the broker refused the subscription to " + subs[i].filter)
		}
	}
	return nil
}

// Release hands out the messages held since OpenHolding, in order, and
// every later one as it comes.
func (b *Bus) Release() {
	b.holdMu.Lock()
	defer b.holdMu.Unlock()
	for _, m := range b.held {
		b.deliver(m.p)
		m.ack()
	}
	b.held, b.holding = nil, false
}

// dispatch hands a message to the handlers of the filters it matches and
// acknowledges it, or holds it.
func (b *Bus) dispatch(p *paho.Publish, ack func()) {
	b.holdMu.Lock()
	if b.holding {
		b.held = append(b.held, held{p, ack})
		b.holdMu.Unlock()
		return
	}
	b.holdMu.Unlock()
	b.deliver(p)
	ack()
}

func (b *Bus) deliver(p *paho.Publish) {
	b.mu.RLock()
	var hs []Handler
	for _, s := range b.subs {
		if users.MatchTopic(s.filter, p.Topic) {
			hs = append(hs, s.h)
		}
	}
	b.mu.RUnlock()
	for _, h := range hs {
		h(p.Topic, p.Payload, "")
	}
}

// Subscribe has h take the messages of filter, now and after every
// reconnection. Two subscriptions should not overlap: a broker may send a
// message once per matching subscription.
func (b *Bus) Subscribe(filter string, h Handler) error { return b.subscribeQoS(filter, h, 1) }

func (b *Bus) subscribeQoS(filter string, h Handler, qos byte) error {
	s := sub{filter, h, qos}
	b.mu.Lock()
	b.subs = append(b.subs, s)
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.cm.AwaitConnection(ctx); err != nil {
		return nil // not connected now: OnUp subscribes on the next connection
	}
	return subscribe(ctx, b.cm, s)
}

// SubscribeQoS0 is Subscribe at QoS 0: for what may be lost (a live view).
func (b *Bus) SubscribeQoS0(filter string, h Handler) error { return b.subscribeQoS(filter, h, 0) }

// Unsubscribe ends the subscriptions of filter.
func (b *Bus) Unsubscribe(filter string) error {
	b.mu.Lock()
	b.subs = slices.DeleteFunc(b.subs, func(s sub) bool { return s.filter == filter })
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.cm.AwaitConnection(ctx); err != nil {
		return nil // not connected: the next connection does not make it
	}
	_, err := b.cm.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{filter}})
	return err
}

// Publish sends a message; at QoS 1 and 2 it returns once the broker
// acknowledged it.
func (b *Bus) Publish(topic string, payload []byte, retain bool, qos byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	select {
	case <-b.cm.Done():
		return ErrClosed
	default:
	}
	_, err := b.cm.Publish(ctx, &paho.Publish{Topic: topic, Payload: payload, Retain: retain, QoS: qos})
	return err
}

// Close disconnects.
func (b *Bus) Close() error { return mqttconn.Stop(b.cm, b.cancel) }
