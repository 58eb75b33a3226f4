package coord

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	decisions     *prometheus.CounterVec
	agentStates   *prometheus.CounterVec
	scaleUp       prometheus.Histogram
	firstFrame    prometheus.Histogram
	finishSeconds prometheus.Histogram
	clips         *prometheus.CounterVec
	deleted       prometheus.Counter
	reassigned    prometheus.Counter
	atMax         prometheus.Counter
	refused       *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, runtime string) (*metrics, error) {
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_coordinator_decisions_total", Help: "Coordinator decisions: scale_up, agent_ready, scale_down, assign, reassign, agent_lost, stream_end...",
		}, []string{"action"}),
		agentStates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_agent_state_changes_total", Help: "State changes agents reported (empty, busy, full): the paper's [Full] and [Empty].",
		}, []string{"state"}),
		scaleUp: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "vigil_agent_scale_up_seconds", Help: "From deciding to start an agent to its first heartbeat.",
			ConstLabels: prometheus.Labels{"runtime": runtime}, Buckets: prometheus.ExponentialBuckets(0.05, 1.5, 20),
		}),
		firstFrame: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "vigil_detection_to_first_frame_seconds", Help: "From the detecting reading to the first frame of its clip on disk.",
			Buckets: prometheus.ExponentialBuckets(0.01, 1.4, 25),
		}),
		finishSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "vigil_clip_finish_seconds", Help: "Time to make a clip's file (transcoding included).",
			Buckets: prometheus.ExponentialBuckets(0.05, 1.6, 20),
		}),
		clips: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_clips_total", Help: "Clips finished, by outcome (ready, failed).",
		}, []string{"state"}),
		deleted:    prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_clips_deleted_total", Help: "Clips removed by retention."}),
		reassigned: prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_streams_reassigned_total", Help: "Streams moved to another agent mid-clip."}),
		atMax:      prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_autoscale_at_max_total", Help: "Times streams waited because agents were at agents.max."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_coordinator_refused_messages_total", Help: "Agent and camera reports the coordinator refused, by topic (heartbeat, state, segment, stream) and reason (other_client, other_login, not_connected, bad_addr, other_camera).",
		}, []string{"topic", "reason"}),
	}
	if reg == nil {
		return m, nil
	}
	// A node that leads again in the same process makes a coordinator
	// again: it counts on in the collectors of the one before.
	err := errors.Join(
		register(reg, &m.decisions), register(reg, &m.agentStates), register(reg, &m.scaleUp), register(reg, &m.firstFrame),
		register(reg, &m.finishSeconds), register(reg, &m.clips), register(reg, &m.deleted), register(reg, &m.reassigned),
		register(reg, &m.atMax), register(reg, &m.refused))
	if err != nil {
		return nil, err
	}
	return m, nil
}

// register registers *c, or makes *c the collector registered before in
// its place.
func register[T prometheus.Collector](reg prometheus.Registerer, c *T) error {
	err := reg.Register(*c)
	if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
		if existing, ok := are.ExistingCollector.(T); ok {
			*c = existing
			return nil
		}
	}
	return err
}
