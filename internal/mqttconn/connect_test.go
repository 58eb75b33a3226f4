package mqttconn_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/vigilhq/vigil/internal/mqttconn"
	"github.com/vigilhq/vigil/internal/testkit"
	"github.com/vigilhq/vigil/internal/testpeer"
)

// Connect returns once the client is subscribed and OnUp has run, and the
// client gets what is published to its subscriptions; a broker that
// refuses the login is that error, not a timeout.
func TestConnectSubscribesThenRuns(t *testing.T) {
	m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Users: map[string]string{"cam": "cam-password"}})
	broker := fmt.Sprintf("mqtt://127.0.0.1:%d", m.Port)
	got := make(chan string, 1)
	life, cancel := context.WithCancel(context.Background())
	defer cancel()
	up := 0
	cm, err := mqttconn.Connect(context.Background(), life, mqttconn.Client{
		Brokers: []string{broker}, Username: "cam", Password: "cam-password", ClientID: "cam-1",
		Subscriptions: []paho.SubscribeOptions{{Topic: "cmd/cam-1", QoS: 1}},
		OnUp: func(ctx context.Context, cm *autopaho.ConnectionManager) error {
			up++
			_, err := cm.Publish(ctx, &paho.Publish{Topic: "cmd/cam-1", QoS: 1, Payload: []byte("hello")})
			return err
		},
		OnMessage: func(p *paho.Publish) { got <- string(p.Payload) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if up != 1 {
		t.Fatalf("OnUp ran %d times before Connect returned", up)
	}
	select {
	case p := <-got:
		if p != "hello" {
			t.Fatalf("got %q", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the subscription got nothing")
	}
	cm.Disconnect(context.Background())

	_, err = mqttconn.Connect(context.Background(), life, mqttconn.Client{
		Brokers: []string{broker}, Username: "cam", Password: "wrong", ClientID: "cam-2",
	})
	if err == nil || !strings.Contains(err.Error(), "broker refused the connection") {
		t.Fatalf("a wrong password: %v", err)
	}
}

// A client that brings its own backoff, TLS configuration and connection
// counters (the simulator's devices) gets them used: the counters run in
// pairs, before OnUp, and again after the broker restarts; the backoff
// decides every wait, from attempt 0.
func TestConnectUsesTheClientsOwnBackoffAndCounters(t *testing.T) {
	cert := testpeer.SelfSigned(t, t.TempDir(), testpeer.CertOptions{})
	m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Anonymous: true, TLS: &cert, NoPlain: true})
	tlsCfg, err := mqttconn.TLSConfig(mqttconn.TLS{CA: cert.CAFile})
	if err != nil {
		t.Fatal(err)
	}
	var ups, downs, upsAtOnUp, attempts atomic.Int64
	var zero atomic.Bool
	life, cancel := context.WithCancel(context.Background())
	defer cancel()
	cm, err := mqttconn.Connect(context.Background(), life, mqttconn.Client{
		Brokers:   []string{fmt.Sprintf("mqtts://127.0.0.1:%d", m.TLSPort)},
		TLS:       mqttconn.TLS{CA: "/nonexistent"}, // TLSConfig wins
		TLSConfig: tlsCfg,
		ClientID:  "device-1",
		Backoff: func(attempt int) time.Duration {
			attempts.Add(1)
			if attempt == 0 {
				zero.Store(true)
			}
			return 20 * time.Millisecond
		},
		OnConnectionUp:   func() { ups.Add(1) },
		OnConnectionDown: func() { downs.Add(1) },
		OnUp: func(context.Context, *autopaho.ConnectionManager) error {
			upsAtOnUp.Store(ups.Load())
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if ups.Load() != 1 || downs.Load() != 0 || upsAtOnUp.Load() != 1 || !zero.Load() {
		t.Fatalf("first connection: up %d, down %d, up before OnUp %d, attempt 0 asked for %v", ups.Load(), downs.Load(), upsAtOnUp.Load(), zero.Load())
	}
	before := attempts.Load()
	m.Restart()
	testkit.WaitFor(t, 10*time.Second, "the reconnection", func() bool { return ups.Load() == 2 })
	if downs.Load() != 1 || attempts.Load() <= before {
		t.Errorf("after a restart: down %d, backoff asked %d times (%d before)", downs.Load(), attempts.Load(), before)
	}
	ctx, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	cm.Disconnect(ctx)
}
