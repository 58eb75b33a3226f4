// Package sub is the paper's subscriber grown up: it subscribes to topic
// filters on any MQTT broker and hands each message on, and it measures
// what arrives: rate, end-to-end latency from the devices' timestamps, and
// loss, duplicates and reordering from their seq counters.
package sub

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/vigilhq/vigil/internal/measure"
	"github.com/vigilhq/vigil/internal/mqttconn"
)

// Options say where to subscribe.
type Options struct {
	Brokers  []string
	Filters  []string
	QoS      int
	Username string
	Password string
	TLS      mqttconn.TLS
	ClientID string // default: vigil-sub-<random>
}

// Message is one received message.
type Message struct {
	Topic    string
	Payload  []byte
	QoS      byte
	Retained bool
	Received time.Time
}

// Subscriber is a connected subscription.
type Subscriber struct {
	cm   *autopaho.ConnectionManager
	stop context.CancelFunc
}

// Subscribe connects, subscribes (again after every reconnect) and calls
// handle for each message on paho's goroutine, acknowledging QoS 1 and 2
// messages after handle returns. It returns once the first subscription is
// acknowledged, or an error.
func Subscribe(ctx context.Context, o Options, handle func(Message)) (*Subscriber, error) {
	if o.ClientID == "" {
		o.ClientID = fmt.Sprintf("vigil-sub-%x", time.Now().UnixNano()&0xffffffff)
	}
	subs := make([]paho.SubscribeOptions, len(o.Filters))
	for i, f := range o.Filters {
		subs[i] = paho.SubscribeOptions{Topic: f, QoS: byte(o.QoS)}
	}
	life, cancel := context.WithCancel(context.Background())
	cm, err := mqttconn.Connect(ctx, life, mqttconn.Client{
		Brokers: o.Brokers, TLS: o.TLS, Username: o.Username, Password: o.Password, ClientID: o.ClientID,
		Subscriptions: subs,
		OnMessage: func(p *paho.Publish) {
			handle(Message{Topic: p.Topic, Payload: p.Payload, QoS: p.QoS, Retained: p.Retain, Received: time.Now()})
		},
	})
	if cm == nil {
		cancel()
		return nil, err
	}
	s := &Subscriber{cm: cm, stop: cancel}
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close disconnects.
func (s *Subscriber) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.cm.Disconnect(ctx)
	s.stop()
	<-s.cm.Done()
	return nil
}

// Stats measures a stream of device messages.
type Stats struct {
	start    time.Time
	received atomic.Int64
	retained atomic.Int64
	Latency  *measure.Latency
	Seqs     *measure.Sequences
}

// NewStats returns empty stats starting now.
func NewStats() *Stats {
	return &Stats{start: time.Now(), Latency: measure.NewLatency(), Seqs: measure.NewSequences()}
}

// stamp is the part of a device payload that Stats reads.
type stamp struct {
	SensorID  json.RawMessage `json:"sensor_id"`
	Timestamp string          `json:"timestamp"`
	Seq       *int64          `json:"seq"`
}

// Add measures one message. Retained messages are counted apart: they are
// old news, not traffic.
func (s *Stats) Add(m Message) {
	if m.Retained {
		s.retained.Add(1)
		return
	}
	s.received.Add(1)
	var st stamp
	if json.Unmarshal(m.Payload, &st) != nil {
		return
	}
	if st.Timestamp != "" {
		if t, err := time.Parse(time.RFC3339Nano, st.Timestamp); err == nil {
			s.Latency.Record(m.Received.Sub(t))
		}
	}
	if st.Seq != nil {
		s.Seqs.Add(m.Topic+"|"+string(st.SensorID), *st.Seq)
	}
}

// Received returns the count of live (not retained) messages.
func (s *Stats) Received() int64 { return s.received.Load() }

// Report is what `vigil sub --stats` prints at the end.
type Report struct {
	Received int64           `json:"received"`
	Retained int64           `json:"retained"`
	Seconds  float64         `json:"duration_s"`
	Rate     float64         `json:"msgs_per_s"`
	Latency  measure.Summary `json:"latency"`
	Loss     measure.Loss    `json:"loss"`
	LossPct  float64         `json:"loss_pct"`
}

// Report returns the measurements so far.
func (s *Stats) Report() Report {
	secs := time.Since(s.start).Seconds()
	r := Report{
		Received: s.received.Load(),
		Retained: s.retained.Load(),
		Seconds:  secs,
		Latency:  s.Latency.Summary(),
		Loss:     s.Seqs.Totals(),
	}
	r.Rate = float64(r.Received) / max(secs, 1e-9)
	if n := r.Loss.Received + r.Loss.Lost; n > 0 {
		r.LossPct = 100 * float64(r.Loss.Lost) / float64(n)
	}
	return r
}

func (r Report) String() string {
	return fmt.Sprintf(`received     %d messages in %.1fs (%.0f msgs/s), %d retained
latency      p50 %.2fms  p95 %.2fms  p99 %.2fms  max %.2fms  (%d timed, from the devices' timestamps)
loss         %d lost (%.3f%%), %d duplicates, %d reordered, over %d sequences
`, r.Received, r.Seconds, r.Rate, r.Retained, r.Latency.P50ms, r.Latency.P95ms, r.Latency.P99ms, r.Latency.Maxms, r.Latency.Count,
		r.Loss.Lost, r.LossPct, r.Loss.Duplicates, r.Loss.Reordered, r.Loss.Sources)
}
