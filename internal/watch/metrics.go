package watch

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	up        *prometheus.GaugeVec
	roundTrip *prometheus.HistogramVec
	probes    *prometheus.CounterVec
	outages   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vigil_watch_up", Help: "1 if the watched broker's last probe succeeded, 0 if it failed or none ran yet.",
		}, []string{"target"}),
		roundTrip: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "vigil_watch_round_trip_seconds", Help: "QoS 1 publish to the probe receiving its own message back, by watched broker.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"target"}),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_watch_probes_total", Help: "Probes of watched brokers by result (ok, failed).",
		}, []string{"target", "result"}),
		outages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_watch_outages_total", Help: "Outages of watched brokers seen starting.",
		}, []string{"target"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.up, m.roundTrip, m.probes, m.outages} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// init makes every target's series exist before its first probe.
func (m *metrics) init(target string) {
	m.up.WithLabelValues(target).Set(0)
	m.probes.WithLabelValues(target, "ok")
	m.probes.WithLabelValues(target, "failed")
	m.outages.WithLabelValues(target)
}

func (m *metrics) observe(p Probe, outageStarted bool) {
	if p.OK {
		m.up.WithLabelValues(p.Target).Set(1)
		m.roundTrip.WithLabelValues(p.Target).Observe(p.RoundTripMS / 1000)
		m.probes.WithLabelValues(p.Target, "ok").Inc()
	} else {
		m.up.WithLabelValues(p.Target).Set(0)
		m.probes.WithLabelValues(p.Target, "failed").Inc()
	}
	if outageStarted {
		m.outages.WithLabelValues(p.Target).Inc()
	}
}
