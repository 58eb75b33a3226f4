package broker

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vigilhq/vigil/internal/testkit"
)

// mqttString is an MQTT UTF-8 string: a 16-bit length, then the bytes.
func mqttString(b *bytes.Buffer, s string) {
	b.WriteByte(byte(len(s) >> 8))
	b.WriteByte(byte(len(s)))
	b.WriteString(s)
}

// rawConnect5 connects with MQTT 5 over a raw socket, as dev, and returns
// the connection after a successful CONNACK.
func rawConnect5(t *testing.T, s *Server, clientID string) net.Conn {
	t.Helper()
	conn := dialFrom(t, here, s)
	t.Cleanup(func() { conn.Close() })
	var body bytes.Buffer
	mqttString(&body, "MQTT")
	body.Write([]byte{5, 0xC2, 0, 30, 0}) // level 5; username, password, clean start; keepalive 30 s; no properties
	mqttString(&body, clientID)
	mqttString(&body, devUser)
	mqttString(&body, devPassword)
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(append([]byte{0x10, byte(body.Len())}, body.Bytes()...)); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, 2)
	if _, err := io.ReadFull(conn, ack); err != nil || ack[0] != 0x20 {
		t.Fatalf("CONNACK: % x %v", ack, err)
	}
	rest := make([]byte, ack[1])
	if _, err := io.ReadFull(conn, rest); err != nil || rest[1] != 0 {
		t.Fatalf("CONNACK refused: % x %v", rest, err)
	}
	return conn
}

// readUntilClosed reads what the broker sends until it closes the
// connection, and returns it; it fails the test if the broker keeps it open.
func readUntilClosed(t *testing.T, conn net.Conn) []byte {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the broker kept the connection open (read % x)", b)
	}
	return b
}

// watcher subscribes to t/# with paho and returns the messages it gets.
func watcher(t *testing.T, s *Server) (*client, chan string) {
	t.Helper()
	got := make(chan string, 16)
	w, code := connect5(t, here, s, "watcher", devUser, devPassword)
	if code != 0 {
		t.Fatalf("watcher refused: %#x", code)
	}
	w.AddOnPublishReceived(func(pr paho.PublishReceived) (bool, error) {
		got <- pr.Packet.Topic
		return true, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := w.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "t/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	return w, got
}

// undisturbed checks that the watcher still gets what another client
// publishes.
func undisturbed(t *testing.T, s *Server, w *client, got chan string) {
	t.Helper()
	p, code := connect5(t, here, s, "publisher", devUser, devPassword)
	if code != 0 {
		t.Fatalf("a new client was refused after the crash attempt: %#x", code)
	}
	if err := alive(p); err != nil {
		t.Fatalf("publish after the crash attempt: %v", err)
	}
	select {
	case topic := <-got:
		if topic != "t/alive" {
			t.Fatalf("watcher got %q", topic)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the watcher no longer receives messages")
	}
	if err := alive(w); err != nil {
		t.Fatalf("the watcher's own connection was disturbed: %v", err)
	}
}

func TestAPacketThatCrashesTheDecoderEndsOnlyItsConnection(t *testing.T) {
	s, _, _ := openGuarded(t, nil)
	w, got := watcher(t, s)
	conn := rawConnect5(t, s, "crasher")
	subs := atomic.LoadInt64(&s.mochi.Info.Subscriptions)

	// A valid SUBSCRIBE (a/b, QoS 0), then in the same write the issue's
	// SUBSCRIBE whose filter "a" has no options byte, which indexes past
	// the end of the packet in mochi v2.7.9's decoder.
	good := []byte{0x82, 0x09, 0x00, 0x01, 0x00, 0x00, 0x03, 'a', '/', 'b', 0x00}
	crash := []byte{0x82, 0x06, 0x00, 0x01, 0x00, 0x00, 0x01, 0x61}
	if _, err := conn.Write(append(good, crash...)); err != nil {
		t.Fatal(err)
	}
	answer := readUntilClosed(t, conn)
	if len(answer) < 2 || answer[0] != 0x90 {
		t.Errorf("the SUBSCRIBE before the malformed one was not answered: % x", answer)
	}
	testkit.WaitFor(t, 10*time.Second, "the crasher to leave the broker", func() bool {
		_, ok := s.mochi.Clients.Get("crasher")
		return !ok && atomic.LoadInt64(&s.mochi.Info.Subscriptions) == subs && atomic.LoadInt64(&s.mochi.Info.ClientsConnected) == 1
	})
	undisturbed(t, s, w, got)
	if n := testutil.ToFloat64(s.contain.panics.WithLabelValues(panicDecode)); n != 1 {
		t.Errorf("vigil_mqtt_panics_total{where=decode} = %v, want 1", n)
	}
}

// panicHook panics while a PUBLISH to "t/boom" is handled, on the
// publishing client's goroutine, as a bug in mochi's handling would.
type panicHook struct{ mqtt.HookBase }

func (panicHook) ID() string           { return "test-panic" }
func (panicHook) Provides(b byte) bool { return b == mqtt.OnPublish }
func (panicHook) OnPublish(_ *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.TopicName == "t/boom" {
		panic("boom")
	}
	return pk, nil
}

func TestAPanicWhileHandlingAPacketEndsOnlyItsConnection(t *testing.T) {
	s, _, _ := openGuarded(t, nil)
	if err := s.mochi.AddHook(&panicHook{}, nil); err != nil {
		t.Fatal(err)
	}
	w, got := watcher(t, s)
	subs := atomic.LoadInt64(&s.mochi.Info.Subscriptions)
	c, code := connect5(t, here, s, "crasher", devUser, devPassword)
	if code != 0 {
		t.Fatalf("refused: %#x", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "x/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	c.Publish(ctx, &paho.Publish{Topic: "t/boom", QoS: 0, Payload: []byte("x")})
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the connection whose packet panicked is still open")
	}
	testkit.WaitFor(t, 10*time.Second, "the crasher's session and subscription to go", func() bool {
		_, ok := s.mochi.Clients.Get("crasher")
		return !ok && atomic.LoadInt64(&s.mochi.Info.Subscriptions) == subs
	})
	undisturbed(t, s, w, got)
	if n := testutil.ToFloat64(s.contain.panics.WithLabelValues(panicProcess)); n != 1 {
		t.Errorf("vigil_mqtt_panics_total{where=process} = %v, want 1", n)
	}
}

// A remaining length spread over more than MQTT's 4 bytes is malformed;
// mochi would take it when its high bits are zero, and the packets after
// it must not reach mochi unchecked.
func TestAnOverlongLengthEndsTheConnection(t *testing.T) {
	s, _, _ := openGuarded(t, nil)
	conn := rawConnect5(t, s, "overlong")
	// PINGREQ with its zero length written in 5 bytes, then the issue's
	// SUBSCRIBE that would crash mochi's decoder.
	conn.Write([]byte{0xC0, 0x80, 0x80, 0x80, 0x80, 0x00, 0x82, 0x06, 0x00, 0x01, 0x00, 0x00, 0x01, 0x61})
	if answer := readUntilClosed(t, conn); len(answer) != 0 {
		t.Errorf("the broker answered % x", answer)
	}
	if n := testutil.ToFloat64(s.contain.panics.WithLabelValues(panicProcess)); n != 0 {
		t.Errorf("the crashing SUBSCRIBE reached mochi: vigil_mqtt_panics_total{where=process} = %v", n)
	}
}
