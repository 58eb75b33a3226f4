package coord

import (
	"context"
	"sync"
	"time"
)

// saver writes what the coordinator decides (events, clips, history) to
// the store on a goroutine of its own, in the order it was decided, so
// that the coordinator never waits for the database: a detection reaches
// its camera as fast with the database busy (a fleet's readings filling
// the telemetry queue) or failing (a full disk) as with it idle
// (BenchmarkDetectionToCamera). A clip is handed to the finisher only
// once the save before it is done.
type saver struct {
	mu     sync.Mutex
	queue  []func(context.Context)
	wake   chan struct{}
	closed bool
	done   chan struct{}
}

func newSaver() *saver {
	return &saver{wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// add queues f; it never blocks.
func (s *saver) add(f func(context.Context)) {
	s.mu.Lock()
	s.queue = append(s.queue, f)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run writes until close, and what was queued before it.
func (s *saver) run() {
	defer close(s.done)
	for {
		s.mu.Lock()
		batch, closed := s.queue, s.closed
		s.queue = nil
		s.mu.Unlock()
		for _, f := range batch {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			f(ctx)
			cancel()
		}
		if len(batch) > 0 {
			continue
		}
		if closed {
			return
		}
		<-s.wake
	}
}

// close writes what is queued and stops.
func (s *saver) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	<-s.done
}
