package users

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/vigilhq/vigil"
)

// Five tries within the window lock a key until the oldest is a window
// old; other keys are not affected; a released try does not count; a
// success clears the key.
func TestLimiterLocksAfterMaxTriesWithinTheWindow(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := &Limiter{Max: 5, Window: 5 * time.Minute, Now: func() time.Time { return now }}
	for i := range 5 {
		if w := l.Attempt("ip:1", 5); w != 0 {
			t.Fatalf("try %d must wait %v", i+1, w)
		}
		now = now.Add(time.Minute)
	}
	// Tries at 0..4 min; now 5 min less a second.
	now = now.Add(-time.Second)
	if w := l.Attempt("ip:1", 5); w != time.Second {
		t.Errorf("after 5 tries: wait %v, want 1s", w)
	}
	if w := l.Attempt("ip:2", 5); w != 0 {
		t.Errorf("another key waits %v", w)
	}
	now = now.Add(time.Second)
	if w := l.Attempt("ip:1", 5); w != 0 {
		t.Errorf("once the oldest try is a window old: wait %v", w)
	}
	if w := l.Attempt("ip:1", 5); w != time.Minute {
		t.Errorf("5 tries within the window again: wait %v, want 1m", w)
	}
	l.Release("ip:1")
	if w := l.Attempt("ip:1", 5); w != 0 {
		t.Errorf("after a released try: wait %v", w)
	}
	l.Succeed("ip:1")
	for i := range 5 {
		if w := l.Attempt("ip:1", 5); w != 0 {
			t.Fatalf("after a success, try %d waits %v", i+1, w)
		}
	}
}

// Tries made at once cannot pass the limit: each is counted before it is
// checked.
func TestLimiterHoldsUnderParallelTries(t *testing.T) {
	l := &Limiter{Max: 5, Window: time.Minute}
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for range 200 {
		wg.Go(func() {
			if l.Attempt("user:admin", 5) == 0 {
				mu.Lock()
				allowed++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if allowed != 5 {
		t.Errorf("%d of 200 parallel tries allowed, want 5", allowed)
	}
}

// A locked address gets the same answer for the right password as for a
// wrong one, even one verified a moment ago: no free tests against the
// cache.
func TestALockedClientCannotTestPasswordsAgainstTheCache(t *testing.T) {
	h, err := HashPassword("right-password", 4)
	if err != nil {
		t.Fatal(err)
	}
	v := NewVerifier(getter{"door": {Name: "door", Role: RoleDevice, PasswordHash: h}}, time.Minute, 4)
	v.Limiter = &Limiter{Max: 5, Window: time.Minute}
	ctx := context.Background()
	if _, err := v.Login(ctx, "10.0.0.1", "door", "right-password"); err != nil {
		t.Fatal(err) // the device logs in; its password is now cached
	}
	for range 5 {
		v.Login(ctx, "10.0.0.9", "door", "guess")
	}
	_, right := v.Login(ctx, "10.0.0.9", "door", "right-password")
	_, wrong := v.Login(ctx, "10.0.0.9", "door", "another-guess")
	var tm1, tm2 *TooManyError
	if !errors.As(right, &tm1) || !errors.As(wrong, &tm2) {
		t.Errorf("from the locked address: right password %v, wrong %v; want both refused as too many", right, wrong)
	}
}

type getter map[string]*User

func (g getter) GetUser(_ context.Context, name string) (*User, error) {
	if u, ok := g[name]; ok {
		return u, nil
	}
	return nil, vigil.Errorf(vigil.ENotFound, "no user %q", name)
}
