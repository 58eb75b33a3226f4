package users

import (
	"sync"
	"time"
)

// Limiter slows down password guessing: a key (an IP address, a username)
// with Max failures within Window is refused until the oldest of them is
// Window old. A success clears the key.
type Limiter struct {
	Max    int
	Window time.Duration
	Now    func() time.Time

	mu   sync.Mutex
	fail map[string][]time.Time
}

func (l *Limiter) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}

// Wait returns how long key must wait before its next try (0: go ahead).
func (l *Limiter) Wait(key string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.prune(key, now)
	f := l.fail[key]
	if len(f) < l.Max {
		return 0
	}
	return f[0].Add(l.Window).Sub(now)
}

// Fail records a failed try.
func (l *Limiter) Fail(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail == nil {
		l.fail = map[string][]time.Time{}
	}
	if len(l.fail) > 100000 { // bound memory under a flood of keys
		clear(l.fail)
	}
	now := l.now()
	l.prune(key, now)
	l.fail[key] = append(l.fail[key], now)
}

// Succeed clears key.
func (l *Limiter) Succeed(key string) {
	l.mu.Lock()
	delete(l.fail, key)
	l.mu.Unlock()
}

func (l *Limiter) prune(key string, now time.Time) {
	f := l.fail[key]
	i := 0
	for i < len(f) && now.Sub(f[i]) >= l.Window {
		i++
	}
	if i == len(f) {
		delete(l.fail, key)
	} else {
		l.fail[key] = f[i:]
	}
}
