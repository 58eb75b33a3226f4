package broker

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/testpeer"
	"github.com/vigilhq/vigil/internal/users"
)

// Regression tests for what the Eclipse Paho interoperability suite
// (eclipse-paho/paho.mqtt.testing, interoperability/client_test5.py and
// client_test.py) found, each against a live broker over a raw socket, so
// that every byte the broker sends is seen. docs/conformance.md lists the
// suite's results.

// Packet types, as the high nibble of a packet's first byte.
const (
	typConnack  = 2
	typPublish  = 3
	typPuback   = 4
	typPubrec   = 5
	typPubrel   = 6
	typPubcomp  = 7
	typSuback   = 9
	typUnsuback = 11
	typPingresp = 13
)

// wire is an MQTT client over a raw socket, speaking version v (4 for
// 3.1.1, 5), that keeps every packet the broker sends.
type wire struct {
	t    *testing.T
	conn net.Conn
	v    byte
	id   uint16
}

func dialWire(t *testing.T, s *Server, v byte) *wire {
	t.Helper()
	conn := dialFrom(t, here, s)
	t.Cleanup(func() { conn.Close() })
	return &wire{t: t, conn: conn, v: v}
}

// varint is MQTT's variable byte integer, which is LEB128 (as
// encoding/binary's uvarint) up to its four bytes.
func varintBytes(n int) []byte { return binary.AppendUvarint(nil, uint64(n)) }

func (w *wire) send(first byte, body []byte) {
	w.t.Helper()
	w.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := w.conn.Write(append(append([]byte{first}, varintBytes(len(body))...), body...)); err != nil {
		w.t.Fatalf("write: %v", err)
	}
}

// next returns the broker's next packet: its first byte and its body.
func (w *wire) next() (byte, []byte) {
	w.t.Helper()
	w.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	first, body, err := readFrame(w.conn)
	if err != nil {
		w.t.Fatalf("read: %v", err)
	}
	return first, body
}

// expect returns the body of the broker's next packet, which must be of
// type typ.
func (w *wire) expect(typ byte, what string) []byte {
	w.t.Helper()
	first, body := w.next()
	if first>>4 != typ {
		w.t.Fatalf("%s: got packet type %d (% x), want %d", what, first>>4, body, typ)
	}
	return body
}

// props is an MQTT 5 property block (its length first); empty for 3.1.1.
func (w *wire) props(p []byte) []byte {
	if w.v < 5 {
		return nil
	}
	return append(varintBytes(len(p)), p...)
}

// userProperty is MQTT 5 property 0x26.
func userProperty(k, v string) []byte {
	var b bytes.Buffer
	b.WriteByte(0x26)
	mqttString(&b, k)
	mqttString(&b, v)
	return b.Bytes()
}

// connect logs in (anonymously when user is empty) and returns the
// CONNACK's body.
func (w *wire) connect(clientID, user, password string) []byte {
	w.t.Helper()
	var b bytes.Buffer
	mqttString(&b, "MQTT")
	flags := byte(0x02) // clean start
	if user != "" {
		flags |= 0xC0
	}
	b.Write([]byte{w.v, flags, 0, 30})
	b.Write(w.props(nil))
	mqttString(&b, clientID)
	if user != "" {
		mqttString(&b, user)
		mqttString(&b, password)
	}
	w.send(0x10, b.Bytes())
	return w.expect(typConnack, "CONNACK")
}

func (w *wire) nextID() uint16 {
	w.id++
	return w.id
}

// subscribe sends one SUBSCRIBE with the filters, all at qos, and returns
// the SUBACK's body.
func (w *wire) subscribe(qos byte, filters ...string) []byte {
	w.t.Helper()
	id := w.nextID()
	b := bytes.NewBuffer([]byte{byte(id >> 8), byte(id)})
	b.Write(w.props(nil))
	for _, f := range filters {
		mqttString(b, f)
		b.WriteByte(qos)
	}
	w.send(0x82, b.Bytes())
	return w.expect(typSuback, "SUBACK")
}

