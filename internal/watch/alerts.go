package watch

import (
	"context"
	"fmt"

	"github.com/vigilhq/vigil/internal/alert"
)

// Alerts makes the watcher an alert source: a critical alert for each
// watched broker that is down, a warning for each one slower than
// Config.Latency.
func (w *Watcher) Alerts(context.Context) []alert.Alert {
	var out []alert.Alert
	for _, s := range w.Status() {
		var a alert.Alert
		switch {
		case s.Probes > 0 && !s.Up:
			detail := ""
			if s.LastProbe != nil {
				detail = s.LastProbe.Error
			}
			a = alert.New(alert.KindBrokerDown, s.Target, alert.Critical, "Broker "+s.Target+" is down", detail)
		case s.LatencyBreach:
			detail := fmt.Sprintf("round trips above %s", w.cfg.Latency)
			if s.LastProbe != nil {
				detail = fmt.Sprintf("round trip %.0f ms, above %s", s.LastProbe.RoundTripMS, w.cfg.Latency)
			}
			a = alert.New(alert.KindBrokerSlow, s.Target, alert.Warning, "Broker "+s.Target+" is slow", detail)
		default:
			continue
		}
		a.Link = "/security"
		out = append(out, a)
	}
	return out
}
