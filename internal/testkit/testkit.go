// Package testkit holds the few helpers Vigil's tests share: waiting for
// a condition, and a buffer that a test reads while others write to it.
// Real peers (Mosquitto, certificates, MQTT sessions) are in testpeer.
package testkit

import (
	"bytes"
	"sync"
	"testing"
	"time"
)

// WaitFor polls cond until it holds, and fails the test (naming what it
// waited for) if it does not within the given time.
func WaitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	// Polls soon at first (most conditions hold within a millisecond or
	// two), then every 5 ms.
	for step := time.Millisecond; !cond(); step = min(2*step, 5*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(step)
	}
}

// Buffer is a bytes.Buffer safe for concurrent use: a log, or a command's
// output, that a test reads while it is being written.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
