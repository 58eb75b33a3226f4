// Package hub fans out what happens in Vigil (readings, device changes,
// detections, clips, agents, alerts) to live subscribers: the web UI's
// server-sent events. Publishing never blocks: a subscriber too slow to keep
// up loses messages (it is told how many at its next message).
package hub

import (
	"sync"
	"sync/atomic"
)

// Message is one thing that happened.
type Message struct {
	Event string // one of the Event constants (events.go)
	Data  any    // marshalled as JSON
	// Key narrows a message to the subscribers that ask for it (for
	// readings: the device id).
	Key string
}

// Hub is a set of subscribers.
type Hub struct {
	mu   sync.Mutex
	subs map[*Sub]struct{}
	n    atomic.Int32
}

// Sub is one subscriber.
type Sub struct {
	C       chan Message
	keys    map[string]bool // nil: every key
	events  map[string]bool // nil: every event
	Dropped atomic.Int64
}

// Subscribe returns a subscription to the given events ("": all) and keys
// (nil: all); Unsubscribe ends it.
func (h *Hub) Subscribe(events []string, keys []string) *Sub {
	s := &Sub{C: make(chan Message, 256)}
	if len(events) > 0 {
		s.events = map[string]bool{}
		for _, e := range events {
			s.events[e] = true
		}
	}
	if len(keys) > 0 {
		s.keys = map[string]bool{}
		for _, k := range keys {
			s.keys[k] = true
		}
	}
	h.mu.Lock()
	if h.subs == nil {
		h.subs = map[*Sub]struct{}{}
	}
	h.subs[s] = struct{}{}
	h.n.Store(int32(len(h.subs)))
	h.mu.Unlock()
	return s
}

// Unsubscribe ends a subscription.
func (h *Hub) Unsubscribe(s *Sub) {
	h.mu.Lock()
	delete(h.subs, s)
	h.n.Store(int32(len(h.subs)))
	h.mu.Unlock()
}

// Active reports whether anyone listens: publishers of frequent messages
// can skip building them.
func (h *Hub) Active() bool { return h.n.Load() > 0 }

// Wants reports whether a subscriber listens for event.
func (h *Hub) Wants(event string) bool {
	if !h.Active() {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		if s.events == nil || s.events[event] {
			return true
		}
	}
	return false
}

// Publish sends m to the subscribers that want it.
func (h *Hub) Publish(m Message) {
	if !h.Active() {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		if s.events != nil && !s.events[m.Event] {
			continue
		}
		if s.keys != nil && m.Key != "" && !s.keys[m.Key] {
			continue
		}
		select {
		case s.C <- m:
		default:
			s.Dropped.Add(1)
		}
	}
}
