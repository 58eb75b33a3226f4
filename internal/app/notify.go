package app

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/alert"
	"github.com/vigilhq/vigil/internal/detect"
	"github.com/vigilhq/vigil/internal/hub"
	"github.com/vigilhq/vigil/internal/notify"
)

// openNotify starts the notifier, makes the default Web Push channel on
// first start, and sets up the alert engine, which notifies through it.
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

	a.Alerts = alert.NewEngine(ctx, alert.Config{
		State: a.Store,
		Notify: func(al alert.Alert) {
			a.Notifier.Notify(notify.Notification{Kind: notify.KindAlert, Title: al.Title, Body: al.Detail,
				Priority: al.Level.Priority(), URL: cmp.Or(al.Link, "/")})
		},
		Changed: func(list []alert.Alert) { a.Hub.Publish(hub.Message{Event: hub.EventAlerts, Data: list}) },
		Log:     a.log,
	})
	a.Alerts.Add(alert.SourceFunc(a.healthAlert), alert.Disk{Name: "data", Path: a.cfg.Data.Dir}, a.Notifier)
	return nil
}

// healthAlert is a critical alert while Vigil is unhealthy.
func (a *App) healthAlert(ctx context.Context) []alert.Alert {
	hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := a.health(hctx); err != nil && ctx.Err() == nil {
		return []alert.Alert{alert.New(alert.KindHealth, "", alert.Critical, "Vigil is unhealthy", vigil.ErrorMessage(err))}
	}
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
