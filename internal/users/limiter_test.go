package users

import (
	"testing"
	"time"
)

// Five failures within the window lock a key until the oldest is a window
// old; other keys are not affected; a success clears the key.
func TestLimiterLocksAfterMaxFailuresWithinTheWindow(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := &Limiter{Max: 5, Window: 5 * time.Minute, Now: func() time.Time { return now }}
	for i := range 5 {
		if w := l.Wait("ip:1"); w != 0 {
			t.Fatalf("try %d must wait %v", i+1, w)
		}
		l.Fail("ip:1")
		now = now.Add(time.Minute)
	}
	// Failures at 0..4 min; now 5 min: the first is exactly a window old.
	now = now.Add(-time.Second)
	if w := l.Wait("ip:1"); w != time.Second {
		t.Errorf("after 5 failures: wait %v, want 1s", w)
	}
	if w := l.Wait("ip:2"); w != 0 {
		t.Errorf("another key waits %v", w)
	}
	now = now.Add(time.Second)
	if w := l.Wait("ip:1"); w != 0 {
		t.Errorf("once the oldest failure is a window old: wait %v", w)
	}
	l.Fail("ip:1")
	if w := l.Wait("ip:1"); w != time.Minute {
		t.Errorf("a new failure within the window: wait %v, want 1m (until the second is old)", w)
	}
	l.Succeed("ip:1")
	if w := l.Wait("ip:1"); w != 0 {
		t.Errorf("after a success: wait %v", w)
	}
}
