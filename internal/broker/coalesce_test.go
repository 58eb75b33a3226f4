package broker

import (
	"bytes"
	"errors"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// countingConn is a connection that records what is written to it and how
// many writes it took.
type countingConn struct {
	net.Conn // nil: only the methods below are used
	mu       sync.Mutex
	writes   int
	out      bytes.Buffer
	closed   bool
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	c.writes++
	return c.out.Write(p)
}

func (c *countingConn) SetWriteDeadline(time.Time) error { return nil }

func (c *countingConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	return nil
}

func (c *countingConn) state() (writes int, out []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes, bytes.Clone(c.out.Bytes())
}

// A subscriber sent thousands of messages a second gets them in a few
// writes, in order; a connection written to now and then is written to
// at once.
func TestBusyConnectionsWritesAreGathered(t *testing.T) {
	under := &countingConn{}
	c := newCheckedConn(under, 1<<20, nil)

	if _, err := c.Write([]byte("first")); err != nil {
		t.Fatal(err)
	}
	if n, out := under.state(); n != 1 || string(out) != "first" {
		t.Fatalf("a lone write: %d writes, %q written; want 1 write at once", n, out)
	}

	// A burst right after it: 500 packets within a few milliseconds.
	var want bytes.Buffer
	want.WriteString("first")
	start := time.Now()
	for i := range 500 {
		p := []byte{0x30, 2, byte(i), byte(i >> 8)} // a QoS 0 PUBLISH's bytes
		want.Write(p)
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	burst := time.Since(start)
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, out := under.state()
		if bytes.Equal(out, want.Bytes()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 5 s, %d of %d bytes written", len(out), want.Len())
		}
		time.Sleep(time.Millisecond)
	}
	n, _ := under.state()
	// One write per coalescing window the burst lasted, plus the first and
	// the last flush; without gathering it would be 501.
	if limit := 3 + int(burst/coalesceWindow); n > limit {
		t.Errorf("a burst of 500 writes over %v took %d writes to the network, want at most %d", burst, n, limit)
	}
	t.Logf("500 packets in %v: %d writes", burst, n)

	// Held bytes are written before the connection closes.
	c.Write([]byte("0x"))
	c.Write([]byte("0bye"))
	c.Close()
	if _, out := under.state(); !bytes.HasSuffix(out, []byte("0x0bye")) {
		t.Errorf("closing lost what was held: output ends %q", out[max(0, len(out)-8):])
	}
	if _, err := c.Write([]byte("late")); err == nil {
		t.Error("a write after Close succeeded")
	}
}

// A write to the network that fails closes the connection, and the next
// Write says so.
func TestAFailedHeldWriteClosesTheConnection(t *testing.T) {
	under := &countingConn{}
	c := newCheckedConn(under, 1<<20, nil)
	c.Write([]byte("a"))
	under.Close() // the peer went away
	c.Write([]byte("b"))
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := c.Write([]byte("c"))
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("writes still succeed 5 s after the connection broke")
		}
		time.Sleep(time.Millisecond)
	}
}

// An acknowledgement is written at once, with the messages held before it
// and in their order: a client that waits for each PUBACK before it
// publishes again got one a millisecond at most when they were held.
func TestAnAcknowledgementIsNotHeld(t *testing.T) {
	under := &countingConn{}
	c := newCheckedConn(under, 1<<20, nil)
	publish := []byte{0x30, 3, 0, 1, 'm'}
	c.Write(publish) // at once: nothing was written in the last millisecond
	c.Write(publish) // held: right after the last
	for i := range 3 {
		puback := []byte{0x40, 2, 0, byte(i + 1)}
		if _, err := c.Write(puback); err != nil {
			t.Fatal(err)
		}
		want := append(bytes.Repeat(publish, 2), []byte{0x40, 2, 0, 1, 0x40, 2, 0, 2, 0x40, 2, 0, 3}[:4*(i+1)]...)
		if n, out := under.state(); !bytes.Equal(out, want) || n != 2+i {
			t.Fatalf("PUBACK %d: %d writes, % x written; want % x in %d writes, at once", i+1, n, out, want, 2+i)
		}
	}
}

// stuckConn is a connection whose every write times out, as a WebSocket
// connection's do once one has (gorilla/websocket keeps the first write
// error and returns it for every write after it).
type stuckConn struct {
	net.Conn // nil: only the methods below are used
	writes   int
}

func (c *stuckConn) Write([]byte) (int, error) {
	c.writes++
	return 0, &net.OpError{Op: "write", Net: "tcp", Err: os.ErrDeadlineExceeded}
}
func (*stuckConn) SetWriteDeadline(time.Time) error { return nil }
func (*stuckConn) Close() error                     { return nil }

// A connection that stalled is counted once in
// vigil_mqtt_write_timeouts_total, however many writes mochi tries on it
// before it ends the client (it counted 2 once in a CI run, for a
// WebSocket subscriber that stopped reading); the writes after the first
// failure return its error without touching the network.
func TestAStalledConnectionIsCountedOnce(t *testing.T) {
	under := &stuckConn{}
	c := newCheckedConn(under, 1<<20, nil)
	c.writeTimeout = time.Second
	stalls := 0
	c.onStall = func() { stalls++ }
	puback := []byte{0x40, 2, 0, 1}
	for i := range 3 {
		if _, err := c.Write(puback); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("write %d: %v, want the timeout", i, err)
		}
	}
	if stalls != 1 || under.writes != 1 {
		t.Errorf("3 writes to a stalled connection: %d stalls counted, %d writes to the network; want 1 and 1", stalls, under.writes)
	}
}
