// Package ratelog logs a kind of message at most once per interval, with
// the count of those held back: for events a client can cause at will
// (bad payloads, forged control messages, malformed packets), which must
// be visible without letting the client fill the log.
package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Logger logs a message at most once per interval per key, and says how
// many were held back since the last one. A flood of bad payloads costs a
// counter increment each, not a log line each. Keys are kinds of message
// chosen by the caller, never values a client picks (they are kept).
type Logger struct {
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

// New returns a Logger that logs through log at most once per interval
// per key.
func New(log *slog.Logger, interval time.Duration) *Logger {
	return &Logger{log: log, interval: interval, now: time.Now, keys: map[string]*rateKey{}}
}

// Warn logs msg with args at warning level, unless a message of key was
// logged less than an interval ago; then it only counts it, and the next
// message of key logged says how many were not ("similar_not_logged").
func (r *Logger) Warn(key, msg string, args ...any) { r.emit(slog.LevelWarn, key, msg, args) }

// Info is Warn at info level.
func (r *Logger) Info(key, msg string, args ...any) { r.emit(slog.LevelInfo, key, msg, args) }

func (r *Logger) emit(level slog.Level, key, msg string, args []any) {
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
	r.log.Log(context.Background(), level, msg, args...)
}