// publish sends a PUBLISH with the MQTT 5 properties p (ignored for 3.1.1)
// and returns its packet id (0 at QoS 0).
func (w *wire) publish(topic, payload string, qos byte, retain bool, p []byte) uint16 {
	w.t.Helper()
	var b bytes.Buffer
	mqttString(&b, topic)
	var id uint16
	if qos > 0 {
		id = w.nextID()
		b.Write([]byte{byte(id >> 8), byte(id)})
	}
	b.Write(w.props(p))
	b.WriteString(payload)
	first := byte(0x30) | qos<<1
	if retain {
		first |= 1
	}
	w.send(first, b.Bytes())
	return id
}

// ackLength checks an acknowledgement's body: for 3.1.1 exactly the packet
// id; for 5 the packet id, then at most a reason code, and no properties
// unless reasons allows them (a refusal may carry a reason string).
func (w *wire) ackLength(what string, body []byte, id uint16) {
	w.t.Helper()
	if len(body) < 2 || uint16(body[0])<<8|uint16(body[1]) != id {
		w.t.Fatalf("%s: body % x, want packet id %d first", what, body, id)
	}
	switch {
	case w.v < 5 && len(body) != 2:
		w.t.Errorf("%s to an MQTT 3.1.1 client: remaining length %d (% x), want 2 (MQTT 3.1.1 section 3.4.1)", what, len(body), body)
	case w.v == 5 && len(body) > 3 && body[2] < 0x80:
		w.t.Errorf("%s: remaining length %d (% x): a successful acknowledgement carries properties", what, len(body), body)
	}
}

// An acknowledgement answers its PUBLISH with a reason code and, at most,
// a reason string and user properties of its own (MQTT 5 sections 3.4.2.2,
// 3.5.2.2 and 3.7.2.2); mochi copied the PUBLISH's properties into it,
// which Paho's test client refuses (client_test5.py test_retained_message
// and test_user_properties: "Puback packet is wrong length 18").
func TestAcknowledgementsDoNotEchoThePublishsProperties(t *testing.T) {
	s := open(t, nil)
	w := dialWire(t, s, 5)
	if ack := w.connect("props", "", ""); ack[1] != 0 {
		t.Fatalf("CONNACK % x", ack)
	}
	p := append(append(userProperty("a", "2"), userProperty("c", "3")...), 0x01, 1, 0x03, 0, 4, 't', 'e', 'x', 't') // and a payload format and content type
	for _, retain := range []bool{false, true} {
		id := w.publish("fromb/qos 1", "qos 1", 1, retain, p)
		w.ackLength(fmt.Sprintf("PUBACK (retain %v)", retain), w.expect(typPuback, "PUBACK"), id)

		id = w.publish("fromb/qos2", "qos 2", 2, retain, p)
		w.ackLength(fmt.Sprintf("PUBREC (retain %v)", retain), w.expect(typPubrec, "PUBREC"), id)
		w.send(0x62, append([]byte{byte(id >> 8), byte(id)}, 0)) // PUBREL, success
		w.ackLength(fmt.Sprintf("PUBCOMP (retain %v)", retain), w.expect(typPubcomp, "PUBCOMP"), id)
	}

	// The subscriber still gets the publisher's user properties: they
	// belong to the message.
	sub := dialWire(t, s, 5)
	sub.connect("props-sub", "", "")
	sub.subscribe(1, "fromb/+")
	seen := 0
	for range 2 {
		first, body := sub.next()
		if first>>4 != typPublish {
			continue
		}
		if !bytes.Contains(body, userProperty("a", "2")) || !bytes.Contains(body, userProperty("c", "3")) {
			t.Errorf("retained message % x lost its user properties", body)
		}
		seen++
	}
	if seen != 2 {
		t.Fatalf("%d retained messages delivered, want 2", seen)
	}
}

// siteUser knows one user whose ACL covers only its site's topics.
type siteUser struct{}

