package broker

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/testkit"
	"github.com/vigilhq/vigil/internal/testpeer"
)

// openPersistent opens a broker that keeps its state in dir, as `vigil
// up` does, on a loopback port that accepts anonymous clients for
// everything.
func openPersistent(t *testing.T, dir string) *Server {
	t.Helper()
	c := conf.New().MQTT
	c.Listen, c.WSListen, c.Persistence = "127.0.0.1:0", "", true
	c.AnonymousPublish, c.AnonymousSubscribe = []string{"#"}, []string{"#"}
	s, err := Open(Config{MQTT: c, DataDir: dir}, noUsers{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// publishNumbered publishes "0" to "n-1" at QoS 1 to topic, one after the
// other, each acknowledged.
func publishNumbered(t *testing.T, addr, topic string, n int) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: "publisher", KeepAlive: 30, CleanStart: true}); err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(&paho.Disconnect{})
	for i := range n {
		if _, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	// mochi acknowledges a message before it routes it, but reads the
	// publisher's next packet only after: once this one is acknowledged,
	// the n before it are queued for their subscribers. (A message routed
	// while its subscriber's session is being taken over can be lost:
	// mochi copies the session's messages at one moment.)
	if _, err := c.Publish(ctx, &paho.Publish{Topic: "fence", QoS: 1, Payload: []byte("-")}); err != nil {
		t.Fatal(err)
	}
}

// goOffline subscribes a persistent session to filter at QoS 1 and
// disconnects it, so that what is published to filter waits for it.
func goOffline(t *testing.T, addr, id, filter string) {
	t.Helper()
	ss, _ := resume(t, addr, id, true)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := ss.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	if err := ss.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
}

// resume connects a persistent session (see testpeer.Resume).
func resume(t *testing.T, addr, id string, clean bool) (*testpeer.Session, bool) {
	return testpeer.Resume(t, addr, id, clean)
}

func waitReceived(ss *testpeer.Session, n int) []string { return ss.WaitReceived(n, 10*time.Second) }

// checkInOrder fails unless got is "0" to "n-1" in order.
func checkInOrder(t *testing.T, got []string, n int) {
	t.Helper()
	steps := 0
	for i := 1; i < len(got); i++ {
		a, _ := strconv.Atoi(got[i-1])
		b, _ := strconv.Atoi(got[i])
		if b != a+1 {
			steps++
		}
	}
	if len(got) != n || steps > 0 || (n > 0 && got[0] != "0") {
		t.Fatalf("got %d of %d queued messages, %d out of order: %v", len(got), n, steps, got)
	}
}

func TestQueuedMessagesAreDeliveredInOrderWhenASessionResumes(t *testing.T) {
	s := openPersistent(t, t.TempDir())
	addr := s.Addr(TCP).String()
	goOffline(t, addr, "away", "q/#")
	publishNumbered(t, addr, "q/x", 200)
	ss, present := resume(t, addr, "away", false)
	if !present {
		t.Fatal("the session was not present")
	}
	checkInOrder(t, waitReceived(ss, 200), 200)
}

// Messages queued for a session whose client is away leave nothing of
// the back-pressure's in memory for it: the client that comes back is
// another, and gets every message.
func TestAnOfflineSessionsQueueLeavesNoBacklogBehind(t *testing.T) {
	s := openPersistent(t, t.TempDir())
	addr := s.Addr(TCP).String()
	goOffline(t, addr, "away", "q/#")
	publishNumbered(t, addr, "q/x", 50)
	s.backlog.clients.Range(func(k, _ any) bool {
		if cl := k.(*mqtt.Client); cl.Closed() {
			t.Errorf("the back-pressure keeps state for %q, which has gone", cl.ID)
		}
		return true
	})
	ss, _ := resume(t, addr, "away", false)
	checkInOrder(t, waitReceived(ss, 50), 50)
}

func TestQueuedMessagesSurviveARestartInOrder(t *testing.T) {
	dir := t.TempDir()
	s := openPersistent(t, dir)
	addr := s.Addr(TCP).String()
	goOffline(t, addr, "away", "q/#")
	publishNumbered(t, addr, "q/x", 100)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openPersistent(t, dir)
	ss, present := resume(t, s.Addr(TCP).String(), "away", false)
	if !present {
		t.Fatal("the session was not present after the restart")
	}
	checkInOrder(t, waitReceived(ss, 100), 100)
}

// A message delivered and acknowledged after a restart is gone for good:
// it does not come back after the next one.
func TestADeliveredMessageIsNotDeliveredAgainAfterTheNextRestart(t *testing.T) {
	dir := t.TempDir()
	s := openPersistent(t, dir)
	goOffline(t, s.Addr(TCP).String(), "away", "q/#")
	publishNumbered(t, s.Addr(TCP).String(), "q/x", 20)
	s.Close()

	s = openPersistent(t, dir)
	ss, _ := resume(t, s.Addr(TCP).String(), "away", false)
	checkInOrder(t, waitReceived(ss, 20), 20)
	ss.Disconnect(&paho.Disconnect{})
	publishNumbered(t, s.Addr(TCP).String(), "q/x", 3) // queued while away again
	s.Close()

	s = openPersistent(t, dir)
	ss, _ = resume(t, s.Addr(TCP).String(), "away", false)
	checkInOrder(t, waitReceived(ss, 3), 3)
}

// A clean start discards the session and its queue, also on disk.
func TestACleanStartDiscardsTheQueueForGood(t *testing.T) {
	dir := t.TempDir()
	s := openPersistent(t, dir)
	goOffline(t, s.Addr(TCP).String(), "away", "q/#")
	publishNumbered(t, s.Addr(TCP).String(), "q/x", 10)
	ss, _ := resume(t, s.Addr(TCP).String(), "away", true)
	if got := ss.WaitReceived(1, time.Second); len(got) != 0 {
		t.Fatalf("a clean start got the old session's messages: %v", got)
	}
	ss.Disconnect(&paho.Disconnect{})
	s.Close()

	s = openPersistent(t, dir)
	ss, present := resume(t, s.Addr(TCP).String(), "away", false)
	if got := ss.WaitReceived(1, time.Second); len(got) != 0 {
		t.Fatalf("after a restart, a discarded queue came back (session present %v): %v", present, got)
	}
}

// A session taken over while its connection is still up (a client that
// reconnects before the broker noticed the old connection is gone) gets
// what was queued in order too.
func TestATakenOverSessionGetsItsMessagesInOrder(t *testing.T) {
	s := openPersistent(t, t.TempDir())
	addr := s.Addr(TCP).String()
	goOffline(t, addr, "away", "q/#")
	publishNumbered(t, addr, "q/x", 100)
	// A first connection resumes, but does not acknowledge anything
	// (paho acknowledges only after its handlers return).
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	block := make(chan struct{})
	defer close(block)
	first := paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(paho.PublishReceived) (bool, error) { <-block; return true, nil }}})
	expiry := uint32(3600)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := first.Connect(ctx, &paho.Connect{ClientID: "away", KeepAlive: 30, Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}); err != nil {
		t.Fatal(err)
	}
	ss, present := resume(t, addr, "away", false)
	if !present {
		t.Fatal("the session was not present")
	}
	checkInOrder(t, waitReceived(ss, 100), 100)
}

