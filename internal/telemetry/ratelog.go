package telemetry

import (
	"log/slog"
	"sync"
	"time"
)

// rateLog logs a message at most once per interval per key, and says how
// many were held back since the last one. A flood of bad payloads costs a
// counter increment each, not a log line each.
type rateLog struct {
	log      *slog.Logger
	interval time.Duration
	now      func() time.Time

	mu   sync.Mutex
	keys map[string]*rateKey
}

type rateKey struct {
	last       time.Time
	suppressed int
}

func newRateLog(log *slog.Logger, interval time.Duration) *rateLog {
	return &rateLog{log: log, interval: interval, now: time.Now, keys: map[string]*rateKey{}}
}

func (r *rateLog) warn(key, msg string, args ...any) {
	now := r.now()
	r.mu.Lock()
	k, ok := r.keys[key]
	if !ok {
		k = &rateKey{}
		r.keys[key] = k
	}
	if ok && now.Sub(k.last) < r.interval {
		k.suppressed++
		r.mu.Unlock()
		return
	}
	suppressed := k.suppressed
	k.last, k.suppressed = now, 0
	r.mu.Unlock()
	if suppressed > 0 {
		args = append(args, "similar_not_logged", suppressed)
	}
	r.log.Warn(msg, args...)
}
