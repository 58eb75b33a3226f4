package e2e_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/sim"
	"github.com/vigilhq/vigil/internal/sub"
	"github.com/vigilhq/vigil/internal/testkit"
)

// TestADisconnectStormFiresLastWillsAndDevicesComeBack runs a timeline
// disconnect storm on half a fleet: their last wills must mark them offline,
// and they must reconnect by themselves afterwards.
func TestADisconnectStormFiresLastWillsAndDevicesComeBack(t *testing.T) {
	ta := startApp(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var mu sync.Mutex
	offline := map[string]bool{}
	duringStorm := 0
	start := time.Now()
	s, err := sub.Subscribe(ctx, sub.Options{Brokers: []string{ta.mqttAddr()}, Filters: []string{"vigil/storm/+/status"}, QoS: 1}, func(m sub.Message) {
		if string(m.Payload) == "offline" && !m.Retained {
			mu.Lock()
			offline[m.Topic] = true
			if m.Received.Sub(start) < 4*time.Second { // the fleet runs 6 s; the storm is at 1-2.5 s
				duringStorm++
			}
			mu.Unlock()
		}
	})
	must(t, err)
	defer s.Close()

	sc := sim.NewScenario()
	sc.Brokers = []string{ta.mqttAddr()}
	sc.Duration = 6 * time.Second
	sc.Fleets = []sim.Fleet{{Name: "storm", Site: "storm", Count: 20, Period: 200 * time.Millisecond}}
	sc.Timeline = []sim.Step{{At: time.Second, Fleet: "storm", Fraction: 0.5, Action: "disconnect", Duration: 1500 * time.Millisecond}}
	sc.ApplyDefaults()
	sm, err := sim.New(sc, ta.log)
	must(t, err)
	must(t, sm.Run(ctx))

	st := sm.Stats().Summary()
	if st.Reconnects != 10 {
		t.Errorf("%d reconnects after a storm on 10 devices", st.Reconnects)
	}
	if st.Suppressed == 0 {
		t.Error("no readings were held back while the network was down")
	}
	mu.Lock()
	storm := duringStorm
	mu.Unlock()
	if storm != 10 {
		t.Errorf("%d last wills during the storm, want 10", storm)
	}
	// At the end every device says "offline" itself on its way out.
	testkit.WaitFor(t, 5*time.Second, "all 20 devices to have gone offline", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(offline) == 20
	})
	must(t, ta.Telemetry.Sync(ctx))
	for _, d := range ta.devices(t) {
		if d.Status != "offline" {
			t.Errorf("device %s is %s after the fleet stopped", d.ID, d.Status)
		}
	}
}
