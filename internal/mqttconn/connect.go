package mqttconn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
)

// Client describes one of Vigil's long-lived MQTT clients (an agent, a
// camera, a subscriber, a simulated device): where it connects, as whom,
// and what it does on every connection. autopaho reconnects it, to each
// broker in turn.
type Client struct {
	Brokers []string // URLs (ParseBrokerURL), tried in order
	TLS     TLS
	// TLSConfig, if set, is used in place of TLS: one configuration built
	// once for many clients (the simulator's devices).
	TLSConfig          *tls.Config
	Username, Password string
	ClientID           string
	KeepAlive          uint16        // seconds; 30 if zero
	ConnectTimeout     time.Duration // for one attempt; 10 s if zero
	// MinBackoff is the first wait before reconnecting, doubling up to
	// MaxBackoff; 250 ms and 10 s if zero.
	MinBackoff, MaxBackoff time.Duration
	// Backoff, if set, is the wait before each attempt of a connection
	// (attempt 0 is the first, after a start or a lost connection), in
	// place of MinBackoff and MaxBackoff. It runs on autopaho's goroutine.
	Backoff func(attempt int) time.Duration
	Will    *paho.WillMessage
	// OnConnectionUp and OnConnectionDown, if set, run on autopaho's
	// goroutine when a connection comes up (before its subscriptions and
	// OnUp) and when it is lost: always in pairs, so they can count
	// connections. They must not block.
	OnConnectionUp, OnConnectionDown func()
	// Subscriptions are made on every connection; a filter the broker
	// refuses is an error.
	Subscriptions []paho.SubscribeOptions
	// OnUp, if set, runs on every connection once its subscriptions are
	// acknowledged (say "online", publish a meta); its error on the first
	// connection is Connect's.
	OnUp func(ctx context.Context, cm *autopaho.ConnectionManager) error
	// OnMessage handles each message, on paho's goroutine; QoS 1 and 2
	// messages are acknowledged when it returns.
	OnMessage func(*paho.Publish)
	// OnMessageAck, in place of OnMessage, handles each message on paho's
	// goroutine and acknowledges it by calling ack, later and from any
	// goroutine (acknowledgements go out in the order the messages came).
	// A message never acknowledged is the broker's to deliver again.
	OnMessageAck func(p *paho.Publish, ack func())
	// SessionExpiry keeps the client's session (its subscriptions, and the
	// messages it did not acknowledge) that long after a disconnection,
	// and resumes it on the first connection; 0: a clean session each time.
	SessionExpiry time.Duration
	// OnConnectError, if set, hears of each failed attempt.
	OnConnectError func(error)
}

