package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/testkit"
	"github.com/vigilhq/vigil/internal/users"
)

// The tests connect from two loopback addresses, 127.0.0.1 and 127.0.0.2
// (Linux routes all of 127/8 to lo), so that blocking one can be told from
// blocking everyone.
const (
	here  = "127.0.0.1"
	there = "127.0.0.2"
)

const (
	devUser     = "dev"
	devPassword = "right-password-1"
)

// oneUser knows a single user, an admin.
type oneUser struct{}

func (oneUser) Authenticate(_ context.Context, name, password string) (*users.User, error) {
	if name != devUser || password != devPassword {
		return nil, errors.New("wrong username or password")
	}
	return &users.User{Name: devUser, Role: users.RoleAdmin, Publish: []string{"#"}, Subscribe: []string{"#"}}, nil
}

// blockRecorder records OnBlock calls.
type blockRecorder struct {
	mu     sync.Mutex
	blocks []Block
}

func (r *blockRecorder) record(b Block) {
	r.mu.Lock()
	r.blocks = append(r.blocks, b)
	r.mu.Unlock()
}

func (r *blockRecorder) get() []Block {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Block(nil), r.blocks...)
}

// openGuarded starts a broker on 0.0.0.0 (reachable from both loopback
// addresses) with no exempt addresses, metrics in a registry of its own
// and OnBlock recorded. The listener is not loopback, so every client
// authenticates.
func openGuarded(t *testing.T, mutate func(*conf.MQTT)) (*Server, *prometheus.Registry, *blockRecorder) {
	t.Helper()
	c := conf.New().MQTT
	c.Listen, c.WSListen, c.Persistence = "0.0.0.0:0", "", false
	c.BlockExempt = nil
	if mutate != nil {
		mutate(&c)
	}
	reg := prometheus.NewRegistry()
	s, err := Open(Config{MQTT: c, DataDir: t.TempDir()}, oneUser{}, slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	rec := &blockRecorder{}
	s.SetOnBlock(rec.record)
	return s, reg, rec
}

// port returns the TCP listener's port.
func port(s *Server) int { return s.Addr(TCP).(*net.TCPAddr).Port }

func dialFrom(t *testing.T, from string, s *Server) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	conn, err := d.Dial("tcp", net.JoinHostPort(here, fmt.Sprint(port(s))))
	if err != nil {
		t.Fatalf("dial from %s: %v", from, err)
	}
	return conn
}

// client is an MQTT 5 connection made with paho.
type client struct {
	*paho.Client
	disconnect chan byte // the reason code of a server DISCONNECT
}

// connect5 connects with MQTT 5 from a local address. It returns the
// CONNACK reason code (0 on success) and, on success, the client, which
// is disconnected at the end of the test.
func connect5(t *testing.T, from string, s *Server, clientID, user, password string) (*client, byte) {
	t.Helper()
	cl := &client{disconnect: make(chan byte, 1)}
	cl.Client = paho.NewClient(paho.ClientConfig{
		Conn: dialFrom(t, from, s),
		OnServerDisconnect: func(d *paho.Disconnect) {
			select {
			case cl.disconnect <- d.ReasonCode:
			default:
			}
		},
	})
	cp := &paho.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: true}
	if user != "" {
		cp.Username, cp.UsernameFlag, cp.Password, cp.PasswordFlag = user, true, []byte(password), true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ca, err := cl.Connect(ctx, cp)
	if ca == nil {
		t.Fatalf("connect from %s as %q: no CONNACK: %v", from, clientID, err)
	}
	if ca.ReasonCode != 0 {
		return nil, ca.ReasonCode
	}
	t.Cleanup(func() { cl.Disconnect(&paho.Disconnect{}) })
	return cl, 0
}

// connect3 connects with MQTT 3.1.1 (paho.golang speaks only 5) and returns
// the CONNACK return code.
func connect3(t *testing.T, from string, s *Server, clientID, user, password string) byte {
	t.Helper()
	conn := dialFrom(t, from, s)
	defer conn.Close()
	str := func(b *bytes.Buffer, v string) {
		b.WriteByte(byte(len(v) >> 8))
		b.WriteByte(byte(len(v)))
		b.WriteString(v)
	}
	var body bytes.Buffer
	str(&body, "MQTT")
	body.Write([]byte{4, 0xC2, 0, 30}) // level 4; username, password, clean session; keepalive 30 s
	str(&body, clientID)
	str(&body, user)
	str(&body, password)
	pkt := append([]byte{0x10, byte(body.Len())}, body.Bytes()...)
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(pkt); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(conn, ack); err != nil {
		t.Fatalf("MQTT 3.1.1 CONNACK: %v", err)
	}
	if ack[0] != 0x20 || ack[1] != 2 {
		t.Fatalf("not a CONNACK: % x", ack)
	}
	return ack[3]
}

