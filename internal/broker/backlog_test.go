package broker

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/gorilla/websocket"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/testkit"
	"github.com/vigilhq/vigil/internal/wsconn"
)

// rawSubscriber is a QoS 1 subscriber over a raw socket with a small
// receive buffer, so that the broker's queue for it fills as soon as it
// stops reading.
type rawSubscriber struct {
	conn     net.Conn
	received atomic.Int64
	inOrder  atomic.Bool
	noAck    bool // read, but never acknowledge
}

func subscribeRaw(t *testing.T, s *Server, clientID, filter string) *rawSubscriber {
	t.Helper()
	// The receive buffer is set before the connection, so that the window
	// the broker sees is small from the start.
	conn, err := smallWindow().Dial("tcp", s.Addr(TCP).String())
	if err != nil {
		t.Fatal(err)
	}
	return subscribeOver(t, conn, clientID, filter, "")
}

// smallWindow dials with a 4 KiB receive buffer.
func smallWindow() *net.Dialer {
	return &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
}

// subscribeOver connects with MQTT 3.1.1 over conn (as user, with its
// roleUsers password, or anonymously) and subscribes to filter at QoS 1.
func subscribeOver(t *testing.T, conn net.Conn, clientID, filter, user string) *rawSubscriber {
	t.Helper()
	t.Cleanup(func() { conn.Close() })
	var body bytes.Buffer
	mqttString(&body, "MQTT")
	flags := byte(0x02) // clean session
	if user != "" {
		flags |= 0xC0
	}
	body.Write([]byte{4, flags, 0, 60}) // MQTT 3.1.1, keepalive 60 s
	mqttString(&body, clientID)
	if user != "" {
		mqttString(&body, user)
		mqttString(&body, user+"-password")
	}
	conn.Write(append([]byte{0x10, byte(body.Len())}, body.Bytes()...))
	if hb, ack, err := readFrame(conn); err != nil || hb != 0x20 || ack[1] != 0 {
		t.Fatalf("CONNACK %#x % x %v", hb, ack, err)
	}
	body.Reset()
	body.Write([]byte{0, 1})
	mqttString(&body, filter)
	body.WriteByte(1)
	conn.Write(append([]byte{0x82, byte(body.Len())}, body.Bytes()...))
	if hb, _, err := readFrame(conn); err != nil || hb != 0x90 {
		t.Fatalf("SUBACK %#x %v", hb, err)
	}
	r := &rawSubscriber{conn: conn}
	r.inOrder.Store(true)
	return r
}

// read reads PUBLISH packets, acknowledges them and checks that their
// payloads, big-endian counters, arrive in order without a gap.
func (r *rawSubscriber) read() {
	next := uint32(0)
	for {
		hb, body, err := readFrame(r.conn)
		if err != nil {
			return
		}
		if hb>>4 != 3 {
			continue
		}
		tl := int(binary.BigEndian.Uint16(body))
		id := body[2+tl : 4+tl]
		if seq := binary.BigEndian.Uint32(body[4+tl:]); seq != next {
			r.inOrder.Store(false)
		}
		next++
		r.received.Add(1)
		if !r.noAck {
			r.conn.Write([]byte{0x40, 2, id[0], id[1]})
		}
	}
}