func (siteUser) Authenticate(_ context.Context, name, password string) (*users.User, error) {
	if name != devUser || password != devPassword {
		return nil, errors.New("wrong username or password")
	}
	return &users.User{Name: devUser, Role: users.RoleDevice, Publish: []string{"vigil/home/#"}, Subscribe: []string{"vigil/home/#"}}, nil
}

// A shared subscription ($share/<group>/<filter>, MQTT 5 section 4.8.2)
// receives what its filter matches, so the ACL judges the filter, as
// Mosquitto's does; Vigil refused every shared subscription of anyone
// without Vigil's own full access (client_test5.py
// test_shared_subscriptions: SUBACK 0x87).
func TestSharedSubscriptionsAreJudgedByTheirFilter(t *testing.T) {
	s := openWith(t, siteUser{}, nil)
	sub := dialWire(t, s, 5)
	if ack := sub.connect("shared", devUser, devPassword); ack[1] != 0 {
		t.Fatalf("CONNACK % x", ack)
	}
	for filter, want := range map[string]byte{
		"$share/g/vigil/home/#":   1,    // granted QoS 1
		"$share/g/vigil/#":        0x87, // wider than the ACL
		"$share/g/vigil/garage/x": 0x87,
		"$share//vigil/home/x":    0x87, // no group: not a shared subscription MQTT allows
		"$share/g/$SYS/#":         0x87,
	} {
		ack := sub.subscribe(1, filter)
		if got := ack[len(ack)-1]; got != want {
			t.Errorf("SUBSCRIBE %q: reason code %#02x, want %#02x", filter, got, want)
		}
	}
	pub := dialWire(t, s, 5)
	pub.connect("shared-pub", devUser, devPassword)
	pub.publish("vigil/home/cam1/status", "online", 1, false, nil)
	pub.expect(typPuback, "PUBACK")
	body := sub.expect(typPublish, "the shared subscription's message")
	if !bytes.Contains(body, []byte("vigil/home/cam1/status")) || !bytes.HasSuffix(body, []byte("online")) {
		t.Errorf("delivered % x, want vigil/home/cam1/status: online", body)
	}
}

