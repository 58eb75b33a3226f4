package broker

import (
	"testing"
	"time"
)

func TestWindowEstimatesTheRateOverTheLastWindow(t *testing.T) {
	const size = int64(3 * time.Second)
	const limit = 300 // 100 a second over 3 s
	type burst struct {
		at    time.Duration // start
		n     int           // events
		every time.Duration // apart
	}
	tests := []struct {
		name   string
		bursts []burst
		over   bool
		within time.Duration // when over: at most this long after the first event
	}{
		{"a steady 90 a second is never a flood", []burst{{0, 900, time.Second / 90}}, false, 0},
		{"a steady 99 a second across window edges is never a flood", []burst{{1500 * time.Millisecond, 2000, time.Second / 99}}, false, 0},
		{"a steady 150 a second is a flood within 3 s", []burst{{0, 1500, time.Second / 150}}, true, 3 * time.Second},
		{"301 at once is a flood", []burst{{0, 301, time.Microsecond}}, true, time.Millisecond},
		{"300 at once is not", []burst{{0, 300, time.Microsecond}}, false, 0},
		{"two bursts of 200 two windows apart are not", []burst{{0, 200, time.Millisecond}, {7 * time.Second, 200, time.Millisecond}}, false, 0},
		{"two bursts of 200 a second apart are", []burst{{0, 200, time.Millisecond}, {time.Second, 200, time.Millisecond}}, true, 1300 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWindow(size)
			epoch := int64(5 * time.Second) // not aligned to the window
			var overAt time.Duration = -1
			for _, b := range tt.bursts {
				for i := range b.n {
					at := b.at + time.Duration(i)*b.every
					now := epoch + int64(at)
					w.add(now)
					if over, _ := w.over(now, limit); over && overAt < 0 {
						overAt = at
					}
				}
			}
			if got := overAt >= 0; got != tt.over {
				t.Fatalf("flood = %v (at %v), want %v", got, overAt, tt.over)
			}
			if tt.over && overAt > tt.within {
				t.Errorf("flood seen at %v, want within %v", overAt, tt.within)
			}
		})
	}
}
