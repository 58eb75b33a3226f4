package broker

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/testkit"
	"github.com/vigilhq/vigil/internal/users"
)

// userStore is a users.Getter whose users a test changes.
type userStore struct {
	mu sync.Mutex
	m  map[string]*users.User
}

func (s *userStore) GetUser(_ context.Context, name string) (*users.User, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u, ok := s.m[name]; ok {
		c := *u
		return &c, nil
	}
	return nil, vigil.Errorf(vigil.ENotFound, "no user %q", name)
}

func (s *userStore) set(u *users.User) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u.Updated.IsZero() {
		u.Updated = time.Now()
	}
	s.m[u.Name] = u
}

func (s *userStore) remove(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, name)
}

func device(t *testing.T, name string) *users.User {
	h, err := users.HashPassword(name+"-password", 4)
	if err != nil {
		t.Fatal(err)
	}
	pub, sub := users.DefaultACL(users.RoleDevice)
	return &users.User{Name: name, Role: users.RoleDevice, PasswordHash: h, Publish: pub, Subscribe: sub}
}

// persistentSession connects as user with a session that outlives the
// connection and a last will on its own status, subscribed to its subtree.
func persistentSession(t *testing.T, s *Server, user string) (*paho.Client, chan byte, bool) {
	t.Helper()
	conn, err := net.Dial("tcp", s.Addr(TCP).String())
	if err != nil {
		t.Fatal(err)
	}
	kicked := make(chan byte, 1)
	c := paho.NewClient(paho.ClientConfig{Conn: conn, OnServerDisconnect: func(d *paho.Disconnect) { kicked <- d.ReasonCode }})
	expiry := uint32(3600)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: "session-" + user, KeepAlive: 30, CleanStart: false,
		Username: user, UsernameFlag: true, Password: []byte(user + "-password"), PasswordFlag: true,
		Properties:  &paho.ConnectProperties{SessionExpiryInterval: &expiry},
		WillMessage: &paho.WillMessage{Topic: "vigil/home/" + user + "/status", Payload: []byte("offline"), QoS: 1}})
	if err != nil || ca.ReasonCode != 0 {
		t.Fatalf("connect as %s: %v %v", user, ca, err)
	}
	if !ca.SessionPresent {
		if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "vigil/+/" + user + "/#", QoS: 1}}}); err != nil {
			t.Fatal(err)
		}
	}
	return c, kicked, ca.SessionPresent
}

func TestARemovedOrChangedUserLosesItsSessions(t *testing.T) {
	store := &userStore{m: map[string]*users.User{}}
	store.set(device(t, "dev2"))
	store.set(device(t, "dev3"))
	c := conf.New().MQTT
	c.Listen, c.WSListen, c.Persistence = "127.0.0.1:0", "", false
	verifier := users.NewVerifier(store, time.Minute, 4)
	s, err := Open(Config{MQTT: c, DataDir: t.TempDir()}, verifier, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	wills := make(chan string, 4)
	if err := s.Subscribe("vigil/+/+/status", func(topic string, _ []byte, _ string) { wills <- topic }); err != nil {
		t.Fatal(err)
	}

	_, kicked2, _ := persistentSession(t, s, "dev2")
	c3, kicked3, _ := persistentSession(t, s, "dev3")

	t.Run("a user removed elsewhere (vigil user remove) is disconnected at the next check", func(t *testing.T) {
		store.remove("dev2")
		verifier.Forget("dev2")
		s.checkSessions(context.Background(), verifier)
		select {
		case code := <-kicked2:
			if code != 0x98 {
				t.Errorf("DISCONNECT %#x, want 0x98 (administrative action)", code)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the removed user's session is still connected")
		}
		testkit.WaitFor(t, 10*time.Second, "its session to be gone", func() bool { _, ok := s.mochi.Clients.Get("session-dev2"); return !ok })
		if _, _, code := connectAs(t, s, "session-dev2", "dev2"); code != 0x86 {
			t.Errorf("the removed user logging in again: CONNACK %#x", code)
		}
	})
	t.Run("a user whose ACL changed must log in again and is not given its old session", func(t *testing.T) {
		u := device(t, "dev3")
		u.Publish = []string{"vigil/+/dev3/telemetry", "vigil/+/dev3/status"} // no longer meta, motion...
		u.Updated = time.Now().Add(time.Second)
		store.set(u)
		s.checkSessions(context.Background(), verifier)
		select {
		case <-kicked3:
		case <-time.After(5 * time.Second):
			t.Fatal("the changed user's session is still connected")
		}
		<-c3.Done()
		testkit.WaitFor(t, 10*time.Second, "its session to be gone", func() bool { _, ok := s.mochi.Clients.Get("session-dev3"); return !ok })
		if _, _, present := persistentSession(t, s, "dev3"); present {
			t.Error("the old session, with subscriptions granted under the old ACL, was resumed")
		}
	})
	t.Run("no last will of a revoked login is published", func(t *testing.T) {
		s.Publish("vigil/home/marker/status", []byte("x"), false, 0)
		select {
		case topic := <-wills:
			if topic != "vigil/home/marker/status" {
				t.Errorf("a revoked login's will was published on %s", topic)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the marker did not arrive")
		}
	})
}

// Sessions of a user that logged in again since it changed stay; only the
// stale ones end.
func TestOnlyTheSessionsOfTheOldUserEnd(t *testing.T) {
	store := &userStore{m: map[string]*users.User{}}
	store.set(device(t, "dev4"))
	c := conf.New().MQTT
	c.Listen, c.WSListen, c.Persistence = "127.0.0.1:0", "", false
	verifier := users.NewVerifier(store, time.Minute, 4)
	s, err := Open(Config{MQTT: c, DataDir: t.TempDir()}, verifier, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, oldKicked, code := connectAs(t, s, "old", "dev4")
	if code != 0 {
		t.Fatalf("CONNACK %#x", code)
	}
	u := device(t, "dev4") // a new password
	u.Updated = time.Now().Add(time.Second)
	store.set(u)
	verifier.Forget("dev4")
	_, newKicked, code := connectAs(t, s, "new", "dev4")
	if code != 0 {
		t.Fatalf("CONNACK %#x", code)
	}
	for range 3 { // whichever session the check meets first
		s.checkSessions(context.Background(), verifier)
	}
	select {
	case <-oldKicked:
	case <-time.After(5 * time.Second):
		t.Fatal("the session of the old user is still connected")
	}
	select {
	case code := <-newKicked:
		t.Fatalf("the session logged in since was ended (%#x)", code)
	default:
	}
}
