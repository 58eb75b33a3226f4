package users

import (
	"sync"
	"time"
)

// Limiter slows down password guessing. Every try of a key (an IP
// address, a username) is counted before its password is checked, so that
// tries made in parallel cannot slip past the limit: a key with max tries
// within Window is refused until the oldest is Window old. A right
// password takes its own try back (Release) or clears the key (Succeed).
type Limiter struct {
	Max    int // tries per Window for a client address; usernames get UserFactor times as many
	Window time.Duration
	Now    func() time.Time

	mu    sync.Mutex
	tries map[string][]time.Time
}

// UserFactor: a username may be tried this many times Max in a Window, so
// that one client's guesses cannot lock its owner out, while guesses from
// many addresses still are limited.
const UserFactor = 4

func (l *Limiter) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}

// Attempt counts a try of key, allowed max tries per Window, and returns
// 0; or, if key has had its tries, counts nothing and returns how long it
// must wait.
func (l *Limiter) Attempt(key string, max int) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if wait := l.waitLocked(key, max, now); wait > 0 {
		return wait
	}
	if l.tries == nil {
		l.tries = map[string][]time.Time{}
	}
	if len(l.tries) > 100000 { // bound memory under a flood of keys
		clear(l.tries)
	}
	l.tries[key] = append(l.tries[key], now)
	return 0
}

// Locked returns how long key must wait if it has had its max tries
// within Window, else 0; it counts nothing.
func (l *Limiter) Locked(key string, max int) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.waitLocked(key, max, l.now())
}

// waitLocked returns how long key must wait at now, l.mu held.
func (l *Limiter) waitLocked(key string, max int, now time.Time) time.Duration {
	l.prune(key, now)
	if f := l.tries[key]; len(f) >= max {
		return f[0].Add(l.Window).Sub(now)
	}
	return 0
}

// Release takes back key's newest try: its password was right, or never
// checked.
func (l *Limiter) Release(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if f := l.tries[key]; len(f) > 0 {
		l.tries[key] = f[:len(f)-1]
	}
}

// Succeed clears key.
func (l *Limiter) Succeed(key string) {
	l.mu.Lock()
	delete(l.tries, key)
	l.mu.Unlock()
}

func (l *Limiter) prune(key string, now time.Time) {
	f := l.tries[key]
	i := 0
	for i < len(f) && now.Sub(f[i]) >= l.Window {
		i++
	}
	if i == len(f) {
		delete(l.tries, key)
	} else {
		l.tries[key] = f[i:]
	}
}
