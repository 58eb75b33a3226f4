package app

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/vigilhq/vigil/internal/hub"
	"github.com/vigilhq/vigil/internal/telemetry"
	"github.com/vigilhq/vigil/internal/users"
)

// openLive sets up the browser side: sessions, readings to the hub (which
// the detector and the coordinator already feed), and one loop per job:
// the agents' view, the alerts, the expired sessions.
func (a *App) openLive() {
	a.Sessions = &users.Sessions{Store: a.Store, Users: a.Store, Idle: 12 * time.Hour, MaxAge: 7 * 24 * time.Hour}

	if !a.clustered() {
		a.Telemetry.Observe(a.publishLive)
	}
	ctx, cancel := context.WithCancel(context.Background())
	// The alerts that hold are known before the API serves them: an alert
	// that held before a restart is in the first banner.
	a.Alerts.Check(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { a.publishAgents(ctx) })
	wg.Go(func() { a.Alerts.Run(ctx) })
	wg.Go(func() { a.deleteExpiredSessions(ctx) })
	if a.clustered() {
		wg.Go(func() { a.liveTelemetry(ctx) })
	}
	a.onClose(func() error { cancel(); wg.Wait(); return nil })
}

// publishLive sends a reading or a device's status to the browsers that
// listen.
func (a *App) publishLive(ev telemetry.Event) {
	if !a.Hub.Active() {
		return
	}
	switch {
	case ev.Reading != nil:
		a.Hub.Publish(hub.Message{Event: hub.EventReading, Key: ev.DeviceID, Data: hub.Reading{
			Device: ev.DeviceID, Site: ev.Site, Type: ev.Type, Value: ev.Reading.Value,
			Units: ev.Reading.Units, Timestamp: ev.Reading.Time, Seq: ev.Reading.Seq,
		}})
	case ev.Status != "":
		a.Hub.Publish(hub.Message{Event: hub.EventDevice, Key: ev.DeviceID, Data: hub.Device{Device: ev.DeviceID, Site: ev.Site, Status: ev.Status}})
	case ev.Meta != nil:
		d := hub.Device{Device: ev.DeviceID, Site: ev.Site, Name: ev.Meta.Name, Type: ev.Type, Units: ev.Units}
		if ev.Meta.Discovery != nil {
			d.Discovery = ev.Meta.Discovery
		}
		a.Hub.Publish(hub.Message{Event: hub.EventDevice, Key: ev.DeviceID, Data: d})
	}
}

// liveTelemetry, among several nodes, has this node take every device's
// messages (QoS 0, not shared) while a browser here listens for readings
// or devices, and hands them to it: the node stores only its share. It
// lets go of them 10 s after the last such browser left.
func (a *App) liveTelemetry(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	on := false
	var idle time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		want := a.Hub.Wants(hub.EventReading) || a.Hub.Wants(hub.EventDevice)
		switch {
		case want && !on:
			on = true
			for _, f := range a.Telemetry.Filters() {
				err := a.extBus.SubscribeQoS0(f, func(topic string, payload []byte, clientID string) {
					if ev, err := a.parser.Parse(topic, payload, clientID, time.Now()); err == nil {
						a.publishLive(ev)
					}
				})
				if err != nil {
					a.log.Warn("live telemetry", "filter", f, "error", err)
				}
			}
		case want:
			idle = time.Time{}
		case on && idle.IsZero():
			idle = time.Now()
		case on && time.Since(idle) > 10*time.Second:
			on, idle = false, time.Time{}
			for _, f := range a.Telemetry.Filters() {
				if err := a.extBus.Unsubscribe(f); err != nil {
					a.log.Warn("live telemetry", "filter", f, "error", err)
				}
			}
		}
	}
}

// publishAgents sends the agents' view when it changes, at most once a
// second and only while a browser listens; among several nodes, also every
// 5 s (a node that just started learns it so).
func (a *App) publishAgents(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var last []byte
	var sent time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// Browsers may listen on other nodes (share).
		if !a.coord.running() || (!a.Hub.Active() && !a.clustered()) {
			continue
		}
		b, _ := json.Marshal(a.coord.View())
		if string(b) != string(last) || (a.clustered() && time.Since(sent) >= 5*time.Second) {
			last, sent = b, time.Now()
			a.share(hub.Message{Event: hub.EventAgents, Data: json.RawMessage(b)})
		}
	}
}

// deleteExpiredSessions clears expired browser sessions at start and then
// every hour.
func (a *App) deleteExpiredSessions(ctx context.Context) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		a.Store.DeleteExpiredSessions(ctx, time.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