// publishN publishes n QoS 1 messages of size bytes, their payloads
// counting up, and returns how long it took.
func publishN(t *testing.T, s *Server, n, size int) time.Duration {
	t.Helper()
	c, _, code := connectAs(t, s, "publisher", "")
	if code != 0 {
		t.Fatalf("publisher refused: %#x", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	payload := make([]byte, size)
	for i := range n {
		binary.BigEndian.PutUint32(payload, uint32(i))
		if _, err := c.Publish(ctx, &paho.Publish{Topic: "vigil/home/dev1/telemetry", QoS: 1, Payload: payload}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	return time.Since(start)
}

// slowWriter makes the broker's writer to one client take d per packet, as
// when thousands of publishers leave it no CPU.
type slowWriter struct {
	mqtt.HookBase
	clientID string
	d        time.Duration
}

func (*slowWriter) ID() string           { return "test-slow-writer" }
func (*slowWriter) Provides(b byte) bool { return b == mqtt.OnPacketSent }
func (w *slowWriter) OnPacketSent(cl *mqtt.Client, pk packets.Packet, _ []byte) {
	if cl.ID == w.clientID && pk.FixedHeader.Type == packets.Publish {
		time.Sleep(w.d) // not synchronisation: the slowness under test
	}
}

func openBacklog(t *testing.T, mutate func(*conf.MQTT)) *Server {
	return openDefault(t, func(c *conf.MQTT) {
		c.MaxQueuedMessages, c.BlockFloodMessages = 64, 0
		mutate(c)
	})
}

// openSmallWindow opens a broker whose clients' window is 256 messages
// (waits begin at 64 unacknowledged), so that a test fills it quickly.
func openSmallWindow(t *testing.T, mutate func(*conf.MQTT)) *Server {
	c := conf.New().MQTT
	c.Listen, c.WSListen, c.Persistence = "127.0.0.1:0", "", false
	c.BlockFloodMessages = 0
	mutate(&c)
	s, err := Open(Config{MQTT: c, DataDir: t.TempDir(), MaxInflight: 256}, roleUsers{}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// A QoS 1 subscriber whose messages cannot be written as fast as they come
// for a while (a burst, a moment without CPU) loses nothing: publishers
// wait for its queue.
func TestASubscriberThatFallsBehindForAMomentLosesNothing(t *testing.T) {
	s := openBacklog(t, func(c *conf.MQTT) { c.SlowSubscriberWait = 5 * time.Second })
	if err := s.mochi.AddHook(&slowWriter{clientID: "dashboard", d: time.Millisecond}, nil); err != nil {
		t.Fatal(err)
	}
	sub := subscribeRaw(t, s, "dashboard", "vigil/#")
	go sub.read()
	const n = 1000 // its queue holds 64
	took := publishN(t, s, n, 64)
	testkit.WaitFor(t, 10*time.Second, "every message at the subscriber", func() bool { return sub.received.Load() == n })
	if !sub.inOrder.Load() {
		t.Error("messages arrived out of order")
	}
	if d := testutil.ToFloat64(s.backlog.dropped.WithLabelValues("1")); d != 0 {
		t.Errorf("%v messages dropped", d)
	}
	if len(s.SlowSubscribers()) != 0 {
		t.Errorf("slow subscribers: %+v", s.SlowSubscribers())
	}
	t.Logf("%d messages in %v; publishers waited %v times", n, took.Round(time.Millisecond), testutil.ToFloat64(s.backlog.waits))
}

// A broker writer that keeps writing, however slowly, is waited for
// longer than slow_subscriber_wait: it is the broker's own goroutine that
// is short of CPU, not the subscriber that is slow, and waiting is what
// gives it the CPU back.
func TestAWriterThatKeepsWritingIsNeverGivenUpOn(t *testing.T) {
	s := openBacklog(t, func(c *conf.MQTT) { c.SlowSubscriberWait = 100 * time.Millisecond })
	if err := s.mochi.AddHook(&slowWriter{clientID: "dashboard", d: 2 * time.Millisecond}, nil); err != nil {
		t.Fatal(err)
	}
	sub := subscribeRaw(t, s, "dashboard", "vigil/#")
	go sub.read()
	const n = 1000 // 2 s of writing at least, 20 times the wait
	took := publishN(t, s, n, 64)
	testkit.WaitFor(t, 10*time.Second, "every message at the subscriber", func() bool { return sub.received.Load() == n })
	if d := testutil.ToFloat64(s.backlog.dropped.WithLabelValues("1")); d != 0 || len(s.SlowSubscribers()) != 0 {
		t.Errorf("%v dropped; slow subscribers %+v", d, s.SlowSubscribers())
	}
	t.Logf("%d messages in %v", n, took.Round(time.Millisecond))
}

// A client that stops reading is disconnected after mqtt.write_timeout;
// until then the publishers of its subscriptions wait, no longer.
func TestAClientThatStopsReadingHoldsNobodyUpForLong(t *testing.T) {
	s := openBacklog(t, func(c *conf.MQTT) { c.WriteTimeout, c.SlowSubscriberWait = time.Second, 100*time.Millisecond })
	subscribeRaw(t, s, "stuck", "vigil/#") // never reads
	took := publishN(t, s, 2000, 8<<10)    // 16 MB: more than its socket buffers hold
	if took > 15*time.Second {
		t.Errorf("publishing took %v with a client that does not read", took)
	}
	testkit.WaitFor(t, 10*time.Second, "the stuck client to be disconnected", func() bool {
		cl, ok := s.mochi.Clients.Get("stuck")
		return !ok || cl.Closed()
	})
	if n := testutil.ToFloat64(s.contain.stalls); n != 1 {
		t.Errorf("vigil_mqtt_write_timeouts_total = %v", n)
	}
	t.Logf("2000 messages of 8 KiB in %v; the stuck client was disconnected", took.Round(time.Millisecond))
}

// A subscriber that reads but never acknowledges holds publishers back
// only for slow_subscriber_wait; beyond MaxInflight unacknowledged
// messages what it loses is counted and named too.
func TestASubscriberThatNeverAcknowledgesLosesMessagesCountedAndNamed(t *testing.T) {
	s := openSmallWindow(t, func(c *conf.MQTT) { c.MaxQueuedMessages, c.SlowSubscriberWait = 64, 100*time.Millisecond })
	sub := subscribeRaw(t, s, "no-acks", "vigil/#")
	sub.noAck = true
	go sub.read()
	const n = 1256 // its window (256 here) and 1,000 more
	took := publishN(t, s, n, 16)
	slow := s.SlowSubscribers()
	if len(slow) != 1 || slow[0].ClientID != "no-acks" || slow[0].Dropped < 900 {
		t.Fatalf("slow subscribers: %+v", slow)
	}
	// The metric and the client's count agree once the last drop is counted.
	testkit.WaitFor(t, 10*time.Second, "the metric to agree with the client's count", func() bool {
		slow = s.SlowSubscribers()
		return len(slow) == 1 && testutil.ToFloat64(s.backlog.dropped.WithLabelValues("1")) == float64(slow[0].Dropped)
	})
	t.Logf("%d messages in %v, %d dropped for the subscriber that never acknowledges", n, took.Round(time.Millisecond), slow[0].Dropped)
}

// The same over WebSocket, where the WebSocket library sets the socket's
// write deadline itself.
func TestAWebSocketClientThatStopsReadingHoldsNobodyUpForLong(t *testing.T) {
	s := openBacklog(t, func(c *conf.MQTT) { c.WriteTimeout, c.SlowSubscriberWait = time.Second, 100*time.Millisecond })
	d := websocket.Dialer{Subprotocols: []string{"mqtt"}, NetDialContext: smallWindow().DialContext}
	ws, _, err := d.Dial("ws://"+s.Addr(WS).String()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	subscribeOver(t, wsconn.New(ws), "stuck-ws", "vigil/#", "viewer1") // a viewer may read vigil/#; it reads no more
	took := publishN(t, s, 2000, 8<<10)
	if took > 15*time.Second {
		t.Errorf("publishing took %v with a WebSocket client that does not read", took)
	}
	if n := testutil.ToFloat64(s.contain.stalls); n != 1 {
		t.Errorf("vigil_mqtt_write_timeouts_total = %v", n)
	}
}

// With waits of a second or more (the default), one publisher feeding a
// subscriber that stays behind (here: it never acknowledges) is held back
// for one wait, not once per message.
func TestOnePublisherIsHeldBackForOneWaitOnly(t *testing.T) {
	s := openSmallWindow(t, func(c *conf.MQTT) { c.SlowSubscriberWait = time.Second })
	sub := subscribeRaw(t, s, "no-acks", "vigil/#")
	sub.noAck = true
	go sub.read()
	took := publishN(t, s, 300, 16) // waits begin at 64 unacknowledged
	if took > 10*time.Second {
		t.Errorf("300 messages took %v: the publisher was held back again and again", took)
	}
	if slow := s.SlowSubscribers(); len(slow) != 1 {
		t.Errorf("slow subscribers: %+v", slow)
	}
	t.Logf("300 messages in %v", took.Round(time.Millisecond))
}

// stallAfterGate holds the first publishers of messages for one client
// just after the backlog hook let them through and before mochi queues
// their messages, until open is closed: as a GC's stack scan, preempting
// thousands of goroutines wherever they are, holds them.
type stallAfterGate struct {
	mqtt.HookBase
	clientID string
	open     chan struct{}
	held     atomic.Int64
}

func (*stallAfterGate) ID() string           { return "test-stall-after-gate" }
func (*stallAfterGate) Provides(b byte) bool { return b == mqtt.OnQosPublish }
func (w *stallAfterGate) OnQosPublish(cl *mqtt.Client, _ packets.Packet, _ int64, _ int) {
	if cl.ID == w.clientID {
		w.held.Add(1)
		<-w.open
	}
}

// Publishers let through towards a subscriber's queue are counted until
// their messages are written, not only once they are in the queue: when
// hundreds of them are held up between the check and the queue, they do
// not all find it short of the mark and overflow it together.
func TestPublishersHeldAfterTheGateDoNotOverflowTheQueue(t *testing.T) {
	s := openBacklog(t, func(c *conf.MQTT) { c.SlowSubscriberWait = 20 * time.Second })
	stall := &stallAfterGate{clientID: "dashboard", open: make(chan struct{})}
	if err := s.mochi.AddHook(stall, nil); err != nil { // after the backlog hook
		t.Fatal(err)
	}
	sub := subscribeRaw(t, s, "dashboard", "vigil/#")
	go sub.read()

	const publishers = 200 // the queue holds 64; publishers wait from 48
	clients := make([]*paho.Client, publishers)
	for i := range clients {
		c, _, code := connectAs(t, s, fmt.Sprintf("pub-%d", i), "")
		if code != 0 {
			t.Fatalf("publisher %d refused: %#x", i, code)
		}
		clients[i] = c
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Publish(ctx, &paho.Publish{Topic: "vigil/home/dev1/telemetry", QoS: 1, Payload: make([]byte, 64)}); err != nil {
				t.Errorf("publish: %v", err)
			}
		}()
	}
	// Every publisher is either held after the gate or waiting at it.
	testkit.WaitFor(t, 20*time.Second, "every publisher to reach the gate", func() bool {
		return stall.held.Load()+int64(testutil.ToFloat64(s.backlog.waits)) >= publishers
	})
	close(stall.open)
	wg.Wait()
	testkit.WaitFor(t, 20*time.Second, "every message at the subscriber", func() bool { return sub.received.Load() >= publishers })
	if d := testutil.ToFloat64(s.backlog.dropped.WithLabelValues("1")); d != 0 {
		t.Errorf("%v of %d messages dropped (%d publishers were let through at once)", d, publishers, stall.held.Load())
	}
	if n := sub.received.Load(); n != publishers {
		t.Errorf("the subscriber received %d of %d", n, publishers)
	}
}