// alive checks that a client can still publish at QoS 1.
func alive(cl *client) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := cl.Publish(ctx, &paho.Publish{Topic: "t/alive", QoS: 1, Payload: []byte("x")})
	return err
}

// waitDisconnect waits for a server DISCONNECT and returns its reason code.
func waitDisconnect(t *testing.T, cl *client, what string) byte {
	t.Helper()
	select {
	case code := <-cl.disconnect:
		<-cl.Done()
		return code
	case <-time.After(10 * time.Second):
		t.Fatalf("%s was not disconnected", what)
		return 0
	}
}

const (
	codeBadLogin   = 0x86 // MQTT 5 "bad user name or password"
	codeBanned     = 0x8A // MQTT 5 "banned"
	codeAdminKick  = 0x98 // MQTT 5 DISCONNECT "administrative action"
	codeRateTooHot = 0x96 // MQTT 5 DISCONNECT "message rate too high"
	code3NotAuthed = 5    // MQTT 3.1.1 "not authorised"
)

func TestAnAddressThatFailsToLogInRepeatedlyIsBlocked(t *testing.T) {
	s, reg, rec := openGuarded(t, func(c *conf.MQTT) { c.BlockAuthFailures = 3 })

	before, code := connect5(t, here, s, "before", devUser, devPassword)
	if code != 0 {
		t.Fatalf("right password refused: %#x", code)
	}
	elsewhere, _ := connect5(t, there, s, "elsewhere", devUser, devPassword)
	for i := range 3 {
		if _, code := connect5(t, here, s, fmt.Sprint("guess", i), devUser, "wrong-password"); code != codeBadLogin {
			t.Fatalf("failure %d: CONNACK %#x, want bad user name or password", i+1, code)
		}
	}

	if _, code := connect5(t, here, s, "after", devUser, devPassword); code != codeBanned {
		t.Errorf("MQTT 5 with the right password after 3 failures: CONNACK %#x, want banned (0x8A)", code)
	}
	if code := connect3(t, here, s, "after3", devUser, devPassword); code != code3NotAuthed {
		t.Errorf("MQTT 3.1.1 with the right password after 3 failures: return code %d, want 5 (not authorised)", code)
	}
	if code := waitDisconnect(t, before, "a client connected from the blocked address"); code != codeAdminKick {
		t.Errorf("DISCONNECT reason %#x, want administrative action (0x98)", code)
	}

	t.Run("other addresses are not blocked", func(t *testing.T) {
		if _, code := connect5(t, there, s, "there", devUser, devPassword); code != 0 {
			t.Errorf("connect from %s: CONNACK %#x", there, code)
		}
		if err := alive(elsewhere); err != nil {
			t.Errorf("a client from %s was disturbed: %v", there, err)
		}
	})
	t.Run("Vigil's own login still connects from the blocked address", func(t *testing.T) {
		user, pw := s.InternalCredentials()
		if _, code := connect5(t, here, s, "vigil-self", user, pw); code != 0 {
			t.Errorf("CONNACK %#x", code)
		}
	})
	t.Run("Blocks lists the block and OnBlock reported it once", func(t *testing.T) {
		bs := s.Blocks()
		if len(bs) != 1 {
			t.Fatalf("Blocks() = %+v, want one", bs)
		}
		b := bs[0]
		if b.Kind != KindAddress || b.Key != here || b.Reason != ReasonAuthFailures || b.Count != 3 ||
			b.WindowS != conf.New().MQTT.BlockWindow.Seconds() || b.Username != devUser || b.Address != here {
			t.Errorf("block = %+v", b)
		}
		if d := b.Until.Sub(b.Since); d != conf.New().MQTT.BlockDuration {
			t.Errorf("block lasts %v, want mqtt.block_duration", d)
		}
		if got := rec.get(); len(got) != 1 || got[0] != b {
			t.Errorf("OnBlock calls = %+v, want the one block", got)
		}
	})
	t.Run("metrics count failures, blocks and refused connects", func(t *testing.T) {
		for _, m := range []struct {
			name string
			c    prometheus.Collector
			want float64
		}{
			{"vigil_mqtt_auth_failures_total", s.guard.authFailures, 3},
			{"vigil_mqtt_blocks_total{address,auth_failures}", s.guard.blocksTotal.WithLabelValues(KindAddress, ReasonAuthFailures), 1},
			{"vigil_mqtt_blocks_total{client,flood}", s.guard.blocksTotal.WithLabelValues(KindClient, ReasonFlood), 0},
			{"vigil_mqtt_blocked_connects_total", s.guard.blockedConnects, 2},
		} {
			if got := testutil.ToFloat64(m.c); got != m.want {
				t.Errorf("%s = %v, want %v", m.name, got, m.want)
			}
		}
		// A gauge computed when scraped: read it as scraped.
		if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP vigil_mqtt_blocks_active MQTT blocks in force now.
# TYPE vigil_mqtt_blocks_active gauge
vigil_mqtt_blocks_active 1
`), "vigil_mqtt_blocks_active"); err != nil {
			t.Error(err)
		}
	})
	t.Run("Unblock lifts it", func(t *testing.T) {
		if !s.Unblock(here) {
			t.Fatal("Unblock reported no block")
		}
		if s.Unblock(here) {
			t.Error("a second Unblock reported a block")
		}
		if bs := s.Blocks(); len(bs) != 0 {
			t.Errorf("Blocks() after Unblock = %+v", bs)
		}
		if _, code := connect5(t, here, s, "lifted", devUser, devPassword); code != 0 {
			t.Errorf("connect after Unblock: CONNACK %#x", code)
		}
	})
}

func TestBlocksExpireByThemselves(t *testing.T) {
	const duration = 500 * time.Millisecond
	s, _, _ := openGuarded(t, func(c *conf.MQTT) { c.BlockAuthFailures, c.BlockDuration = 2, duration })
	for range 2 {
		connect5(t, here, s, "guess", devUser, "wrong-password")
	}
	if _, code := connect5(t, here, s, "after", devUser, devPassword); code != codeBanned {
		t.Fatalf("right password after 2 failures: CONNACK %#x, want banned", code)
	}
	bs := s.Blocks()
	if len(bs) != 1 {
		t.Fatalf("Blocks() = %+v", bs)
	}
	testkit.WaitFor(t, 10*time.Second, "a connect to be let in after the block's end", func() bool {
		_, code := connect5(t, here, s, "after", devUser, devPassword)
		return code == 0
	})
	if now := time.Now(); now.Before(bs[0].Until) {
		t.Errorf("connected at %v, before the block's end %v", now, bs[0].Until)
	}
	if bs := s.Blocks(); len(bs) != 0 {
		t.Errorf("Blocks() after expiry = %+v", bs)
	}
}

// flood publishes at QoS 0 as fast as it can until the server closes the
// connection (or a bound is reached). It returns the DISCONNECT reason code
// if the client saw one: a client still writing may not, since the server
// closes a connection with unread data in it, which resets it.
func flood(t *testing.T, cl *client) (code byte, seen bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	payload := []byte(`{"v":1}`)
	for i := 0; i < 1_000_000 && ctx.Err() == nil; i++ {
		if _, err := cl.Publish(ctx, &paho.Publish{Topic: "sensors/flood", Payload: payload}); err != nil {
			break
		}
	}
	select {
	case <-cl.Done():
	case <-ctx.Done():
		t.Fatal("the flooder was not disconnected")
	}
	select {
	case code := <-cl.disconnect:
		return code, true
	case <-time.After(100 * time.Millisecond): // OnServerDisconnect runs in its own goroutine
		return 0, false
	}
}

func TestAFloodingClientIsDisconnectedAndBlocked(t *testing.T) {
	s, _, rec := openGuarded(t, func(c *conf.MQTT) { c.BlockFloodMessages = 100 })
	var received atomic.Int64
	if err := s.Subscribe("sensors/normal", func(string, []byte, string) { received.Add(1) }); err != nil {
		t.Fatal(err)
	}
	bystander, _ := connect5(t, here, s, "bystander", devUser, devPassword)
	normal, _ := connect5(t, there, s, "normal", devUser, devPassword)
	flooder, code := connect5(t, here, s, "flooder", devUser, devPassword)
	if code != 0 {
		t.Fatalf("CONNACK %#x", code)
	}

	if code, seen := flood(t, flooder); seen && code != codeRateTooHot {
		t.Errorf("flooder's DISCONNECT reason %#x, want message rate too high (0x96)", code)
	}
	if code := waitDisconnect(t, bystander, "another client of the flooder's address"); code != codeAdminKick {
		t.Errorf("bystander's DISCONNECT reason %#x, want administrative action", code)
	}

	t.Run("a normal client keeps working", func(t *testing.T) {
		for range 5 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := normal.Publish(ctx, &paho.Publish{Topic: "sensors/normal", QoS: 1, Payload: []byte("1")})
			cancel()
			if err != nil {
				t.Fatalf("normal client: %v", err)
			}
		}
		testkit.WaitFor(t, 5*time.Second, "the in-process subscriber to get 5 messages", func() bool { return received.Load() >= 5 })
		if n := received.Load(); n != 5 {
			t.Errorf("in-process subscriber got %d of 5 messages", n)
		}
	})
	t.Run("its client id is blocked from any address", func(t *testing.T) {
		if _, code := connect5(t, there, s, "flooder", devUser, devPassword); code != codeBanned {
			t.Errorf("flooder's id from %s: CONNACK %#x, want banned", there, code)
		}
	})
	t.Run("its address is blocked for any client id", func(t *testing.T) {
		if _, code := connect5(t, here, s, "someone-else", devUser, devPassword); code != codeBanned {
			t.Errorf("another id from %s: CONNACK %#x, want banned", here, code)
		}
	})
	t.Run("two blocks, each reported once", func(t *testing.T) {
		bs := s.Blocks()
		if len(bs) != 2 {
			t.Fatalf("Blocks() = %+v, want the client id and the address", bs)
		}
		keys := map[string]string{}
		for _, b := range bs {
			keys[b.Kind] = b.Key
			if b.Reason != ReasonFlood || b.ClientID != "flooder" || b.Address != here || b.Count <= 300 || b.WindowS != 3 {
				t.Errorf("block = %+v", b)
			}
		}
		if keys[KindClient] != "flooder" || keys[KindAddress] != here {
			t.Errorf("blocked %v", keys)
		}
		if got := rec.get(); len(got) != 2 {
			t.Errorf("OnBlock called %d times, want 2: %+v", len(got), got)
		}
		for _, m := range []struct{ kind string }{{KindClient}, {KindAddress}} {
			if got := testutil.ToFloat64(s.guard.blocksTotal.WithLabelValues(m.kind, ReasonFlood)); got != 1 {
				t.Errorf("vigil_mqtt_blocks_total{%s,flood} = %v", m.kind, got)
			}
		}
	})
	t.Run("Unblock of the client id leaves the address blocked", func(t *testing.T) {
		if !s.Unblock("flooder") {
			t.Fatal("Unblock reported no block")
		}
		if _, code := connect5(t, there, s, "flooder", devUser, devPassword); code != 0 {
			t.Errorf("flooder's id from %s after Unblock: CONNACK %#x", there, code)
		}
		if _, code := connect5(t, here, s, "x", devUser, devPassword); code != codeBanned {
			t.Errorf("the address after unblocking the id: CONNACK %#x, want banned", code)
		}
	})
}

func TestExemptAddressesAreNeverBlocked(t *testing.T) {
	s, _, rec := openGuarded(t, func(c *conf.MQTT) {
		c.BlockAuthFailures, c.BlockFloodMessages = 2, 100
		c.BlockExempt = []string{"127.0.0.0/8"}
	})
	for range 5 {
		connect5(t, here, s, "guess", devUser, "wrong-password")
	}
	if _, code := connect5(t, here, s, "right", devUser, devPassword); code != 0 {
		t.Errorf("an exempt address was refused after 5 failures: CONNACK %#x", code)
	}
	cl, _ := connect5(t, here, s, "busy", devUser, devPassword)
	for range 2000 {
		cl.Publish(context.Background(), &paho.Publish{Topic: "sensors/busy", Payload: []byte("1")})
	}
	if err := alive(cl); err != nil {
		t.Errorf("a client of an exempt address was disconnected after 2000 quick messages: %v", err)
	}
	if bs := s.Blocks(); len(bs) != 0 {
		t.Errorf("Blocks() = %+v", bs)
	}
	if got := rec.get(); len(got) != 0 {
		t.Errorf("OnBlock called for %+v", got)
	}
	for _, m := range []struct {
		reason string
		want   float64
	}{{ReasonAuthFailures, 2}, {ReasonFlood, 1}} {
		if got := testutil.ToFloat64(s.guard.exempted.WithLabelValues(m.reason)); got != m.want {
			t.Errorf("vigil_mqtt_block_exempted_total{%s} = %v, want %v", m.reason, got, m.want)
		}
	}
	if got := testutil.ToFloat64(s.guard.authFailures); got != 5 {
		t.Errorf("vigil_mqtt_auth_failures_total = %v, want 5", got)
	}
}

func TestTheDefaultExemptsLoopbackAndIPv6CountsPer64(t *testing.T) {
	g := newGuard(conf.New().MQTT, nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for _, tt := range []struct {
		addr, key string
		exempt    bool
	}{
		{"127.0.0.1", "127.0.0.1", true},
		{"127.1.2.3", "127.1.2.3", true},
		{"::1", "::/64", true},
		{"::ffff:127.0.0.1", "127.0.0.1", true},
		{"10.0.0.1", "10.0.0.1", false},
		{"192.168.1.20", "192.168.1.20", false},
		{"2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64", false},
	} {
		cl := &mqtt.Client{Net: mqtt.ClientConnection{Remote: net.JoinHostPort(tt.addr, "1883")}}
		ip, ok := remoteIP(cl)
		if !ok {
			t.Fatalf("remoteIP(%s) failed", tt.addr)
		}
		if got := g.isExempt(ip); got != tt.exempt {
			t.Errorf("%s exempt = %v, want %v", tt.addr, got, tt.exempt)
		}
		if got := addressKey(ip); got != tt.key {
			t.Errorf("%s blocked as %q, want %q", tt.addr, got, tt.key)
		}
	}
}

func TestVigilsOwnLoginsAreNeverBlocked(t *testing.T) {
	s, _, _ := openGuarded(t, func(c *conf.MQTT) { c.BlockAuthFailures, c.BlockFloodMessages = 1, 100 })
	s.AddCredential("agent-1", "agent-password", &users.User{Name: "agent-1", Publish: []string{"#"}, Subscribe: []string{"#"}})
	user, pw := s.InternalCredentials()
	self, code := connect5(t, here, s, "vigil-self", user, pw)
	if code != 0 {
		t.Fatalf("internal login: CONNACK %#x", code)
	}
	agent, code := connect5(t, here, s, "agent-1", "agent-1", "agent-password")
	if code != 0 {
		t.Fatalf("agent login: CONNACK %#x", code)
	}
	for _, cl := range []*client{self, agent} {
		for range 2000 {
			cl.Publish(context.Background(), &paho.Publish{Topic: "sensors/own", Payload: []byte("1")})
		}
	}
	connect5(t, here, s, "guess", devUser, "wrong-password") // blocks the address
	if bs := s.Blocks(); len(bs) != 1 || bs[0].Reason != ReasonAuthFailures {
		t.Fatalf("Blocks() = %+v, want the failed login's block only", bs)
	}
	for name, cl := range map[string]*client{"internal": self, "agent": agent} {
		if err := alive(cl); err != nil {
			t.Errorf("%s client was disconnected: %v", name, err)
		}
	}
	if _, code := connect5(t, here, s, "agent-1b", "agent-1", "agent-password"); code != 0 {
		t.Errorf("agent login from the blocked address: CONNACK %#x", code)
	}
	if err := s.Publish("sensors/inline", []byte("1"), false, 0); err != nil {
		t.Errorf("in-process publish: %v", err)
	}
}

func TestBlockLogsNeverContainAPassword(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	c := conf.New().MQTT
	c.Listen, c.WSListen, c.Persistence, c.BlockExempt, c.BlockAuthFailures = "0.0.0.0:0", "", false, nil, 2
	s, err := Open(Config{MQTT: c, DataDir: t.TempDir()}, oneUser{},
		slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, &slog.HandlerOptions{Level: slog.LevelDebug})), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, pw := range []string{"secret-guess-1", "secret-guess-2"} {
		connect5(t, here, s, "guess", devUser, pw)
	}
	connect5(t, here, s, "after", devUser, devPassword)
	s.Close()
	mu.Lock()
	defer mu.Unlock()
	out := logs.String()
	if !strings.Contains(out, "mqtt address blocked") {
		t.Fatalf("no block logged:\n%s", out)
	}
	for _, pw := range []string{"secret-guess", devPassword} {
		if strings.Contains(out, pw) {
			t.Errorf("logs contain a password %q:\n%s", pw, out)
		}
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