// A retained message stays until it is cleared or its own expiry ends it,
// however old: mochi's default drops every retained message (and every
// message queued for a session) a day after it was published, so that a
// device's meta or a Home Assistant discovery config published once, at
// boot, would be gone a day later, and at once after a restart a day on.
func TestARetainedMessageOlderThanADayIsKept(t *testing.T) {
	s := open(t, nil)
	old := time.Now().Add(-49 * time.Hour).Unix()
	s.mochi.Topics.RetainMessage(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true},
		TopicName: "vigil/lab/d1/meta", Payload: []byte(`{"capabilities":["camera"]}`), Created: old, Origin: "d1"})
	// A message whose own expiry has passed, retained after the old one:
	// once mochi's expiry pass (every second) has removed it, that pass
	// has judged the old message too.
	s.mochi.Topics.RetainMessage(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true}, ProtocolVersion: 5,
		TopicName: "vigil/lab/d2/expired", Payload: []byte("x"), Created: old, Expiry: time.Now().Unix() - 1, Origin: "d2"})
	testkit.WaitFor(t, 10*time.Second, "mochi's expiry pass over the retained messages", func() bool {
		_, ok := s.mochi.Topics.Retained.Get("vigil/lab/d2/expired")
		return !ok
	})
	ss, _ := resume(t, s.Addr(TCP).String(), "reader", true)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := ss.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "vigil/lab/+/meta", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	if got := ss.WaitReceived(1, 3*time.Second); len(got) != 1 {
		t.Fatalf("a two-day-old retained message is gone: got %v", got)
	}
}

// A subscriber that allows topic aliases gets its queued messages with
// their topics: mochi would send the second message on a topic with an
// alias of the connection that is gone and no topic.
func TestQueuedMessagesKeepTheirTopicsForAClientThatTakesAliases(t *testing.T) {
	dir := t.TempDir()
	s := openPersistent(t, dir)
	addr := s.Addr(TCP).String()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	expiry, aliases := uint32(3600), uint16(10)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: "away", KeepAlive: 30, CleanStart: true,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry, TopicAliasMaximum: &aliases}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "q/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	c.Disconnect(&paho.Disconnect{})
	publishNumbered(t, addr, "q/x", 3)
	s.Close()

	s = openPersistent(t, dir)
	ss, _ := resume(t, s.Addr(TCP).String(), "away", false)
	checkInOrder(t, waitReceived(ss, 3), 3)
	for i, topic := range ss.Topics() {
		if topic != "q/x" {
			t.Errorf("queued message %d came on topic %q", i, topic)
		}
	}
}