// openWith starts a broker on loopback (TCP only) that knows authn's
// users; anonymous clients have the shipped defaults.
func openWith(t *testing.T, authn Authenticator, mutate func(*conf.MQTT)) *Server {
	t.Helper()
	c := conf.New().MQTT
	c.Listen, c.WSListen, c.Persistence = here+":0", "", false
	if mutate != nil {
		mutate(&c)
	}
	s, err := Open(Config{MQTT: c, DataDir: t.TempDir()}, authn, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// An MQTT 3.1.1 client gets only MQTT 3.1.1 packets: acknowledgements of
// their 3.1.1 length, with no MQTT 5 reason code or properties, and
// messages without properties even when an MQTT 5 client published them
// with some (MQTT 3.1.1 sections 3.2 to 3.14).
func TestMQTT311ClientsGetOnlyMQTT311Packets(t *testing.T) {
	s := openWith(t, siteUser{}, nil)

	refused := dialWire(t, s, 4)
	// 5, "not authorized", as Mosquitto answers: 3.1.1's 4 says the user
	// name or password is malformed.
	if ack := refused.connect("old-refused", devUser, "wrong-password"); !bytes.Equal(ack, []byte{0, 5}) {
		t.Errorf("refused CONNACK body % x, want 00 05", ack)
	}

	old := dialWire(t, s, 4)
	if ack := old.connect("old", devUser, devPassword); !bytes.Equal(ack, []byte{0, 0}) {
		t.Fatalf("CONNACK body % x, want 00 00", ack)
	}
	for _, sub := range []struct {
		qos     byte
		filters []string
		codes   []byte
	}{
		{2, []string{"vigil/home/two", "vigil/garage/#"}, []byte{2, 0x80}}, // the second is outside the ACL
		{1, []string{"vigil/home/one"}, []byte{1}},
		{0, []string{"vigil/home/zero"}, []byte{0}},
	} {
		id := old.id + 1
		ack := old.subscribe(sub.qos, sub.filters...)
		want := append([]byte{byte(id >> 8), byte(id)}, sub.codes...)
		if !bytes.Equal(ack, want) {
			t.Errorf("SUBACK for %v: % x, want % x (MQTT 3.1.1 section 3.9.3)", sub.filters, ack, want)
		}
	}

	// An MQTT 5 publisher's properties stay out of what the 3.1.1
	// subscriber reads.
	pub := dialWire(t, s, 5)
	pub.connect("new", devUser, devPassword)
	p := append(userProperty("a", "2"), 0x02, 0, 0, 0, 60, 0x03, 0, 4, 't', 'e', 'x', 't', 0x08, 0, 1, 'r', 0x09, 0, 1, 'c')
	for qos, topic := range []string{"vigil/home/zero", "vigil/home/one", "vigil/home/two"} {
		id := pub.publish(topic, "payload", byte(qos), false, p)
		if qos > 0 {
			typ := byte(typPuback)
			if qos == 2 {
				typ = typPubrec
			}
			pub.expect(typ, "the publisher's acknowledgement")
			if qos == 2 {
				pub.send(0x62, []byte{byte(id >> 8), byte(id)})
				pub.expect(typPubcomp, "PUBCOMP")
			}
		}

		first, body := old.next()
		if first>>4 != typPublish || (first>>1)&3 != byte(qos) {
			t.Fatalf("got % x % x, want a QoS %d PUBLISH", first, body, qos)
		}
		want := new(bytes.Buffer)
		mqttString(want, topic)
		var mid []byte
		if qos > 0 {
			mid = body[len(want.Bytes()) : len(want.Bytes())+2]
			want.Write(mid)
		}
		want.WriteString("payload")
		if !bytes.Equal(body, want.Bytes()) {
			t.Errorf("QoS %d PUBLISH to MQTT 3.1.1: % x, want % x (no properties, MQTT 3.1.1 section 3.3.2)", qos, body, want.Bytes())
		}
		switch qos {
		case 1:
			old.send(0x40, mid)
		case 2:
			old.send(0x50, mid)
			old.ackLength("PUBREL", old.expect(typPubrel, "PUBREL"), uint16(mid[0])<<8|uint16(mid[1]))
			old.send(0x70, mid)
		}
	}

	// Its own publishes (where nobody listens) are acknowledged in
	// 3.1.1's shape, and so are UNSUBSCRIBE and PINGREQ.
	id := old.publish("vigil/home/other", "x", 1, false, nil)
	old.ackLength("PUBACK", old.expect(typPuback, "PUBACK"), id)
	id = old.publish("vigil/home/other", "x", 2, true, nil)
	old.ackLength("PUBREC", old.expect(typPubrec, "PUBREC"), id)
	old.send(0x62, []byte{byte(id >> 8), byte(id)})
	old.ackLength("PUBCOMP", old.expect(typPubcomp, "PUBCOMP"), id)

	id = old.nextID()
	var unsub bytes.Buffer
	unsub.Write([]byte{byte(id >> 8), byte(id)})
	mqttString(&unsub, "vigil/home/one")
	old.send(0xA2, unsub.Bytes())
	old.ackLength("UNSUBACK", old.expect(typUnsuback, "UNSUBACK"), id)

	old.send(0xC0, nil)
	if body := old.expect(typPingresp, "PINGRESP"); len(body) != 0 {
		t.Errorf("PINGRESP body % x, want none", body)
	}
}

// pahoPython311 is a session of Debian's Python paho-mqtt (1.6) in MQTT
// 3.1.1: it subscribes at each QoS (and once outside its ACL), publishes
// at each QoS, unsubscribes, and idles through its 1 s keepalive.
const pahoPython311 = `
import sys, time, paho.mqtt.client as mqtt
host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
got = []
c = mqtt.Client(client_id="py311", protocol=mqtt.MQTTv311, clean_session=True)
c.username_pw_set(user, password)
c.on_message = lambda c, u, m: got.append((m.topic, m.qos, m.payload))
c.connect(host, port, keepalive=1)
c.loop_start()
c.subscribe([("vigil/home/q0", 0), ("vigil/home/q1", 1), ("vigil/home/q2", 2), ("vigil/garage/#", 1)])
time.sleep(0.3)
for q in range(3):
    c.publish("vigil/home/q%d" % q, "m%d" % q, qos=q).wait_for_publish(5)
deadline = time.time() + 5
while len(got) < 3 and time.time() < deadline:
    time.sleep(0.05)
c.unsubscribe("vigil/home/q1")
time.sleep(2.5)
c.disconnect()
c.loop_stop()
if len(got) != 3:
    sys.exit("got %r" % got)
`

// Debian's Python paho-mqtt, speaking MQTT 3.1.1, reads only 3.1.1 packets
// from Vigil: a proxy between them checks every packet the broker sends
// (MQTT 3.1.1 sections 3.2 to 3.14).
func TestPahoPythonInMQTT311ReadsOnlyMQTT311Packets(t *testing.T) {
	python := "/usr/bin/python3"
	if out, err := exec.Command(python, "-c", "import paho.mqtt.client").CombinedOutput(); err != nil {
		testpeer.Need(t, "python3-paho-mqtt") // skips or fails with the install hint
		t.Fatalf("paho-mqtt for %s: %v: %s", python, err, out)
	}
	s := openWith(t, siteUser{}, nil)
	ln, err := net.Listen("tcp", here+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type packet struct {
		first byte
		body  []byte
	}
	got := make(chan packet, 64)
	go func() {
		client, err := ln.Accept()
		if err != nil {
			return
		}
		defer client.Close()
		broker, err := net.Dial("tcp", s.Addr(TCP).String())
		if err != nil {
			return
		}
		defer broker.Close()
		go io.Copy(broker, client)
		defer close(got)
		for {
			first, body, err := readFrame(broker)
			if err != nil {
				return
			}
			got <- packet{first, body}
			if _, err := client.Write(append(append([]byte{first}, varintBytes(len(body))...), body...)); err != nil {
				return
			}
		}
	}()
	host, p, _ := net.SplitHostPort(ln.Addr().String())
	out, err := exec.Command(python, "-c", pahoPython311, host, p, devUser, devPassword).CombinedOutput()
	if err != nil {
		t.Fatalf("paho-mqtt: %v: %s", err, out)
	}

	seen := map[byte]int{}
	for pk := range got {
		typ, body := pk.first>>4, pk.body
		seen[typ]++
		switch typ {
		case typConnack, typPuback, typPubrec, typPubrel, typPubcomp, typUnsuback:
			if len(body) != 2 {
				t.Errorf("packet type %d of remaining length %d (% x), want 2", typ, len(body), body)
			}
		case typPingresp:
			if len(body) != 0 {
				t.Errorf("PINGRESP of remaining length %d, want 0", len(body))
			}
		case typSuback:
			if !bytes.Equal(body[2:], []byte{0, 1, 2, 0x80}) {
				t.Errorf("SUBACK % x, want return codes 00 01 02 80", body)
			}
		case typPublish:
			qos := (pk.first >> 1) & 3
			n := 2 + int(body[0])<<8 | int(body[1])
			topic := string(body[2:n])
			if qos > 0 {
				n += 2
			}
			if want := "m" + topic[len(topic)-1:]; string(body[n:]) != want {
				t.Errorf("PUBLISH on %s: payload %q, want %q (no properties before it)", topic, body[n:], want)
			}
		default:
			t.Errorf("unexpected packet type %d (% x)", typ, body)
		}
	}
	for _, typ := range []byte{typConnack, typSuback, typPublish, typPuback, typPubrec, typPubrel, typPubcomp, typUnsuback, typPingresp} {
		if seen[typ] == 0 {
			t.Errorf("the session saw no packet of type %d; seen: %v", typ, seen)
		}
	}
}

// A client may stay silent for one and a half times its keep-alive (MQTT
// 3.1.1 and 5, section 3.1.2.10): with a keep-alive of 1 s, mochi's
// whole-second arithmetic cut it off after 1 s, the moment a client such
// as Python paho-mqtt sends its PINGREQ.
func TestAnOddKeepAliveKeepsItsHalfSecond(t *testing.T) {
	s := open(t, nil)
	for _, v := range []byte{4, 5} {
		w := dialWire(t, s, v)
		var b bytes.Buffer
		mqttString(&b, "MQTT")
		b.Write([]byte{v, 0x02, 0, 1}) // clean start, keep-alive 1 s
		b.Write(w.props(nil))
		mqttString(&b, fmt.Sprintf("keepalive-%d", v))
		w.send(0x10, b.Bytes())
		w.expect(typConnack, "CONNACK")
		time.Sleep(1250 * time.Millisecond)
		w.send(0xC0, nil)
		w.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if first, _, err := readFrame(w.conn); err != nil || first>>4 != typPingresp {
			t.Errorf("MQTT level %d: PINGREQ 1.25 s after CONNECT with a keep-alive of 1 s: %#x, %v; want a PINGRESP", v, first, err)
		}
		// And silence past 1.5 s ends it.
		start := time.Now()
		if _, _, err := readFrame(w.conn); err == nil {
			t.Errorf("MQTT level %d: a packet where the broker should close the connection", v)
		} else if d := time.Since(start); d < 1400*time.Millisecond || d > 4*time.Second {
			t.Errorf("MQTT level %d: closed after %v of silence, want about 1.5 s", v, d)
		}
	}
}

// slowSetup stands for a session set-up that takes time after mochi wrote
// the CONNACK (the persistence hook's write to disk).
type slowSetup struct {
	mqtt.HookBase
	d time.Duration
}

func (*slowSetup) ID() string                                          { return "test-slow-setup" }
func (*slowSetup) Provides(b byte) bool                                { return b == mqtt.OnSessionEstablished }
func (h *slowSetup) OnSessionEstablished(*mqtt.Client, packets.Packet) { time.Sleep(h.d) }

// A client that has its CONNACK is read at once: one that subscribes
// as soon as it is connected gets what is published 50 ms after its
// SUBSCRIBE left, however long the session's set-up took after mochi
// wrote the CONNACK (before, the SUBSCRIBE waited unread for it, and
// Paho's test_request_response lost its message one run in two).
func TestAConnectedClientsFirstPacketIsReadAtOnce(t *testing.T) {
	s := open(t, nil)
	pub := dialWire(t, s, 5)
	pub.connect("first-pub", "", "")
	if err := s.mochi.AddHook(&slowSetup{d: 300 * time.Millisecond}, nil); err != nil { // for the subscriber only
		t.Fatal(err)
	}

	sub := dialWire(t, s, 5)
	var b bytes.Buffer
	mqttString(&b, "MQTT")
	b.Write([]byte{5, 0x02, 0, 30, 0})
	mqttString(&b, "first-sub")
	sub.send(0x10, b.Bytes())
	sub.expect(typConnack, "CONNACK")
	sent := time.Now()
	var sb bytes.Buffer
	sb.Write([]byte{0, 1, 0})
	mqttString(&sb, "first/t")
	sb.WriteByte(0)
	sub.send(0x82, sb.Bytes())
	time.Sleep(50 * time.Millisecond)
	pub.publish("first/t", "hello", 0, false, nil)

	sub.expect(typSuback, "SUBACK")
	sub.conn.SetReadDeadline(time.Now().Add(time.Second))
	first, body, err := readFrame(sub.conn)
	if err != nil || first>>4 != typPublish || !bytes.HasSuffix(body, []byte("hello")) {
		t.Fatalf("the message published 50 ms after the SUBSCRIBE left: %#x % x %v; the SUBSCRIBE was answered %v after it left",
			first, body, err, time.Since(sent))
	}
}
