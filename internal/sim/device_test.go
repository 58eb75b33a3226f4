package sim

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigilhq/vigil/internal/testkit"
	"github.com/vigilhq/vigil/internal/testpeer"
)

// runSim runs a one-fleet simulation of n devices against a Mosquitto for
// d and returns its summary and log.
func runSim(t *testing.T, m *testpeer.Mosquitto, password string, n int, d time.Duration) (Summary, string) {
	t.Helper()
	sc := NewScenario()
	sc.Brokers = []string{fmt.Sprintf("mqtt://127.0.0.1:%d", m.Port)}
	sc.Username, sc.Password = "dev", password
	sc.Duration = d
	sc.Fleets = []Fleet{{Count: n, Period: 100 * time.Millisecond}}
	sc.ApplyDefaults()
	var log testkit.Buffer
	s, err := New(sc, slog.New(slog.NewTextHandler(&log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := s.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Run ends when every device has: at the end of the simulation,
	// not before (a device that gave up) nor long after.
	if took := time.Since(start); took < d || took > d+5*time.Second {
		t.Errorf("Run took %v for a %v simulation", took, d)
	}
	return s.Stats().Summary(), log.String()
}

func TestDevicesConnectPublishAndSayOnlineThenOffline(t *testing.T) {
	m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Anonymous: true, Users: map[string]string{"dev": "pw"}})
	watcher, _ := testpeer.Resume(t, fmt.Sprintf("127.0.0.1:%d", m.Port), "watcher", true)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := watcher.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: statusTopic("sim", "+"), QoS: 1}}}); err != nil {
		t.Fatal(err)
	}

	sum, log := runSim(t, m, "pw", 3, time.Second)
	if sum.Connected != 3 || sum.ConnectErrors != 0 || sum.Reconnects != 0 || sum.Published == 0 || sum.AllConnectedS < 0 {
		t.Errorf("summary %+v\nlog:\n%s", sum, log)
	}
	testkit.WaitFor(t, 5*time.Second, "three online and three offline statuses", func() bool {
		got := watcher.Received()
		return len(got) == 6
	})
	got := watcher.Received()
	for _, status := range []string{"online", "offline"} {
		if n := len(slices.DeleteFunc(slices.Clone(got), func(s string) bool { return s != status })); n != 3 {
			t.Errorf("%d %q statuses in %q", n, status, got)
		}
	}
}

func TestADeviceTheBrokerRefusesKeepsTrying(t *testing.T) {
	m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Users: map[string]string{"dev": "pw"}})
	sum, log := runSim(t, m, "wrong", 1, 1500*time.Millisecond)
	if sum.Connected != 0 || sum.ConnectErrors < 2 || sum.Published != 0 {
		t.Errorf("summary %+v\nlog:\n%s", sum, log)
	}
	if n := strings.Count(log, "device could not connect"); n != 1 {
		t.Errorf("the refusal was logged %d times:\n%s", n, log)
	}
}
