package mqttingest_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigilhq/vigil/internal/mqttconn"
	"github.com/vigilhq/vigil/internal/mqttingest"
	"github.com/vigilhq/vigil/internal/testkit"
	"github.com/vigilhq/vigil/internal/testpeer"
)

// store records what a node stored; hold keeps the messages from being
// stored (a node that dies before its database commits).
type store struct {
	mu     sync.Mutex
	got    map[string]int // payload -> times stored
	hold   bool
	queued int
}

func newStore() *store { return &store{got: map[string]int{}} }

func (s *store) ingest(ctx context.Context, topic string, payload []byte, _ string) (<-chan error, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	done := make(chan error, 1)
	s.queued++
	if !s.hold {
		s.got[string(payload)]++
		done <- nil
	}
	return done, nil
}

func (s *store) stored() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for k, v := range s.got {
		out[k] = v
	}
	return out
}

func (s *store) received() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queued
}

func start(t *testing.T, m *testpeer.Mosquitto, id string, st *store) *mqttingest.Subscriber {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := mqttingest.Start(ctx, mqttingest.Config{
		Client:  mqttconn.Client{Brokers: []string{fmt.Sprintf("mqtt://127.0.0.1:%d", m.Port)}, ClientID: id},
		Filters: []string{"vigil/+/+/telemetry"},
		Ingest:  st.ingest,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// publish sends n QoS 1 readings and waits for their PUBACKs.
func publish(t *testing.T, m *testpeer.Mosquitto, from, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := mqttconn.Connect(ctx, ctx, mqttconn.Client{Brokers: []string{fmt.Sprintf("mqtt://127.0.0.1:%d", m.Port)}, ClientID: "fleet"})
	if err != nil {
		t.Fatal(err)
	}
	for i := from; i < from+n; i++ {
		if _, err := c.Publish(ctx, &paho.Publish{Topic: "vigil/home/temp1/telemetry", QoS: 1, Payload: fmt.Appendf(nil, `{"value":%d,"seq":%d}`, i, i)}); err != nil {
			t.Fatal(err)
		}
	}
	c.Disconnect(ctx)
}

// Two nodes in one group split the readings: each is stored by one node
// only, and each node stores a share.
func TestNodesShareTheReadings(t *testing.T) {
	m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Anonymous: true})
	a, b := newStore(), newStore()
	sa, sb := start(t, m, "node-a", a), start(t, m, "node-b", b)
	defer sa.Close()
	defer sb.Close()
	const n = 200
	publish(t, m, 0, n)
	testkit.WaitFor(t, 10*time.Second, "every reading stored", func() bool { return len(a.stored())+len(b.stored()) >= n })
	ga, gb := a.stored(), b.stored()
	for k, v := range ga {
		if v != 1 || gb[k] != 0 {
			t.Errorf("%s stored %d times by a, %d by b", k, v, gb[k])
		}
	}
	if len(ga)+len(gb) != n || len(ga) == 0 || len(gb) == 0 {
		t.Errorf("split %d / %d of %d: want every reading once, and both nodes storing", len(ga), len(gb), n)
	}
	t.Logf("split: node a %d, node b %d of %d", len(ga), len(gb), n)
}

// A node that goes before storing what it received leaves it to the
// broker: the node's resumed session gets it again, and stores it.
func TestReadingsNotStoredComeBackToTheResumedSession(t *testing.T) {
	m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Anonymous: true})
	held := newStore()
	held.hold = true
	s := start(t, m, "node-a", held)
	const n = 20
	publish(t, m, 0, n)
	testkit.WaitFor(t, 10*time.Second, "the node to receive the readings", func() bool { return held.received() == n })
	s.Close() // gone, nothing stored, nothing acknowledged

	again := newStore()
	s = start(t, m, "node-a", again)
	defer s.Close()
	testkit.WaitFor(t, 10*time.Second, "the readings delivered again", func() bool { return len(again.stored()) == n })
	publish(t, m, n, 5) // and new ones keep coming
	testkit.WaitFor(t, 10*time.Second, "new readings", func() bool { return len(again.stored()) == n+5 })
}
