package testkit

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestWaitForReturnsOnceTheConditionHolds(t *testing.T) {
	start := time.Now()
	WaitFor(t, 5*time.Second, "a quarter second", func() bool { return time.Since(start) > 250*time.Millisecond })
	if time.Since(start) < 250*time.Millisecond {
		t.Fatal("returned before the condition held")
	}
}

func TestBufferKeepsEveryConcurrentWrite(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() { defer wg.Done(); fmt.Fprintf(&b, "%02d\n", i) }()
	}
	wg.Wait()
	if n := len(b.String()); n != 150 {
		t.Fatalf("%d bytes, want 150", n)
	}
}
