package camera

import (
	"context"
	"sync"
	"time"
)

// Ring keeps the last frames of a live source (the pre-roll) and hands
// them, then new frames, to streams. It is safe for concurrent use.
type Ring struct {
	keep   time.Duration
	limits Params

	mu     sync.Mutex
	frames []Frame
	subs   map[chan Frame]struct{}
}

// NewRing keeps keep of frames; limits describe the frames it gets.
func NewRing(keep time.Duration, limits Params) *Ring {
	return &Ring{keep: keep, limits: limits, subs: map[chan Frame]struct{}{}}
}

// Limits returns the frames' size and rate.
func (r *Ring) Limits() Params { return r.limits }

// Add stores a frame and gives it to the streams. A stream too slow to take
// it loses it (counted by the agent as a gap), never holding up capture.
func (r *Ring) Add(f Frame) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.frames = append(r.frames, f)
	cut := f.At.Add(-r.keep)
	i := 0
	for i < len(r.frames) && r.frames[i].At.Before(cut) {
		i++
	}
	r.frames = r.frames[i:]
	for ch := range r.subs {
		select {
		case ch <- f:
		default:
		}
	}
}

// Stream implements Source: the buffered frames from `from`, then live ones
// until `until`. The frames are as captured: p is not applied.
func (r *Ring) Stream(ctx context.Context, from, until time.Time, _ Params) <-chan Frame {
	out := make(chan Frame, 64)
	live := make(chan Frame, 64)
	r.mu.Lock()
	var backlog []Frame
	for _, f := range r.frames {
		if !f.At.Before(from) {
			backlog = append(backlog, f)
		}
	}
	r.subs[live] = struct{}{}
	r.mu.Unlock()
	go func() {
		defer close(out)
		defer func() {
			r.mu.Lock()
			delete(r.subs, live)
			r.mu.Unlock()
		}()
		send := func(f Frame) bool {
			select {
			case out <- f:
				return true
			case <-ctx.Done():
				return false
			}
		}
		last := time.Time{}
		for _, f := range backlog {
			if !send(f) {
				return
			}
			last = f.At
		}
		timer := time.NewTimer(time.Until(until))
		defer timer.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
				return
			case f := <-live:
				if !f.At.After(last) {
					continue // already sent from the backlog
				}
				if f.At.After(until) || !send(f) {
					return
				}
			}
		}
	}()
	return out
}
