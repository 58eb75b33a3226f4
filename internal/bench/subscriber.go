package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigilhq/vigil/internal/sub"
)

// subscriberProcess is `vigil sub --stats --json` as a child process: a
// subscriber with a process of its own, as real ones have. In this
// process it would be one goroutine among the fleet's thousands, which the
// Go scheduler starves the more, the more CPU the broker under test takes:
// it would then fall seconds behind, and what it measured would be the
// benchmark's own contention rather than the broker.
type subscriberProcess struct {
	once     sync.Once
	cmd      *exec.Cmd
	done     chan struct{}
	received atomic.Int64 // from its progress lines
	report   bytes.Buffer // its JSON report, at the end
}

// startSubscriber starts the subscriber on url and returns once it is
// subscribed.
func startSubscriber(ctx context.Context, bin, url string, qos int, filter string) (*subscriberProcess, error) {
	if bin == "" {
		var err error
		if bin, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	p := &subscriberProcess{done: make(chan struct{})}
	p.cmd = exec.Command(bin, "sub", "--broker", url, "--qos", fmt.Sprint(qos), "--stats", "--json", filter)
	p.cmd.Stdout = &p.report
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start subscriber: %w", err)
	}
	ready := make(chan struct{})
	var logged bytes.Buffer
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			var n int64
			switch {
			case strings.HasPrefix(line, "subscribed to "):
				close(ready)
			case strings.HasPrefix(line, "received "):
				if _, err := fmt.Sscanf(line, "received %d", &n); err == nil {
					p.received.Store(n)
				}
			default:
				logged.WriteString(line + "\n")
			}
		}
		io.Copy(io.Discard, stderr)
		p.cmd.Wait()
	}()
	select {
	case <-ready:
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("subscriber: %s", strings.TrimSpace(logged.String()))
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		return nil, fmt.Errorf("subscriber did not subscribe within 30s")
	case <-ctx.Done():
		p.cmd.Process.Kill()
		<-p.done
		return nil, ctx.Err()
	}
}

// Received returns how many messages it has had, as of its last progress
// line (one a second).
func (p *subscriberProcess) Received() int64 { return p.received.Load() }

// stop ends the subscriber and returns its report (the first time).
func (p *subscriberProcess) stop() (r sub.Report, err error) {
	p.once.Do(func() { r, err = p.end() })
	return r, err
}

func (p *subscriberProcess) end() (sub.Report, error) {
	var r sub.Report
	p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		return r, fmt.Errorf("subscriber did not stop within 30s")
	}
	if err := json.Unmarshal(p.report.Bytes(), &r); err != nil {
		return r, fmt.Errorf("subscriber report: %w (%q)", err, p.report.String())
	}
	return r, nil
}
