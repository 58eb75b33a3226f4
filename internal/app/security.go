package app

import (
	"cmp"
	"context"
	"fmt"
	"os"

	"github.com/vigilhq/vigil/internal/broker"
	"github.com/vigilhq/vigil/internal/hub"
	"github.com/vigilhq/vigil/internal/selfaudit"
	"github.com/vigilhq/vigil/internal/store"
	"github.com/vigilhq/vigil/internal/watch"
)

// openSecurity starts the watcher of configured brokers and the
// self-audit's schedule, and sends the broker's blocks to the UI.
func (a *App) openSecurity(ctx context.Context) error {
	w := a.cfg.Watch
	if len(w.Targets) > 0 {
		var targets []watch.Target
		for _, t := range w.Targets {
			wt := watch.Target{Name: t.Name, URL: t.URL, Username: t.Username, CAFile: t.CA, Insecure: t.Insecure}
			if t.PasswordEnv != "" {
				var ok bool
				if wt.Password, ok = os.LookupEnv(t.PasswordEnv); !ok {
					return fmt.Errorf("watch target %q: password_env %s is not set", cmp.Or(t.Name, t.URL), t.PasswordEnv)
				}
			}
			targets = append(targets, wt)
		}
		var err error
		if a.Watcher, err = watch.New(watch.Config{Targets: targets, Interval: w.Interval, Timeout: w.Timeout, Latency: w.Latency},
			a.Store, func(e watch.Event) {
				// Outages and latency breaches are alerts: the watcher
				// is one of their sources.
				a.Hub.Publish(hub.Message{Event: hub.EventWatch, Data: e})
				a.Alerts.Kick()
			}, a.log.With("component", "watch"), a.Registry); err != nil {
			return err
		}
		a.Alerts.Add(a.Watcher)
		a.Watcher.Start()
		a.onClose(a.Watcher.Close)
	}
	if a.Broker != nil {
		a.Alerts.Add(a.Broker) // blocks and slow subscribers
		a.Broker.SetOnBlock(func(b broker.Block) {
			// On the blocked client's goroutine. The "blocks" alert tells
			// people once while any block lasts, however many follow.
			a.Hub.Publish(hub.Message{Event: hub.EventBlock, Data: b})
			a.Alerts.Kick()
		})
		a.onClose(func() error { a.Broker.SetOnBlock(nil); return nil })
	}

	a.Auditor = selfaudit.New(ctx, selfaudit.Config{
		MQTT: a.cfg.MQTT, Schedule: a.cfg.Audit, PublicURL: a.cfg.HTTP.PublicURL,
		Broker: a.Broker, Store: a.Store, Log: a.log.With("component", "audit"),
		Ran: func(ctx context.Context, last store.AuditRecord) {
			a.Hub.Publish(hub.Message{Event: hub.EventAudit, Data: hub.Audit{ID: last.ID, Grade: last.Grade, Target: last.Target}})
			a.Alerts.Check(ctx) // the run's caller sees its alerts
		},
	})
	a.Alerts.Add(a.Auditor)
	a.Auditor.Start()
	a.onClose(a.Auditor.Close)
	return nil
}

// securityAPI is what the HTTP API serves of the security side.
type securityAPI struct{ *App }

func (s securityAPI) RunAudit(ctx context.Context, trigger string) (store.AuditRecord, error) {
	return s.Auditor.Run(ctx, trigger)
}

func (s securityAPI) ListAudits(ctx context.Context, limit int) ([]store.AuditSummary, error) {
	return s.Store.ListAudits(ctx, limit)
}

func (s securityAPI) GetAudit(ctx context.Context, id int64) (store.AuditRecord, error) {
	return s.Store.GetAudit(ctx, id)
}

func (s securityAPI) WatchStatus() []watch.Status {
	if s.Watcher == nil {
		return nil
	}
	return s.Watcher.Status()
}

// Blocks are the embedded broker's; an external broker's are its own.
func (s securityAPI) Blocks() []broker.Block {
	if s.Broker == nil {
		return nil
	}
	return s.Broker.Blocks()
}

func (s securityAPI) Unblock(key string) bool { return s.Broker != nil && s.Broker.Unblock(key) }
