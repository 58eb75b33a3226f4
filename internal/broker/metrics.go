package broker

import (
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// registerMetrics exports the broker's $SYS counters as Prometheus metrics,
// and extra collectors (the blocks').
func registerMetrics(reg prometheus.Registerer, m *mqtt.Server, extra ...prometheus.Collector) error {
	info := m.Info
	gauge := func(name, help string, v *int64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "vigil_mqtt_" + name, Help: help},
			func() float64 { return float64(atomic.LoadInt64(v)) })
	}
	counter := func(name, help string, v *int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "vigil_mqtt_" + name, Help: help},
			func() float64 { return float64(atomic.LoadInt64(v)) })
	}
	for _, c := range append([]prometheus.Collector{
		gauge("clients_connected", "MQTT clients connected now.", &info.ClientsConnected),
		counter("messages_received_total", "PUBLISH packets received from clients.", &info.MessagesReceived),
		counter("messages_sent_total", "PUBLISH packets sent to clients.", &info.MessagesSent),
		counter("messages_dropped_total", "Messages dropped because a client's queue was full.", &info.MessagesDropped),
		counter("bytes_received_total", "Bytes received from clients.", &info.BytesReceived),
		counter("bytes_sent_total", "Bytes sent to clients.", &info.BytesSent),
		gauge("retained_messages", "Retained messages held.", &info.Retained),
		gauge("inflight_messages", "QoS 1/2 messages in flight.", &info.Inflight),
		gauge("subscriptions", "Active subscriptions.", &info.Subscriptions),
	}, extra...) {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
