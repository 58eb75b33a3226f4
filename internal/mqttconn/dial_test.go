package mqttconn_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigilhq/vigil/internal/mqttconn"
	"github.com/vigilhq/vigil/internal/testpeer"
)

// Dial carries a paho client over TCP, TLS and WebSocket, sending each
// packet whole where a Write would be a record or frame of its own;
// DialRaw sends what is written as it is; over TLS the broker's name is
// the URL's host unless the configuration names one.
func TestDialCarriesAPahoClientOverEveryTransport(t *testing.T) {
	cert := testpeer.SelfSigned(t, t.TempDir(), testpeer.CertOptions{})
	m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Anonymous: true, TLS: &cert, WebSocket: true})
	tlsCfg, err := mqttconn.TLSConfig(mqttconn.TLS{CA: cert.CAFile})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, url string
		whole     bool
	}{
		{"plain MQTT", fmt.Sprintf("mqtt://127.0.0.1:%d", m.Port), false},
		{"MQTT over TLS", fmt.Sprintf("mqtts://127.0.0.1:%d", m.TLSPort), true},
		{"MQTT over TLS by the name localhost", fmt.Sprintf("tls://localhost:%d", m.TLSPort), true},
		{"MQTT over WebSocket", fmt.Sprintf("ws://127.0.0.1:%d", m.WSPort), true},
	} {
		t.Run(c.name, func(t *testing.T) {
			u, err := mqttconn.ParseBrokerURL(c.url)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			raw, err := mqttconn.DialRaw(ctx, u, tlsCfg)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := raw.(*mqttconn.Conn); ok {
				t.Error("DialRaw gathers packets")
			}
			raw.Close()

			conn, err := mqttconn.Dial(ctx, u, tlsCfg)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := conn.(*mqttconn.Conn); ok != c.whole {
				t.Errorf("Dial's connection sends packets whole: %v, want %v", ok, c.whole)
			}
			client := paho.NewClient(paho.ClientConfig{Conn: conn})
			ack, err := client.Connect(ctx, &paho.Connect{ClientID: "dial-test", CleanStart: true, KeepAlive: 30})
			if err != nil {
				t.Fatal(err)
			}
			if ack.ReasonCode != 0 {
				t.Fatalf("CONNACK 0x%02x", ack.ReasonCode)
			}
			sa, err := client.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "a/b", QoS: 1}, {Topic: "$SYS/#"}}})
			if err != nil || len(sa.Reasons) != 2 {
				t.Fatalf("subscribe: %+v %v", sa, err)
			}
			client.Disconnect(&paho.Disconnect{})
		})
	}
	if tlsCfg.ServerName != "" {
		t.Errorf("Dial changed the configuration it was given: ServerName %q", tlsCfg.ServerName)
	}

	t.Run("a ServerName in the configuration is the name asked for", func(t *testing.T) {
		u, _ := mqttconn.ParseBrokerURL(fmt.Sprintf("mqtts://127.0.0.1:%d", m.TLSPort))
		cfg := tlsCfg.Clone()
		cfg.ServerName = "broker.example"
		_, err := mqttconn.Dial(context.Background(), u, cfg)
		if err == nil || !strings.Contains(err.Error(), "broker.example") {
			t.Fatalf("dialled with the wrong name: %v", err)
		}
	})
}
