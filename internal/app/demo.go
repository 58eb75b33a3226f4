package app

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/vigilhq/vigil/internal/broker"
	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/sim"
)

// demo is the built-in fleet of `vigil up --demo`: real MQTT clients on the
// embedded broker's own listener, so that a new user sees live data at once.
type demo struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// demoScenario spreads n devices over the four device types, then over two
// sites: six devices give a home with one of each type and an office with a
// temperature and a humidity sensor.
func demoScenario(cfg conf.Demo, url, username, password string) *sim.Scenario {
	sc := sim.NewScenario()
	sc.Brokers = []string{url}
	sc.Username, sc.Password = username, password
	sc.Seed = 2026
	sites := []string{"home", "office"}
	counts := map[[2]string]int{}
	var order [][2]string
	for i := range cfg.Devices {
		k := [2]string{sites[(i/len(sim.Types))%len(sites)], sim.Types[i%len(sim.Types)]}
		if counts[k] == 0 {
			order = append(order, k)
		}
		counts[k]++
	}
	for _, k := range order {
		f := sim.TypeDefaults(k[1])
		f.Name, f.Site, f.Count = k[0]+"-"+k[1], k[0], counts[k]
		f.Period = cfg.Period
		sc.Fleets = append(sc.Fleets, f)
	}
	sc.ApplyDefaults()
	return sc
}

func startDemo(cfg conf.Demo, b *broker.Server, log *slog.Logger) (*demo, error) {
	url := b.URL(broker.TCP)
	if url == "" {
		url = b.URL(broker.WS)
	}
	if url == "" {
		return nil, fmt.Errorf("demo: needs mqtt.listen or mqtt.ws_listen")
	}
	user, password := b.InternalCredentials()
	s, err := sim.New(demoScenario(cfg, url, user, password), log)
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &demo{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(d.done)
		s.Run(ctx)
	}()
	log.Info("demo fleet started", "devices", cfg.Devices, "period", cfg.Period.String(), "broker", url)
	return d, nil
}

// Close stops the fleet; its devices say "offline" and disconnect.
func (d *demo) Close() error {
	d.cancel()
	<-d.done
	return nil
}
