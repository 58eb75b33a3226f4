package broker

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/testkit"
	"github.com/vigilhq/vigil/internal/users"
)

// connectAs connects paho (MQTT 5) with a client id as user ("" for
// anonymous; password user+"-password", or password when given) and
// returns the client, whose server DISCONNECT reason arrives on the
// channel, and the CONNACK code.
func connectAs(t *testing.T, s *Server, clientID, user string, password ...string) (*paho.Client, chan byte, byte) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", s.Addr(TCP).String(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	kicked := make(chan byte, 1)
	c := paho.NewClient(paho.ClientConfig{Conn: conn, OnServerDisconnect: func(d *paho.Disconnect) { kicked <- d.ReasonCode }})
	cp := &paho.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: true}
	if user != "" {
		pw := user + "-password"
		if len(password) > 0 {
			pw = password[0]
		}
		cp.Username, cp.UsernameFlag, cp.Password, cp.PasswordFlag = user, true, []byte(pw), true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, cp)
	if ca == nil {
		t.Fatalf("connect %s as %q: no CONNACK: %v", clientID, user, err)
	}
	if ca.ReasonCode == 0 {
		t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
	}
	return c, kicked, ca.ReasonCode
}

func TestAClientIDBelongsToTheLoginThatHoldsIt(t *testing.T) {
	s := openDefault(t, nil)
	s.AddCredential("agent-a1", "agent-password-1", &users.User{Name: "agent-a1", Role: users.RoleDevice,
		Publish: []string{"vigil/agents/a1/#"}, Subscribe: []string{"vigil/agents/a1/cmd"}}, "vigil-agent-a1")

	victim, kicked, code := connectAs(t, s, "sensor-17", "device1")
	if code != 0 {
		t.Fatalf("device1 refused: %#x", code)
	}
	t.Run("another user cannot take a device's session over", func(t *testing.T) {
		for _, user := range []string{"admin1", "viewer1", ""} {
			if _, _, code := connectAs(t, s, "sensor-17", user); code != 0x85 {
				t.Errorf("%q taking over device1's client id: CONNACK %#x, want 0x85 (client identifier not valid)", user, code)
			}
		}
		select {
		case code := <-kicked:
			t.Fatalf("the device was disconnected (%#x)", code)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := victim.Publish(ctx, &paho.Publish{Topic: "vigil/home/device1/telemetry", QoS: 1, Payload: []byte(`{"value": 1}`)}); err != nil {
			t.Fatalf("the device's session was disturbed: %v", err)
		}
	})
	t.Run("the same login reconnecting takes its own session over", func(t *testing.T) {
		if _, _, code := connectAs(t, s, "sensor-17", "device1"); code != 0 {
			t.Fatalf("device1 reconnecting: CONNACK %#x", code)
		}
		select {
		case code := <-kicked:
			if code != 0x8E {
				t.Errorf("old session's DISCONNECT %#x, want 0x8E (session taken over)", code)
			}
		case <-time.After(5 * time.Second):
			t.Error("the old session was not taken over")
		}
	})
	t.Run("an agent's client id is its credential's alone, even while it is offline", func(t *testing.T) {
		for _, user := range []string{"admin1", "device1", ""} {
			if _, _, code := connectAs(t, s, "vigil-agent-a1", user); code != 0x85 {
				t.Errorf("%q using the agent's client id: CONNACK %#x, want 0x85", user, code)
			}
		}
		if _, _, code := connectAs(t, s, "something-else", "agent-a1", "agent-password-1"); code != 0x85 {
			t.Errorf("the agent's credential with another client id: CONNACK %#x, want 0x85", code)
		}
		if _, _, code := connectAs(t, s, "vigil-agent-a1", "agent-a1", "agent-password-1"); code != 0 {
			t.Errorf("the agent itself: CONNACK %#x", code)
		}
	})
	t.Run("MQTT 3.1.1 is told identifier rejected", func(t *testing.T) {
		if code := connect3(t, here, s, "vigil-agent-a1", "device1", "device1-password"); code != 2 {
			t.Errorf("CONNACK %d, want 2 (identifier rejected)", code)
		}
	})
}

// A flood blocks the flooding login's use of the client id, not the id
// for everyone: the id's owner is not locked out by what another user's
// session did with it.
func TestAFloodBlocksTheFloodersUseOfAClientIDOnly(t *testing.T) {
	s := openDefault(t, func(c *conf.MQTT) {
		c.BlockFloodMessages, c.BlockExempt = 100, nil
		c.ClientIDGrace = 0 // the id may change hands once its session ends: the block is what is tested
		c.AnonymousPublish = []string{"#"}
	})
	c, kicked, code := connectAs(t, s, "sensor-17", "")
	if code != 0 {
		t.Fatalf("anonymous refused: %#x", code)
	}
	flood(t, &client{Client: c, disconnect: kicked})
	if _, _, code := connectAs(t, s, "sensor-17", ""); code != codeBanned {
		t.Fatalf("the flooder again: CONNACK %#x, want banned", code)
	}
	// The address is blocked too; lift that block and keep the client's.
	for _, b := range s.Blocks() {
		if b.Kind == KindAddress {
			s.Unblock(b.Key)
		}
	}
	if _, _, code := connectAs(t, s, "sensor-17", "device1"); code != 0 {
		t.Errorf("the id's owner, another login: CONNACK %#x, want accepted", code)
	}
}

// A device that drops or reboots finds its client id free for it, and for
// nobody else, until mqtt.client_id_grace after it was last connected.
func TestNobodyGrabsAClientIDWhileItsDeviceReboots(t *testing.T) {
	s := openDefault(t, func(c *conf.MQTT) { c.ClientIDGrace = time.Hour })
	now := time.Now()
	var clock atomic.Int64
	clock.Store(now.UnixNano())
	fake := func() time.Time { return time.Unix(0, clock.Load()) }
	s.auth.now.Store(&fake)

	dev, _, code := connectAs(t, s, "sensor-17", "device1")
	if code != 0 {
		t.Fatalf("device refused: %#x", code)
	}
	dev.Disconnect(&paho.Disconnect{}) // it reboots
	testkit.WaitFor(t, 10*time.Second, "the device's session to end", func() bool { _, ok := s.mochi.Clients.Get("sensor-17"); return !ok })

	for _, user := range []string{"admin1", ""} {
		if _, _, code := connectAs(t, s, "sensor-17", user); code != 0x85 {
			t.Errorf("%q grabbing the rebooting device's id: CONNACK %#x, want 0x85", user, code)
		}
	}
	back, _, code := connectAs(t, s, "sensor-17", "device1")
	if code != 0 {
		t.Fatalf("the device coming back: CONNACK %#x", code)
	}
	back.Disconnect(&paho.Disconnect{}) // and goes for good
	testkit.WaitFor(t, 10*time.Second, "the device's session to end", func() bool { _, ok := s.mochi.Clients.Get("sensor-17"); return !ok })
	clock.Add(int64(2 * time.Hour)) // long gone: the id is free again
	if _, _, code := connectAs(t, s, "sensor-17", "admin1"); code != 0 {
		t.Errorf("the id two hours after its device was last seen: CONNACK %#x", code)
	}
}
