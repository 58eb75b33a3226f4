package mqttconn_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/vigilhq/vigil/internal/mqttconn"
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
