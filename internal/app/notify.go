package app

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/alert"
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
	if a.Notifier, err = notify.New(a.Store, a.Bus, a.log.With("component", "notify"), a.Registry, notify.Options{
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
