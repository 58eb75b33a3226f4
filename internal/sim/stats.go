package sim

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/vigilhq/vigil/internal/measure"
)

// Stats are a simulation's live counters.
type Stats struct {
	Devices       int64
	Connected     atomic.Int64 // connected now
	EverConnected atomic.Int64 // devices that connected at least once
	Published     atomic.Int64 // readings the broker accepted (acknowledged at QoS 1 and 2)
	Errors        atomic.Int64 // readings that failed to publish
	ConnectErrors atomic.Int64 // failed connection attempts
	Reconnects    atomic.Int64 // connections after a device's first
	Suppressed    atomic.Int64 // readings not sent because of an injected fault
	Ack           *measure.Latency

	start        time.Time
	allConnected atomic.Int64 // unix ns when every device had connected once; 0 until then
}

func newStats(devices int) *Stats {
	return &Stats{Devices: int64(devices), Ack: measure.NewLatency(), start: time.Now()}
}

// Summary is the final report of a simulation; `vigil sim --json` prints it.
type Summary struct {
	Devices       int64           `json:"devices"`
	Connected     int64           `json:"connected"` // devices that connected at least once
	ConnectedEnd  int64           `json:"connected_at_end"`
	Published     int64           `json:"published"`
	Errors        int64           `json:"errors"`
	ConnectErrors int64           `json:"connect_errors"`
	Reconnects    int64           `json:"reconnects"`
	Suppressed    int64           `json:"suppressed"`
	Seconds       float64         `json:"duration_s"`
	Rate          float64         `json:"msgs_per_s"`
	AllConnectedS float64         `json:"all_connected_s"` // -1 if some device never connected
	AckLatency    measure.Summary `json:"ack_latency"`
}

// Summary returns the counters now.
func (s *Stats) Summary() Summary {
	elapsed := time.Since(s.start).Seconds()
	all := -1.0
	if ns := s.allConnected.Load(); ns != 0 {
		all = time.Duration(ns - s.start.UnixNano()).Seconds()
	}
	pub := s.Published.Load()
	return Summary{
		Devices:       s.Devices,
		Connected:     s.EverConnected.Load(),
		ConnectedEnd:  s.Connected.Load(),
		Published:     pub,
		Errors:        s.Errors.Load(),
		ConnectErrors: s.ConnectErrors.Load(),
		Reconnects:    s.Reconnects.Load(),
		Suppressed:    s.Suppressed.Load(),
		Seconds:       elapsed,
		Rate:          float64(pub) / max(elapsed, 1e-9),
		AllConnectedS: all,
		AckLatency:    s.Ack.Summary(),
	}
}

// Line returns a one-line progress report; rate is over the last call.
func (s *Stats) Line(prevPublished *int64, prevAt *time.Time) string {
	now := time.Now()
	pub := s.Published.Load()
	rate := float64(pub-*prevPublished) / max(now.Sub(*prevAt).Seconds(), 1e-9)
	*prevPublished, *prevAt = pub, now
	return fmt.Sprintf("connected %d/%d  msgs/s %.0f  published %d  errors %d  reconnects %d  connect-errors %d",
		s.Connected.Load(), s.Devices, rate, pub, s.Errors.Load(), s.Reconnects.Load(), s.ConnectErrors.Load())
}

// String formats a summary for people.
func (s Summary) String() string {
	all := "never"
	if s.AllConnectedS >= 0 {
		all = fmt.Sprintf("%.1fs", s.AllConnectedS)
	}
	return fmt.Sprintf(`devices          %d (connected at least once: %d, all connected after %s)
published        %d in %.1fs (%.0f msgs/s)
errors           %d publish, %d connect; %d reconnects; %d readings suppressed by injected faults
ack latency      p50 %.2fms  p95 %.2fms  p99 %.2fms  max %.2fms
`, s.Devices, s.Connected, all, s.Published, s.Seconds, s.Rate, s.Errors, s.ConnectErrors, s.Reconnects, s.Suppressed,
		s.AckLatency.P50ms, s.AckLatency.P95ms, s.AckLatency.P99ms, s.AckLatency.Maxms)
}
