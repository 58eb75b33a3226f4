// Package measure records what Vigil's load tools report: latency
// percentiles (HDR histograms), message loss and duplicates from per-device
// sequence numbers, and live progress lines on the terminal.
package measure

import (
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latency records durations from 1µs to 10 min with 3 significant digits.
// It is safe for concurrent use.
type Latency struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
}

// NewLatency returns an empty recorder.
func NewLatency() *Latency {
	return &Latency{h: hdrhistogram.New(1, int64(10*time.Minute/time.Microsecond), 3)}
}

// Record adds one duration; negative durations (clock steps) count as 0.
func (l *Latency) Record(d time.Duration) {
	us := max(int64(d/time.Microsecond), 1)
	l.mu.Lock()
	l.h.RecordValue(min(us, l.h.HighestTrackableValue()))
	l.mu.Unlock()
}

// Reset forgets everything recorded so far, to measure from now on.
func (l *Latency) Reset() {
	l.mu.Lock()
	l.h.Reset()
	l.mu.Unlock()
}

// Quantile returns the duration at quantile q (0.5 for the median).
func (l *Latency) Quantile(q float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return time.Duration(l.h.ValueAtQuantile(q*100)) * time.Microsecond
}

// Count returns how many durations were recorded.
func (l *Latency) Count() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.h.TotalCount()
}

// Summary is a latency distribution for reports.
type Summary struct {
	Count int64   `json:"count"`
	P50ms float64 `json:"p50_ms"`
	P95ms float64 `json:"p95_ms"`
	P99ms float64 `json:"p99_ms"`
	Maxms float64 `json:"max_ms"`
}

// Summary returns the count and the usual percentiles in milliseconds.
func (l *Latency) Summary() Summary {
	l.mu.Lock()
	defer l.mu.Unlock()
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Summary{
		Count: l.h.TotalCount(),
		P50ms: ms(l.h.ValueAtQuantile(50)),
		P95ms: ms(l.h.ValueAtQuantile(95)),
		P99ms: ms(l.h.ValueAtQuantile(99)),
		Maxms: ms(l.h.Max()),
	}
}
