package mqttbus_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/mqttbus"
	"github.com/vigilhq/vigil/internal/mqttconn"
	"github.com/vigilhq/vigil/internal/testkit"
	"github.com/vigilhq/vigil/internal/testpeer"
)

type inbox struct {
	mu  sync.Mutex
	got []string
}

func (i *inbox) take(topic string, payload []byte, clientID string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.got = append(i.got, topic+" "+string(payload)+" "+clientID)
}

func (i *inbox) list() []string {
	i.mu.Lock()
	defer i.mu.Unlock()
	return append([]string(nil), i.got...)
}

func open(t *testing.T, m *testpeer.Mosquitto, id string) *mqttbus.Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := mqttbus.Open(ctx, mqttconn.Client{Brokers: []string{fmt.Sprintf("mqtt://127.0.0.1:%d", m.Port)}, ClientID: id, MinBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// What one node publishes reaches the handlers of the filters it matches
// on another, also after the broker restarted.
func TestPublishAndSubscribeThroughAnExternalBroker(t *testing.T) {
	m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Anonymous: true})
	a, b := open(t, m, "node-a"), open(t, m, "node-b")
	var agents, modes inbox
	if err := b.Subscribe("vigil/agents/+/state", agents.take); err != nil {
		t.Fatal(err)
	}
	if err := b.Subscribe("vigil/+/mode/set", modes.take); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(a.Publish("vigil/agents/x-1/state", []byte("empty"), false, 1))
	must(a.Publish("vigil/home/mode/set", []byte("armed"), false, 1))
	must(a.Publish("vigil/home/temp1/telemetry", []byte("{}"), false, 1)) // nobody's
	testkit.WaitFor(t, 5*time.Second, "both messages", func() bool { return len(agents.list()) == 1 && len(modes.list()) == 1 })
	if got := agents.list()[0]; got != "vigil/agents/x-1/state empty " {
		t.Errorf("agents' handler got %q", got)
	}

	m.Restart()
	testkit.WaitFor(t, 20*time.Second, "a message after the broker restarted", func() bool {
		a.Publish("vigil/agents/x-1/state", []byte("full"), false, 1)
		return len(agents.list()) >= 2
	})
	if len(modes.list()) != 1 {
		t.Errorf("mode handler: %v", modes.list())
	}
	b.Close()
	if err := b.Publish("vigil/x", nil, false, 1); err == nil {
		t.Error("Publish after Close succeeded")
	}
}

// heldSession starts a Mosquitto and returns a publisher and a function
// that takes the session of one client id that holders share in turn
// (persistent, held until Release).
func heldSession(t *testing.T) (pub *mqttbus.Bus, hold func() *mqttbus.Bus) {
	m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Anonymous: true})
	c := mqttconn.Client{Brokers: []string{fmt.Sprintf("mqtt://127.0.0.1:%d", m.Port)}, ClientID: "the-coordinator",
		SessionExpiry: time.Minute, MinBackoff: 50 * time.Millisecond}
	return open(t, m, "publisher"), func() *mqttbus.Bus {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b, err := mqttbus.OpenHolding(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}
}

// A session that several processes take in turn (the coordinator's): what
// was published while no one held it is queued by the broker and comes,
// in order, to the handlers of the next holder, which subscribes them only
// after connecting.
func TestAHeldSessionHandsOutWhatWasQueuedWhileNoOneHeldIt(t *testing.T) {
	pub, hold := heldSession(t)
	first := hold()
	var before inbox
	if err := first.Subscribe("vigil/agents/+/state", before.take); err != nil {
		t.Fatal(err)
	}
	first.Release()
	if err := pub.Publish("vigil/agents/a-1/state", []byte("ready"), false, 1); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "the first holder's message", func() bool { return len(before.list()) == 1 })
	first.Close()

	for i := range 3 { // no one holds the session
		if err := pub.Publish("vigil/agents/a-1/state", []byte(fmt.Sprint("queued-", i)), false, 1); err != nil {
			t.Fatal(err)
		}
	}
	next := hold()
	time.Sleep(200 * time.Millisecond) // the queued messages arrive before any handler
	var after inbox
	if err := next.Subscribe("vigil/agents/+/state", after.take); err != nil {
		t.Fatal(err)
	}
	if len(after.list()) != 0 {
		t.Fatalf("handed out before Release: %v", after.list())
	}
	next.Release()
	// The first holder's message may come again: it is acknowledged once
	// handled, and its acknowledgement may not have left before Close
	// (at least once). The queued ones come, in order.
	queued := func() []string {
		var out []string
		for _, m := range after.list() {
			if strings.Contains(m, "queued-") {
				out = append(out, m)
			}
		}
		return out
	}
	testkit.WaitFor(t, 5*time.Second, "the three queued messages", func() bool { return len(queued()) == 3 })
	for i, got := range queued() {
		if want := fmt.Sprintf("vigil/agents/a-1/state queued-%d ", i); got != want {
			t.Errorf("message %d: %q, want %q", i, got, want)
		}
	}
}

// A holder that goes away before it handed out what it held (a leader
// that died while starting) acknowledged none of it: the next holder gets
// it.
func TestWhatAHolderDidNotHandOutGoesToTheNext(t *testing.T) {
	pub, hold := heldSession(t)
	first := hold()
	var never inbox
	if err := first.Subscribe("vigil/+/+/motion", never.take); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish("vigil/home/pir1/motion", []byte(`{"distance_m":0.4}`), false, 1); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // it reaches the holder, which holds it
	first.Close()                      // without Release
	next := hold()
	var got inbox
	if err := next.Subscribe("vigil/+/+/motion", got.take); err != nil {
		t.Fatal(err)
	}
	next.Release()
	testkit.WaitFor(t, 5*time.Second, "the message the first holder held", func() bool { return len(got.list()) == 1 })
	if len(never.list()) != 0 {
		t.Errorf("the first holder handed out %v without Release", never.list())
	}
}
