package notify

import (
	"context"

	"github.com/vigilhq/vigil/internal/alert"
)

// Alerts makes the notifier an alert source: a warning for each enabled
// channel whose latest delivery failed. They are silent: a failing channel
// is shown, not announced through the channels.
func (n *Notifier) Alerts(ctx context.Context) []alert.Alert {
	chans, err := n.store.ListChannels(ctx)
	if err != nil {
		return nil
	}
	var out []alert.Alert
	for _, ch := range chans {
		if !ch.Enabled {
			continue
		}
		if ds, err := n.store.ListDeliveries(ctx, ch.ID, 1); err == nil && len(ds) == 1 && !ds[0].OK {
			a := alert.New(alert.KindDelivery, ch.ID, alert.Warning, "Notifications on "+ch.Name+" are failing", ds[0].Error)
			a.Link, a.Silent = "/settings", true
			out = append(out, a)
		}
	}
	return out
}
