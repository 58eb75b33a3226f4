package app

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/vigilhq/vigil/internal/broker"
	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/mqttconn"
	"github.com/vigilhq/vigil/internal/sim"
)

// demo is the built-in fleet of `vigil up --demo`: real MQTT clients on the
// embedded broker's own listener, so that a new user sees live data at once.
type demo struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// demoScenario spreads n devices over the four sensor types, then over two
// sites: six devices give a home with one of each type and an office with a
// temperature and a humidity sensor. The home also gets the demo's cameras,
// which see an intruder now and then.
func demoScenario(cfg conf.Demo, url, username, password string) *sim.Scenario {
	sc := sim.NewScenario()
	sc.Brokers = []string{url}
	sc.Username, sc.Password = username, password
	sc.Seed = 2026
	sites := []string{"home", "office"}
	sensorTypes := []string{sim.TypeTemperature, sim.TypeHumidity, sim.TypeDistance, sim.TypeDoor}
	counts := map[[2]string]int{}
	var order [][2]string
	for i := range cfg.Devices {
		k := [2]string{sites[(i/len(sensorTypes))%len(sites)], sensorTypes[i%len(sensorTypes)]}
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
	if cfg.Cameras > 0 {
		f := sim.TypeDefaults(sim.TypeCamera)
		f.Name, f.Site, f.Count = "home-camera", "home", cfg.Cameras
		f.Camera.Width, f.Camera.Height, f.Camera.FPS = 320, 240, 10
		sc.Fleets = append(sc.Fleets, f)
		sc.Timeline = append(sc.Timeline, sim.Step{At: 10 * time.Second, Fleet: f.Name, Fraction: 1, Action: "intrusion",
			Duration: 3 * time.Second, DistanceM: 0.6, Every: cfg.IntrusionEvery})
	}
	sc.ApplyDefaults()
	return sc
}

// startDemo runs the demo fleet on the embedded broker's own listener with
// Vigil's internal login, or on the external broker as Vigil's own login
// (its ACL covers the devices' topics; docs/security.md).
func (a *App) startDemo(log *slog.Logger) (*demo, error) {
	cfg := a.cfg.Demo
	var url, user, password string
	var tls mqttconn.TLS
	var urls []string
	if b := a.Broker; b != nil {
		if url = b.URL(broker.TCP); url == "" {
			url = b.URL(broker.WS)
		}
		if url == "" {
			return nil, fmt.Errorf("demo: needs mqtt.listen or mqtt.ws_listen")
		}
		user, password = b.InternalCredentials()
	} else {
		c, err := a.externalClient("", a.cfg.MQTT.Username, a.cfg.MQTT.PasswordEnv, a.cfg.MQTT.PasswordFile, "mqtt.password")
		if err != nil {
			return nil, err
		}
		url, urls, user, password, tls = c.Brokers[0], c.Brokers, c.Username, c.Password, c.TLS
	}
	sc := demoScenario(cfg, url, user, password)
	if urls != nil {
		sc.Brokers = urls
	}
	sc.TLS = tls
	s, err := sim.New(sc, log)
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
