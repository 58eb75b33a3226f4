package broker

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/gorilla/websocket"

	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/wsconn"
)

// openDefault starts a broker with the shipped defaults but for its
// ports: TCP and WebSocket on loopback, anonymous as configured there.
func openDefault(t *testing.T, mutate func(*conf.MQTT)) *Server {
	t.Helper()
	c := conf.New().MQTT
	c.Listen, c.WSListen, c.Persistence = "127.0.0.1:0", "127.0.0.1:0", false
	if mutate != nil {
		mutate(&c)
	}
	s, err := Open(Config{MQTT: c, DataDir: t.TempDir()}, roleUsers{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// pahoOver connects paho (MQTT 5) over conn and returns the client and the
// CONNACK code.
func pahoOver(t *testing.T, conn net.Conn, user string) (*paho.Client, byte) {
	t.Helper()
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	cp := &paho.Connect{ClientID: "c-" + user, KeepAlive: 30, CleanStart: true}
	if user != "" {
		cp.Username, cp.UsernameFlag, cp.Password, cp.PasswordFlag = user, true, []byte(user+"-password"), true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, cp)
	if ca == nil {
		t.Fatalf("no CONNACK: %v", err)
	}
	if ca.ReasonCode == 0 {
		t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
	}
	return c, ca.ReasonCode
}

func TestAWebPageCannotReachTheBrokerOverWebSocket(t *testing.T) {
	s := openDefault(t, func(c *conf.MQTT) { c.WSOrigins = []string{"https://dashboard.example"} })
	url := "ws://" + s.Addr(WS).String() + "/"
	dial := func(origin string) (*websocket.Conn, *http.Response, error) {
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		return (&websocket.Dialer{Subprotocols: []string{"mqtt"}}).Dial(url, h)
	}
	t.Run("a page from another origin is refused before any MQTT", func(t *testing.T) {
		c, resp, err := dial("http://evil.example")
		if err == nil {
			c.Close()
			t.Fatal("the upgrade succeeded")
		}
		if resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("answer %v, want 403", resp)
		}
	})
	t.Run("a page from an allowed origin and a client without an origin must log in", func(t *testing.T) {
		for _, origin := range []string{"https://dashboard.example", ""} {
			ws, _, err := dial(origin)
			if err != nil {
				t.Fatalf("origin %q: %v", origin, err)
			}
			if _, code := pahoOver(t, wsconn.New(ws), ""); code != 0x86 {
				t.Errorf("origin %q: anonymous CONNECT over WebSocket answered %#x, want 0x86", origin, code)
			}
			ws, _, err = dial(origin)
			if err != nil {
				t.Fatal(err)
			}
			if _, code := pahoOver(t, wsconn.New(ws), "device1"); code != 0 {
				t.Errorf("origin %q: a device's login over WebSocket answered %#x", origin, code)
			}
		}
	})
}

// A port forward on the Vigil host makes a remote client look local. It
// may then do what anonymous clients may, which is not to command.
func TestAClientRelayedToLoopbackCannotDisarmOrCommand(t *testing.T) {
	s := openDefault(t, nil)
	// The relay: what `ssh -L` or socat would be.
	relay, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	go func() {
		for {
			c, err := relay.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", s.Addr(TCP).String())
			if err != nil {
				c.Close()
				continue
			}
			go func() { io.Copy(b, c); b.Close() }()
			go func() { io.Copy(c, b); c.Close() }()
		}
	}()
	conn, err := net.Dial("tcp", relay.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, code := pahoOver(t, conn, "")
	if code != 0 {
		t.Fatalf("anonymous refused on loopback: %#x", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, topic := range []string{"vigil/home/mode/set", "vigil/home/cam1/cmd", "vigil/agents/a-1/heartbeat", "vigil/home/alerts"} {
		pr, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte("disarm")})
		if err == nil || pr == nil || pr.ReasonCode != 0x87 {
			t.Errorf("anonymous publish to %s: %v %v, want refused 0x87", topic, pr, err)
		}
	}
	for _, topic := range []string{"sensors/temperature", "vigil/home/dev1/telemetry", "vigil/home/cam1/stream"} {
		if _, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(`{"value": 1}`)}); err != nil {
			t.Errorf("anonymous publish to %s: %v", topic, err)
		}
	}
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "vigil/#", QoS: 1}, {Topic: "#", QoS: 1}}})
	if err != nil && sa == nil {
		t.Fatal(err)
	}
	if len(sa.Reasons) != 2 || sa.Reasons[0] != 1 || sa.Reasons[1] != 0x87 {
		t.Errorf("anonymous SUBSCRIBE vigil/# and #: %v, want granted and refused", sa.Reasons)
	}
}

func TestAnonymousClientsAreNeverGivenVigilsCommands(t *testing.T) {
	for _, p := range []string{"#", "vigil/#", "vigil/+/mode/set", "vigil/+/+/+"} {
		c := conf.New().MQTT
		c.Listen, c.WSListen, c.Persistence = "127.0.0.1:0", "", false
		c.AnonymousPublish = []string{"sensors/#", p}
		_, err := Open(Config{MQTT: c, DataDir: t.TempDir(), NoRetain: []string{"vigil/+/mode/set", "vigil/+/+/cmd", "vigil/agents/+/cmd"}},
			roleUsers{}, slog.New(slog.DiscardHandler), nil)
		if err == nil || !strings.Contains(err.Error(), "mqtt.anonymous_publish") {
			t.Errorf("anonymous_publish %q: %v", p, err)
		}
	}
}
