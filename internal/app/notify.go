package app

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/coord"
	"github.com/vigilhq/vigil/internal/detect"
	"github.com/vigilhq/vigil/internal/hub"
	"github.com/vigilhq/vigil/internal/notify"
)

// Alert is something that needs the owner's attention, shown as the
// overview's banner until it clears.
type Alert struct {
	ID     string    `json:"id"`    // stable while it lasts, e.g. "agent_lost:agent-3"
	Level  string    `json:"level"` // warning or critical
	Title  string    `json:"title"`
	Detail string    `json:"detail,omitempty"`
	Since  time.Time `json:"since"`
}

// alerts is the set of alerts that hold now.
type alerts struct {
	check sync.Mutex // one checkAlerts at a time: each replaces the whole list
	kick  chan struct{}

	mu   sync.Mutex
	list map[string]Alert
	// held are the alerts people were told of, as stored in the settings
	// (id -> since): an alert that still holds after a restart is not
	// notified again.
	held map[string]time.Time
}

// alertsSetting is where the held alerts are stored.
const alertsSetting = "alerts_held"

// loadAlerts reads the alerts that held when Vigil last stopped.
func (a *App) loadAlerts(ctx context.Context) {
	a.alerts.held = map[string]time.Time{}
	a.alerts.kick = make(chan struct{}, 1)
	v, err := a.Store.GetSetting(ctx, alertsSetting)
	if err != nil {
		if vigil.ErrorCode(err) != vigil.ENotFound {
			a.log.Warn("read the alerts held before the restart", "error", err)
		}
		return
	}
	if err := json.Unmarshal([]byte(v), &a.alerts.held); err != nil {
		a.log.Warn("read the alerts held before the restart", "error", err)
	}
}

// kickAlerts has the alerts checked soon, without waiting for the next
// tick; it never blocks.
func (a *App) kickAlerts() {
	select {
	case a.alerts.kick <- struct{}{}:
	default:
	}
}

// openNotify starts the notifier and makes the default Web Push channel on
// first start.
func (a *App) openNotify(ctx context.Context) error {
	base := a.cfg.HTTP.PublicURL
	subscriber := ""
	if strings.HasPrefix(base, "https://") {
		subscriber = base
	}
	var err error
	if a.Notifier, err = notify.New(a.Store, a.Broker, a.log.With("component", "notify"), a.Registry, notify.Options{
		BaseURL: base, Subscriber: subscriber,
		PushServices: a.cfg.Notify.PushServices, AllowTargets: a.cfg.Notify.AllowTargetPrefixes(),
	}); err != nil {
		return err
	}
	a.onClose(a.Notifier.Close)
	if _, err := a.Notifier.VAPIDPublicKey(ctx); err != nil { // keys are made on first start
		return fmt.Errorf("web push keys: %w", err)
	}
	if _, err := a.Store.GetSetting(ctx, "default_channels"); vigil.ErrorCode(err) == vigil.ENotFound {
		ch := &notify.Channel{Kind: notify.ChannelWebPush, Name: "Browsers and phones", Enabled: true}
		if err := a.Store.SaveChannel(ctx, ch); err != nil {
			return err
		}
		if err := a.Store.SetSetting(ctx, "default_channels", "made"); err != nil {
			return err
		}
	}
	a.Notifier.Start()
	return nil
}

// onChange reacts to the coordinator's saved events and clips: the first
// time an event is saved, people are told.
func (a *App) onChange(kind string, v any) {
	if kind != hub.EventEvent || a.Notifier == nil {
		return
	}
	ev := v.(detect.Event)
	a.notifiedMu.Lock()
	seen := a.notified[ev.ID]
	if !seen {
		if len(a.notified) > 10000 {
			clear(a.notified) // old events never come back as new
		}
		a.notified[ev.ID] = true
	}
	a.notifiedMu.Unlock()
	if seen || ev.State == detect.EventMerged {
		return // merged: its camera is already recording an event people were told of
	}
	a.Notifier.Notify(intrusionNote(ev))
}

func intrusionNote(ev detect.Event) notify.Notification {
	cam := ev.Sensor
	if len(ev.Cameras) > 0 {
		cam = ev.Cameras[0]
	}
	body := fmt.Sprintf("%s saw someone", ev.Sensor)
	if ev.Distance != nil {
		body += fmt.Sprintf(" at %.1f m", *ev.Distance)
	}
	switch {
	case len(ev.Cameras) == 0:
		body += "; no camera covers it."
	default:
		body += fmt.Sprintf("; %s %s recording.", strings.Join(ev.Cameras, ", "), map[bool]string{true: "is", false: "are"}[len(ev.Cameras) == 1])
	}
	return notify.Notification{
		Kind: notify.KindIntrusion, Site: ev.Site, Camera: cam, Sensor: ev.Sensor, EventID: ev.ID,
		Title: "Intrusion at " + ev.Site, Body: body, Priority: ev.Priority, Time: ev.Start, URL: "/events/" + ev.ID,
	}
}

