package watch

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigilhq/vigil/internal/mqttconn"
	"github.com/vigilhq/vigil/internal/rnd"
)

// sysFilters are the $SYS load values a probe asks for. Mosquitto and
// Vigil (mochi) both publish clients/connected and messages/received and
// sent (totals); Mosquitto adds per-minute loads. They are retained, so
// they arrive right after the SUBACK.
var sysFilters = []string{
	"$SYS/broker/clients/connected",
	"$SYS/broker/messages/+",
	"$SYS/broker/load/messages/+/1min",
}

// TopicPrefix is where probes publish: each probe on a fresh topic below it.
const TopicPrefix = "vigil-watch/"

// probe connects to t, subscribes to a fresh topic (and $SYS load),
// publishes one QoS 1 message there and waits for it to come back. It is
// bounded by the Timeout: the connection's deadline is the probe's, so a
// broker that stops answering cannot hold it, and everything it opened is
// closed (paho's goroutines included) when it returns.
func (w *Watcher) probe(ctx context.Context, t *target) Probe {
	p := Probe{Target: t.Name, At: time.Now()}
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	if err := t.probe(ctx, &p); err != nil {
		p.Error = err.Error()
		if ctx.Err() == context.DeadlineExceeded && !strings.Contains(p.Error, "within") {
			p.Error += fmt.Sprintf(" (probe timeout %s)", w.cfg.Timeout)
		}
		return p
	}
	p.OK = true
	return p
}

func (t *target) probe(ctx context.Context, p *Probe) error {
	conn, err := mqttconn.Dial(ctx, t.url, t.tls)
	if err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) {
			return err // it names the address
		}
		return fmt.Errorf("connect to %s: %w", t.url.Host, err)
	}
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	// Cancelling ctx (Close) unblocks reads and writes at once.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	id := rnd.Hex(8)
	topic := TopicPrefix + id
	back := make(chan time.Time, 1)
	var sysMu sync.Mutex
	sys := map[string]string{}
	client := paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			switch m := pr.Packet; {
			case m.Topic == topic:
				select {
				case back <- time.Now():
				default:
				}
			case strings.HasPrefix(m.Topic, "$SYS/"):
				sysMu.Lock()
				sys[m.Topic] = string(m.Payload)
				sysMu.Unlock()
			}
			return true, nil
		}},
		OnClientError:      func(error) {},
		OnServerDisconnect: func(*paho.Disconnect) {},
	})
	cp := &paho.Connect{ClientID: "vigil-watch-" + id[:12], CleanStart: true, KeepAlive: 60}
	if t.Username != "" {
		cp.Username, cp.UsernameFlag = t.Username, true
		cp.Password, cp.PasswordFlag = []byte(t.Password), true
	}
	start := time.Now()
	ack, err := client.Connect(ctx, cp) // on failure it closes conn
	if err != nil {
		if ack != nil && ack.ReasonCode >= 0x80 {
			return fmt.Errorf("broker refused the connection: %s", mqttconn.ReasonName(ack.ReasonCode))
		}
		return fmt.Errorf("mqtt connect: %w", describe(err, "CONNACK"))
	}
	p.ConnectMS = ms(time.Since(start))
	defer client.Disconnect(&paho.Disconnect{ReasonCode: 0}) // closes conn, waits for paho's goroutines

	subs := []paho.SubscribeOptions{{Topic: topic, QoS: 1}}
	for _, f := range sysFilters {
		subs = append(subs, paho.SubscribeOptions{Topic: f, QoS: 0})
	}
	// $SYS may be refused; the probe's own topic may not.
	sa, err := client.Subscribe(ctx, &paho.Subscribe{Subscriptions: subs})
	switch {
	case sa != nil && len(sa.Reasons) > 0 && sa.Reasons[0] >= 0x80:
		return fmt.Errorf("broker refused the subscription to %s: %s", topic, refusal(sa.Reasons[0]))
	case err != nil && (sa == nil || len(sa.Reasons) == 0):
		return fmt.Errorf("subscribe to %s: %w", topic, describe(err, "SUBACK"))
	}
	start = time.Now()
	pr, err := client.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(id)})
	switch {
	case pr != nil && pr.ReasonCode >= 0x80:
		return fmt.Errorf("broker refused the publish to %s: %s", topic, refusal(pr.ReasonCode))
	case err != nil:
		return fmt.Errorf("publish to %s: %w", topic, describe(err, "PUBACK"))
	}
	select {
	case at := <-back:
		p.RoundTripMS = ms(at.Sub(start))
	case <-ctx.Done():
		return fmt.Errorf("the probe's own message did not come back within the timeout")
	}
	sysMu.Lock()
	if len(sys) > 0 {
		p.Sys = maps.Clone(sys) // more may arrive until the disconnect
	}
	sysMu.Unlock()
	return nil
}

// describe turns paho's timeouts into a sentence.
func describe(err error, waitingFor string) error {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return fmt.Errorf("no %s within the timeout", waitingFor)
	}
	return err
}

// refusal names a SUBACK or PUBACK failure code.
func refusal(code byte) string {
	name := mqttconn.ReasonName(code)
	if name == "" {
		name = "refused"
	}
	return fmt.Sprintf("%s (reason code 0x%02x)", name, code)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
