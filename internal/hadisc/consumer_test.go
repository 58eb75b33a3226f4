package hadisc

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/telemetry"
	"github.com/vigilhq/vigil/internal/testkit"
	"github.com/vigilhq/vigil/internal/users"
)

// memBus is a broker in memory: retained messages, subscriptions that get
// them at once, delivery in order. Like the embedded broker and mqttbus,
// subscribing twice to a filter delivers its messages twice.
type memBus struct {
	mu       sync.Mutex
	retained map[string][]byte
	subs     map[string][]func(string, []byte, string)
}

func newMemBus() *memBus {
	return &memBus{retained: map[string][]byte{}, subs: map[string][]func(string, []byte, string){}}
}

func (b *memBus) Subscribe(filter string, h func(string, []byte, string)) error {
	b.mu.Lock()
	b.subs[filter] = append(b.subs[filter], h)
	var ret [][2]string
	for t, p := range b.retained {
		if users.MatchTopic(filter, t) {
			ret = append(ret, [2]string{t, string(p)})
		}
	}
	b.mu.Unlock()
	slices.SortFunc(ret, func(a, b [2]string) int { return cmpStr(a[0], b[0]) })
	for _, m := range ret {
		h(m[0], []byte(m[1]), "")
	}
	return nil
}

func cmpStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (b *memBus) Unsubscribe(filter string) error {
	b.mu.Lock()
	delete(b.subs, filter)
	b.mu.Unlock()
	return nil
}

func (b *memBus) publish(topic string, payload []byte, retain bool) {
	b.mu.Lock()
	if retain {
		if len(payload) == 0 {
			delete(b.retained, topic)
		} else {
			b.retained[topic] = payload
		}
	}
	var hs []func(string, []byte, string)
	for f, l := range b.subs {
		if users.MatchTopic(f, topic) {
			hs = append(hs, l...)
		}
	}
	b.mu.Unlock()
	for _, h := range hs {
		h(topic, payload, "")
	}
}

// startConsumer starts a consumer of prefix homeassistant, site home, on
// a memBus, its events in a sink; it stops with the test.
func startConsumer(t *testing.T, cfg ConsumerConfig) (*memBus, *sink, *Consumer, context.Context) {
	t.Helper()
	bus, out := newMemBus(), &sink{}
	cfg.Prefix, cfg.Site, cfg.Put = "homeassistant", "home", out.put
	c := NewConsumer(cfg, bus, slog.New(slog.DiscardHandler), nil)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return bus, out, c, ctx
}

type sink struct {
	mu  sync.Mutex
	evs []telemetry.Event
}

func (s *sink) put(_ context.Context, ev telemetry.Event) error {
	s.mu.Lock()
	s.evs = append(s.evs, ev)
	s.mu.Unlock()
	return nil
}

// Each project's discovery configs and states, as they publish them, make
// the entities Home Assistant would show: names, classes, units, values.
func TestFixturesMakeTheEntitiesHomeAssistantShows(t *testing.T) {
	for name, fx := range testkit.DeviceFixtures(t, "../e2e/testdata/devices") {
		t.Run(name, func(t *testing.T) {
			bus := newMemBus()
			var out sink
			c := NewConsumer(ConsumerConfig{Prefix: "homeassistant", Site: "home", Put: out.put}, bus, slog.New(slog.DiscardHandler), nil)
			// Half of the messages before the consumer starts (retained
			// ones it finds), half after.
			half := len(fx.Messages) / 2
			for _, m := range fx.Messages[:half] {
				bus.publish(m.Topic, []byte(m.Payload), m.Retain)
			}
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := c.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			for _, m := range fx.Messages[half:] {
				bus.publish(m.Topic, []byte(m.Payload), m.Retain)
				if err := c.Sync(ctx); err != nil {
					t.Fatal(err)
				}
			}
			// Non-retained states sent before the start are lost, as on a
			// broker: send the states again.
			for _, m := range fx.Messages[:half] {
				if !m.Retain {
					bus.publish(m.Topic, []byte(m.Payload), m.Retain)
				}
			}
			views := map[string]EntityView{}
			for _, v := range c.Entities() {
				views[v.Entity.UniqueID] = v
			}
			for _, want := range fx.Expect {
				v, ok := views[want.UniqueID]
				if !ok {
					t.Errorf("%s: not read; problems: %v", want.UniqueID, c.Problems())
					continue
				}
				e := v.Entity
				if e.Component != want.Component || e.DeviceClass != want.DeviceClass || e.FriendlyName() != want.Name || e.Unit != want.Units {
					t.Errorf("%s: %s/%s %q %q, want %s/%s %q %q", want.UniqueID, e.Component, e.DeviceClass, e.FriendlyName(), e.Unit,
						want.Component, want.DeviceClass, want.Name, want.Units)
				}
				switch {
				case want.Value == nil && v.Value != nil:
					t.Errorf("%s: value %v, want none", want.UniqueID, *v.Value)
				case want.Value != nil && (v.Value == nil || *v.Value != *want.Value):
					t.Errorf("%s: value %v (error %q), want %v", want.UniqueID, v.Value, v.Error, *want.Value)
				}
				d := e.Device
				if d == nil || d.Name != want.Device.Name || d.Model != want.Device.Model || d.Manufacturer != want.Device.Manufacturer {
					t.Errorf("%s: device %+v, want %+v", want.UniqueID, d, want.Device)
				}
				if !v.Available {
					t.Errorf("%s: not available", want.UniqueID)
				}
			}
		})
	}
}

// A config published again (a bridge reconnecting, Home Assistant's birth
// message) changes nothing: one state is still one reading.
func TestARepublishedConfigDoesNotSubscribeAgain(t *testing.T) {
	bus, out, c, ctx := startConsumer(t, ConsumerConfig{})
	cfg := []byte(`{"stat_t":"shed/t","unit_of_meas":"°C","dev_cla":"temperature","uniq_id":"shed_t","avty_t":"shed/lwt"}`)
	for range 5 {
		bus.publish("homeassistant/sensor/shed_t/config", cfg, true)
		if err := c.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	bus.publish("shed/lwt", []byte("online"), true)
	bus.publish("shed/t", []byte("12.5"), false)
	out.mu.Lock()
	defer out.mu.Unlock()
	readings := 0
	for _, ev := range out.evs {
		if ev.Reading != nil {
			readings++
		}
	}
	if readings != 1 {
		t.Fatalf("one state made %d readings", readings)
	}
	bus.mu.Lock()
	defer bus.mu.Unlock()
	if n := len(bus.subs["shed/t"]); n != 1 {
		t.Fatalf("%d subscriptions to the state topic", n)
	}
}
