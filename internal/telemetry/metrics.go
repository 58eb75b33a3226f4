package telemetry

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	received     *prometheus.CounterVec
	rejected     *prometheus.CounterVec
	stored       prometheus.Counter
	lost         prometheus.Counter
	storeErrors  prometheus.Counter
	batchSeconds prometheus.Histogram
	latency      prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, queueLen func() float64) (*metrics, error) {
	m := &metrics{
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_telemetry_received_total", Help: "Valid device messages received, by kind (reading, status).",
		}, []string{"kind"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_telemetry_rejected_total", Help: "Device messages rejected, by reason (oversized, malformed, invalid, unknown_topic, shutdown).",
		}, []string{"reason"}),
		stored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_telemetry_stored_total", Help: "Readings written to the database.",
		}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_telemetry_lost_total", Help: "Events given up at shutdown because the database kept failing.",
		}),
		storeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_telemetry_store_errors_total", Help: "Failed batch writes (each is retried).",
		}),
		batchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "vigil_telemetry_batch_seconds", Help: "Time to write one batch.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "vigil_telemetry_latency_seconds",
			Help:    "From the device's timestamp to the start of the write that stored the reading (device clocks permitting).",
			Buckets: prometheus.ExponentialBuckets(0.001, 1.25, 50), // 1 ms to 60 s in 25% steps
		}),
	}
	queue := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "vigil_telemetry_queue_length", Help: "Events waiting to be written.",
	}, queueLen)
	if reg != nil {
		for _, c := range []prometheus.Collector{m.received, m.rejected, m.stored, m.lost, m.storeErrors, m.batchSeconds, m.latency, queue} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	for _, r := range []string{ReasonOversized, ReasonMalformed, ReasonInvalid, ReasonUnknownTopic} {
		m.rejected.WithLabelValues(r) // export zeros, so that rates work from the start
	}
	return m, nil
}