// Alerts returns the alerts that hold now, most severe and oldest first.
func (a *App) Alerts() []Alert {
	a.alerts.mu.Lock()
	defer a.alerts.mu.Unlock()
	out := make([]Alert, 0, len(a.alerts.list))
	for _, al := range a.alerts.list {
		out = append(out, al)
	}
	slices.SortFunc(out, func(x, y Alert) int {
		if x.Level != y.Level {
			return strings.Compare(x.Level, y.Level) // critical < warning
		}
		return x.Since.Compare(y.Since)
	})
	return out
}

// checkAlerts looks at what can go wrong and updates the alerts: new ones
// are notified, cleared ones go; the UI hears of every change.
func (a *App) checkAlerts(ctx context.Context) {
	a.alerts.check.Lock()
	defer a.alerts.check.Unlock()
	now := time.Now()
	found := map[string]Alert{}
	add := func(id, level, title, detail string) {
		found[id] = Alert{ID: id, Level: level, Title: title, Detail: detail, Since: now}
	}
	hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	if err := a.health(hctx); err != nil && ctx.Err() == nil {
		add("health", "critical", "Vigil is unhealthy", vigil.ErrorMessage(err))
	}
	cancel()
	if a.Coord != nil {
		for _, ag := range a.Coord.View().Agents {
			if ag.Status == coord.AgentLost {
				add("agent_lost:"+ag.ID, "warning", "Agent "+ag.ID+" stopped answering", "its streams move to other agents")
			}
		}
	}
	for _, dir := range []struct{ name, path string }{{"data", a.cfg.Data.Dir}, {"clips", a.Storage}} {
		if dir.path == "" {
			continue
		}
		var st syscall.Statfs_t
		if syscall.Statfs(dir.path, &st) != nil || st.Blocks == 0 {
			continue
		}
		if diskAlmostFull(st.Blocks*uint64(st.Bsize), st.Bavail*uint64(st.Bsize)) {
			free := float64(st.Bavail) / float64(st.Blocks)
			freeBytes := st.Bavail * uint64(st.Bsize)
			add("disk:"+dir.name, "critical", fmt.Sprintf("The %s disk is almost full", dir.name),
				fmt.Sprintf("%.1f%% (%d MiB) free at %s", free*100, freeBytes>>20, dir.path))
		}
	}
	a.securityAlerts(add)
	if chans, err := a.Store.ListChannels(ctx); err == nil {
		for _, ch := range chans {
			if !ch.Enabled {
				continue
			}
			if ds, err := a.Store.ListDeliveries(ctx, ch.ID, 1); err == nil && len(ds) == 1 && !ds[0].OK {
				add("notify:"+ch.ID, "warning", "Notifications on "+ch.Name+" are failing", ds[0].Error)
			}
		}
	}

	a.alerts.mu.Lock()
	var raised []Alert
	changed := len(found) != len(a.alerts.list)
	held := make(map[string]time.Time, len(found))
	for id, al := range found {
		if old, ok := a.alerts.list[id]; ok {
			al.Since = old.Since
			changed = changed || old.Detail != al.Detail || old.Title != al.Title
		} else if since, ok := a.alerts.held[id]; ok {
			al.Since = since // it held before a restart: people were told
			changed = true
		} else {
			raised = append(raised, al)
			changed = true
		}
		found[id] = al
		held[id] = al.Since
	}
	a.alerts.list = found
	save := !maps.Equal(held, a.alerts.held)
	a.alerts.held = held
	a.alerts.mu.Unlock()
	if save {
		b, _ := json.Marshal(held)
		if err := a.Store.SetSetting(context.WithoutCancel(ctx), alertsSetting, string(b)); err != nil {
			a.log.Warn("save the alerts that hold", "error", err)
		}
	}
	for _, al := range raised {
		a.log.Warn("alert", "id", al.ID, "title", al.Title, "detail", al.Detail)
		if strings.HasPrefix(al.ID, "notify:") {
			continue // a failing channel is shown, not notified (no loops)
		}
		prio := 70
		if al.Level == "critical" {
			prio = 90
		}
		link := "/"
		if strings.HasPrefix(al.ID, "audit:") || strings.HasPrefix(al.ID, "watch") {
			link = "/security"
		}
		a.Notifier.Notify(notify.Notification{Kind: notify.KindAlert, Title: al.Title, Body: al.Detail, Priority: prio, URL: link})
	}
	if changed && a.Hub != nil {
		a.Hub.Publish(hub.Message{Event: hub.EventAlerts, Data: a.Alerts()})
	}
}

// diskAlmostFull reports whether a volume of size bytes with free bytes
// left is almost full: under 5 % free, or under 512 MiB free on a volume
// large enough for that to be little (a tenth of it at most, so that a
// small volume is not "almost full" while nearly empty).
func diskAlmostFull(size, free uint64) bool {
	return float64(free) < 0.05*float64(size) || free < min(512<<20, size/10)
}
