package notify

import "github.com/prometheus/client_golang/prometheus"

// Suppression reasons, the label of vigil_notifications_suppressed_total.
const (
	suppressPriority = "min_priority"
	suppressQuiet    = "quiet_hours"
	suppressCooldown = "cooldown"
)

type metrics struct {
	deliveries *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	suppressed *prometheus.CounterVec
	dropped    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_notifications_total", Help: "Notification deliveries by channel kind (webpush, ntfy, webhook, mqtt) and result (ok, failed).",
		}, []string{"kind", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "vigil_notification_delivery_seconds", Help: "From Notify to a successful delivery, retries included, by channel kind.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 15),
		}, []string{"kind"}),
		suppressed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_notifications_suppressed_total", Help: "Notifications a channel's rules kept back, by reason (min_priority, quiet_hours, cooldown).",
		}, []string{"reason"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_notifications_dropped_total", Help: "Notifications dropped before reaching any channel: queue full, channels unreadable or shutting down.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.deliveries, m.latency, m.suppressed, m.dropped} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
