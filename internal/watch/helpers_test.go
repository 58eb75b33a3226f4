package watch

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// events collects a watcher's events with their arrival times.
type events struct {
	mu      sync.Mutex
	list    []Event
	arrived []time.Time
	changed chan struct{}
}

func newEvents() *events { return &events{changed: make(chan struct{}, 1)} }

func (e *events) add(ev Event) {
	e.mu.Lock()
	e.list, e.arrived = append(e.list, ev), append(e.arrived, time.Now())
	e.mu.Unlock()
	select {
	case e.changed <- struct{}{}:
	default:
	}
}

// all returns the events so far as "kind target" strings.
func (e *events) all() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, ev := range e.list {
		out = append(out, ev.Kind+" "+ev.Target)
	}
	return out
}

// wait returns the first event of kind for target and when it arrived,
// failing the test after d.
func (e *events) wait(t *testing.T, kind, target string, d time.Duration) (Event, time.Time) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		e.mu.Lock()
		for i, ev := range e.list {
			if ev.Kind == kind && ev.Target == target {
				at := e.arrived[i]
				e.mu.Unlock()
				return ev, at
			}
		}
		e.mu.Unlock()
		select {
		case <-e.changed:
		case <-deadline.C:
			t.Fatalf("no %q event for %s within %s; events: %v", kind, target, d, e.all())
		}
	}
}

// checkGoroutines fails the test if goroutines started during it are
// still running at its end (after the other cleanups).
func checkGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Errorf("goroutines leaked: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

func testLogger(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

// slowProxy forwards TCP connections to a broker and holds each chunk the
// broker sends for a settable delay (measured from when it arrived, so
// delays do not add up): a broker made slow on purpose.
type slowProxy struct {
	ln       net.Listener
	upstream string
	delay    atomic.Int64 // nanoseconds
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    []net.Conn
}

func startSlowProxy(t *testing.T, upstream string) *slowProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &slowProxy{ln: ln, upstream: upstream, conns: []net.Conn{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *slowProxy) URL() string { return "mqtt://" + p.ln.Addr().String() }

func (p *slowProxy) setDelay(d time.Duration) { p.delay.Store(int64(d)) }

func (p *slowProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return false // closed
	}
	p.conns = append(p.conns, c)
	return true
}

func (p *slowProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.upstream)
		if err != nil {
			c.Close()
			continue
		}
		if !p.track(c) || !p.track(up) {
			c.Close()
			up.Close()
			return
		}
		p.wg.Add(2)
		go func() { // client to broker, at once
			defer p.wg.Done()
			io.Copy(up, c)
			up.Close()
			c.Close()
		}()
		go func() { // broker to client, delayed
			defer p.wg.Done()
			p.delayed(c, up)
			up.Close()
			c.Close()
		}()
	}
}

type chunk struct {
	b  []byte
	at time.Time
}

func (p *slowProxy) delayed(dst, src net.Conn) {
	chunks := make(chan chunk, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for c := range chunks {
			time.Sleep(time.Until(c.at.Add(time.Duration(p.delay.Load()))))
			if _, err := dst.Write(c.b); err != nil {
				dst.Close()
				for range chunks { // drain
				}
				return
			}
		}
	}()
	for {
		buf := make([]byte, 32*1024)
		n, err := src.Read(buf)
		if n > 0 {
			chunks <- chunk{b: buf[:n], at: time.Now()}
		}
		if err != nil {
			break
		}
	}
	close(chunks)
	<-done
}

func (p *slowProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}

// hungBroker accepts connections and reads them, but never answers.
type hungBroker struct {
	ln       net.Listener
	accepted chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    []net.Conn
}

func startHungBroker(t *testing.T) *hungBroker {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hungBroker{ln: ln, accepted: make(chan struct{}, 100)}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.mu.Lock()
			h.conns = append(h.conns, c)
			h.mu.Unlock()
			select {
			case h.accepted <- struct{}{}:
			default:
			}
			h.wg.Add(1)
			go func() { defer h.wg.Done(); io.Copy(io.Discard, c) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		h.mu.Lock()
		for _, c := range h.conns {
			c.Close()
		}
		h.mu.Unlock()
		h.wg.Wait()
	})
	return h
}

func (h *hungBroker) URL() string { return "mqtt://" + h.ln.Addr().String() }

func mqttURL(port int) string { return fmt.Sprintf("mqtt://127.0.0.1:%d", port) }

func hasLine(log, level, msg string) bool {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "level="+level) && strings.Contains(l, `msg="`+msg+`"`) {
			return true
		}
	}
	return false
}
