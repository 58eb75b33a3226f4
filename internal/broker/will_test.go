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
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/users"
)

// roleUsers knows one user of each role, named after it; the password is
// the name + "-password".
type roleUsers struct{}

func (roleUsers) Authenticate(_ context.Context, name, password string) (*users.User, error) {
	for _, role := range users.Roles {
		if name == role+"1" && password == name+"-password" {
			pub, sub := users.DefaultACL(role)
			return &users.User{Name: name, Role: role, Publish: pub, Subscribe: sub}, nil
		}
	}
	return nil, errors.New("wrong username or password")
}

// openRoles starts a broker on loopback (anonymous allowed) with roleUsers
// and Vigil's command topics as NoRetain.
func openRoles(t *testing.T) *Server {
	t.Helper()
	c := conf.New().MQTT
	c.Listen, c.WSListen, c.Persistence = "127.0.0.1:0", "", false
	s, err := Open(Config{MQTT: c, DataDir: t.TempDir(), NoRetain: []string{"vigil/+/mode/set", "vigil/+/+/cmd", "vigil/agents/+/cmd"}},
		roleUsers{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// connectWithWill sends a CONNECT with a last will over a raw socket and
// returns the CONNACK's code and the connection (closed at the end of the
// test).
func connectWithWill(t *testing.T, addr string, version byte, user, willTopic string, retain bool) (byte, net.Conn) {
	t.Helper()
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: version,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Keepalive: 30, Clean: true, ClientIdentifier: "will-" + user,
			WillFlag: true, WillTopic: willTopic, WillPayload: []byte("disarm"), WillQos: 1, WillRetain: retain},
	}
	if version == 4 {
		pk.Connect.ClientIdentifier += "-3"
	}
	if user != "" {
		pk.Connect.UsernameFlag, pk.Connect.Username = true, []byte(user)
		pk.Connect.PasswordFlag, pk.Connect.Password = true, []byte(user+"-password")
	}
	var b bytes.Buffer
	if err := pk.ConnectEncode(&b); err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	hb, body, err := readFrame(conn)
	if err != nil || hb>>4 != packets.Connack || len(body) < 2 {
		t.Fatalf("CONNACK: %#x % x %v", hb, body, err)
	}
	conn.SetDeadline(time.Time{})
	return body[1], conn
}

func TestALastWillMustBeAMessageTheClientCouldPublish(t *testing.T) {
	s := openRoles(t)
	addr := s.Addr(TCP).String()

	// Vigil's own view of every topic: a will that gets out shows here.
	seen := make(chan string, 64)
	user, password := s.InternalCredentials()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	w := paho.NewClient(paho.ClientConfig{Conn: conn})
	w.AddOnPublishReceived(func(pr paho.PublishReceived) (bool, error) {
		seen <- pr.Packet.Topic
		return true, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := w.Connect(ctx, &paho.Connect{ClientID: "vigil-watch", CleanStart: true, KeepAlive: 30,
		Username: user, UsernameFlag: true, Password: []byte(password), PasswordFlag: true}); err != nil {
		t.Fatal(err)
	}
	defer w.Disconnect(&paho.Disconnect{})
	if _, err := w.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}

	refused := []struct {
		name, user, topic string
		retain            bool
		code5             byte
	}{
		{"a device cannot disarm a site with its will", "device1", "vigil/site1/mode/set", false, 0x87},
		{"a device cannot command a camera to stream elsewhere", "device1", "vigil/site1/cam1/cmd", false, 0x87},
		{"a device cannot forge another device's reading", "device1", "vigil/site1/device2/telemetry", false, 0x87},
		{"a device cannot forge another device's retained meta", "device1", "vigil/site1/device2/meta", true, 0x87},
		{"a device cannot command an agent", "device1", "vigil/agents/a-1/cmd", false, 0x87},
		{"a device cannot forge an agent's state", "device1", "vigil/agents/a-1/state", false, 0x87},
		{"a device cannot write the paper's legacy topic", "device1", "sensors/temperature", false, 0x87},
		{"a viewer, who may publish nothing, cannot publish through a will", "viewer1", "vigil/site1/viewer1/status", false, 0x87},
		{"nobody may leave a retained disarm, even with full access", "", "vigil/site1/mode/set", true, 0x87},
		{"nobody may leave a retained camera command", "admin1", "vigil/site1/cam1/cmd", true, 0x87},
		{"a will topic with a wildcard is refused", "admin1", "vigil/#", false, 0x90},
	}
	for _, c := range refused {
		for _, v := range []byte{4, 5} {
			want := c.code5
			if v == 4 {
				want = 5 // MQTT 3.1.1 "not authorised"
			}
			if code, _ := connectWithWill(t, addr, v, c.user, c.topic, c.retain); code != want {
				t.Errorf("%s (MQTT %d): CONNACK %#x, want %#x", c.name, map[byte]int{4: 3, 5: 5}[v], code, want)
			}
		}
	}

	// A device's will on its own status topic is accepted, and published
	// when its connection drops.
	code, devConn := connectWithWill(t, addr, 5, "device1", "vigil/site1/device1/status", true)
	if code != 0 {
		t.Fatalf("a device's will on its own status was refused: %#x", code)
	}
	devConn.Close()
	for {
		select {
		case topic := <-seen:
			if topic != "vigil/site1/device1/status" {
				t.Fatalf("a refused will was published: %s", topic)
			}
			return
		case <-time.After(5 * time.Second):
			t.Fatal("the device's own will was not published")
		}
	}
}

func TestNobodyButVigilLeavesARetainedCommand(t *testing.T) {
	s := openRoles(t)
	for _, c := range []struct {
		version, qos byte
		want         string
	}{
		{5, 1, "PUBACK 0x87"},
		{5, 2, "PUBREC 0x87"},
		{4, 1, "the connection closed"},
	} {
		code, conn := connectWithWill(t, s.Addr(TCP).String(), c.version, "admin1", "vigil/site1/admin1/status", false)
		if code != 0 {
			t.Fatalf("connect: %#x", code)
		}
		// PUBLISH, retained, "disarm" to vigil/site1/mode/set.
		var body bytes.Buffer
		mqttString(&body, "vigil/site1/mode/set")
		body.Write([]byte{0, 1})
		if c.version == 5 {
			body.WriteByte(0) // no properties
		}
		body.WriteString("disarm")
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		conn.Write(append([]byte{0x31 | c.qos<<1, byte(body.Len())}, body.Bytes()...))
		hb, ack, err := readFrame(conn)
		got := "the connection closed"
		if err == nil {
			got = map[byte]string{0x40: "PUBACK", 0x50: "PUBREC"}[hb]
			if len(ack) >= 3 {
				got += fmt.Sprintf(" %#02x", ack[2])
			}
		}
		if got != c.want {
			t.Errorf("MQTT %d QoS %d: answer %s (% x), want %s", map[byte]int{4: 3, 5: 5}[c.version], c.qos, got, ack, c.want)
		}
	}
	if _, ok := s.mochi.Topics.Retained.Get("vigil/site1/mode/set"); ok {
		t.Error("the retained disarm was kept")
	}
	// Vigil itself may.
	if err := s.Publish("vigil/site1/cam1/cmd", []byte("{}"), true, 1); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.mochi.Topics.Retained.Get("vigil/site1/cam1/cmd"); !ok {
		t.Error("Vigil's own retained message was refused")
	}
}

// The self-audit's client id prefix marks its probes only while it runs:
// the same prefix afterwards (read off an audit report, say) is a client
// like any other, its wrong passwords news.
func TestTheSelfAuditPrefixMeansNothingOnceTheAuditEnds(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	logs := &lockedWriter{w: &buf, mu: &mu}
	c := conf.New().MQTT
	c.Listen, c.WSListen, c.Persistence = "127.0.0.1:0", "", false
	s, err := Open(Config{MQTT: c, DataDir: t.TempDir()}, roleUsers{}, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	prefix := s.BeginSelfAudit()
	if _, _, code := connectAs(t, s, prefix+"-guess-1", "admin1", "wrong"); code != 0x86 {
		t.Fatalf("CONNACK %#x", code)
	}
	s.EndSelfAudit()
	if _, _, code := connectAs(t, s, prefix+"-guess-2", "admin1", "wrong"); code != 0x86 {
		t.Fatalf("CONNACK %#x", code)
	}
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	if !strings.Contains(out, `level=DEBUG msg="self-audit probe refused: wrong username or password"`) ||
		!strings.Contains(out, `level=INFO msg="client refused: wrong username or password"`) || !strings.Contains(out, prefix+"-guess-2") {
		t.Errorf("during the audit a probe, after it a client; the log:\n%s", out)
	}
	if refused, _ := s.TakeSelfAuditCounts(); refused != 1 {
		t.Errorf("self-audit refusals counted: %d, want 1", refused)
	}
}

// A client refused for its will or its client id after a right password
// can try again and again cheaply: the log says so once a minute, not once
// a try.
func TestRepeatedRefusalsAfterARightPasswordDoNotFloodTheLog(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	c := conf.New().MQTT
	c.Listen, c.WSListen, c.Persistence = "127.0.0.1:0", "", false
	s, err := Open(Config{MQTT: c, DataDir: t.TempDir()}, roleUsers{}, slog.New(slog.NewTextHandler(&lockedWriter{w: &buf, mu: &mu}, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for range 50 {
		if code, _ := connectWithWill(t, s.Addr(TCP).String(), 5, "device1", "vigil/home/mode/set", false); code != 0x87 {
			t.Fatalf("CONNACK %#x", code)
		}
	}
	mu.Lock()
	n := strings.Count(buf.String(), "its last will is on a topic it may not publish to")
	mu.Unlock()
	if n != 1 {
		t.Errorf("%d log lines for 50 refused wills", n)
	}
}