// Connect connects c and returns once its first connection is set up
// (subscribed, OnUp done), or with an error: a broker that refuses the
// client or a subscription, or no connection before ctx ends. The
// connection lives, reconnecting, until life ends: after such an error it
// is returned too and keeps trying (a caller may wait on with
// AwaitConnection); it is nil only when c cannot connect at all (a bad
// URL or TLS file).
func Connect(ctx, life context.Context, c Client) (*autopaho.ConnectionManager, error) {
	var urls []*url.URL
	for _, b := range c.Brokers {
		u, err := ParseBrokerURL(b)
		if err != nil {
			return nil, err
		}
		urls = append(urls, u)
	}
	if len(urls) == 0 {
		return nil, errors.New("no broker URL")
	}
	tlsCfg := c.TLSConfig
	if tlsCfg == nil {
		var err error
		if tlsCfg, err = TLSConfig(c.TLS); err != nil {
			return nil, err
		}
	}
	keepAlive, timeout, backoff := c.KeepAlive, c.ConnectTimeout, c.Backoff
	if keepAlive == 0 {
		keepAlive = 30
	}
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	if backoff == nil {
		minB, maxB := c.MinBackoff, c.MaxBackoff
		if minB <= 0 {
			minB = 250 * time.Millisecond
		}
		if maxB <= 0 {
			maxB = 10 * time.Second
		}
		backoff = autopaho.NewExponentialBackoff(minB, maxB, 2*minB, 2)
	}
	ready := make(chan error, 1)
	var once sync.Once
	first := func(err error) { once.Do(func() { ready <- err }) }
	cfg := autopaho.ClientConfig{
		ServerUrls:                    urls,
		TlsCfg:                        tlsCfg,
		KeepAlive:                     keepAlive,
		CleanStartOnInitialConnection: c.SessionExpiry == 0,
		SessionExpiryInterval:         uint32(c.SessionExpiry / time.Second),
		ConnectUsername:               c.Username,
		ConnectPassword:               []byte(c.Password),
		ConnectTimeout:                timeout,
		ReconnectBackoff:              backoff,
		WillMessage:                   c.Will,
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			if c.OnConnectionUp != nil {
				c.OnConnectionUp()
			}
			go func() {
				sctx, cancel := context.WithTimeout(life, 10*time.Second)
				defer cancel()
				err := subscribe(sctx, cm, c.Subscriptions)
				if err == nil && c.OnUp != nil {
					err = c.OnUp(sctx, cm)
				}
				first(err)
			}()
		},
		OnConnectError: func(err error) {
			var ce *autopaho.ConnackError
			if errors.As(err, &ce) {
				first(fmt.Errorf("broker refused the connection: %s", refusal(ce)))
			}
			if c.OnConnectError != nil {
				c.OnConnectError(err)
			}
		},
		ClientConfig: paho.ClientConfig{ClientID: c.ClientID, EnableManualAcknowledgment: c.OnMessageAck != nil},
	}
	if c.OnConnectionDown != nil {
		cfg.OnConnectionDown = func() bool {
			c.OnConnectionDown()
			return true // keep reconnecting
		}
	}
	switch {
	case c.OnMessageAck != nil:
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.OnMessageAck(pr.Packet, func() {
				select {
				case <-pr.Client.Done(): // that connection is gone: the broker sends it again
				default:
					pr.Client.Ack(pr.Packet)
				}
			})
			return true, nil
		}}
	case c.OnMessage != nil:
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.OnMessage(pr.Packet)
			return true, nil
		}}
	}
	cm, err := autopaho.NewConnection(life, cfg)
	if err != nil {
		return nil, err
	}
	select {
	case err := <-ready:
		return cm, err
	case <-ctx.Done():
		return cm, fmt.Errorf("no connection to %s: %w", strings.Join(c.Brokers, ", "), ctx.Err())
	}
}

// subscribe makes subs; a filter the broker refuses is an error.
func subscribe(ctx context.Context, cm *autopaho.ConnectionManager, subs []paho.SubscribeOptions) error {
	if len(subs) == 0 {
		return nil
	}
	ack, err := cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: subs})
	if err != nil {
		return err
	}
	for i, code := range ack.Reasons {
		if code >= 0x80 && i < len(subs) {
			return fmt.Errorf("broker refused subscription to %q (reason code 0x%02x)", subs[i].Topic, code)
		}
	}
	return nil
}

// Stop ends a connection Connect made with the life that cancel ends:
// it disconnects cleanly if connected (5 s at most), ends the life and
// waits until the connection manager is done. cm may be nil.
func Stop(cm *autopaho.ConnectionManager, cancel context.CancelFunc) error {
	var err error
	if cm != nil {
		ctx, done := context.WithTimeout(context.Background(), 5*time.Second)
		err = cm.Disconnect(ctx)
		done()
	}
	cancel()
	if cm != nil {
		<-cm.Done()
	}
	if errors.Is(err, autopaho.ConnectionDownError) {
		err = nil
	}
	return err
}

// refusal says why a broker refused a connection: its reason string, else
// the MQTT 5 meaning of its reason code (paho maps an MQTT 3.1.1 return
// code to it).
func refusal(ce *autopaho.ConnackError) string {
	if ce.Reason != "" {
		return ce.Reason
	}
	c := packets.Connack{ReasonCode: ce.ReasonCode}
	text, _, _ := strings.Cut(c.Reason(), " - ")
	if text == "" {
		return fmt.Sprintf("reason code 0x%02x", ce.ReasonCode)
	}
	return fmt.Sprintf("%s (0x%02x)", text, ce.ReasonCode)
}
