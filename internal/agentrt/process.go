package agentrt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vigilhq/vigil/internal/mqttconn"
)

// Process runs agents as supervised child processes (`vigil agent`): an
// agent that exits without being asked is reported and restarted, with
// backoff.
type Process struct {
	Binary  string       // the vigil executable
	Broker  string       // MQTT URL(s) the agents connect to, comma-separated
	TLS     mqttconn.TLS // the broker's CA and a client certificate, if any
	Listen  string       // IP agents receive video on
	Storage string       // clip storage root
	LogDir  string       // each agent's output goes to <LogDir>/agent-<id>.log
	Log     *slog.Logger

	mu    sync.Mutex
	procs map[string]*proc
}

type proc struct {
	spec     Spec
	exited   func(error)
	cmd      *exec.Cmd
	stopping bool
	stopCh   chan struct{} // closed by Stop
	done     chan struct{} // closed when the supervisor has given up on it
}

// Name returns "process".
func (r *Process) Name() string { return "process" }

// Start launches the agent and supervises it.
func (r *Process) Start(ctx context.Context, spec Spec, exited func(error)) error {
	p := &proc{spec: spec, exited: exited, done: make(chan struct{}), stopCh: make(chan struct{})}
	if err := r.launch(p); err != nil {
		return err
	}
	r.mu.Lock()
	if r.procs == nil {
		r.procs = map[string]*proc{}
	}
	r.procs[spec.ID] = p
	r.mu.Unlock()
	go r.supervise(p)
	return nil
}

func (r *Process) launch(p *proc) error {
	if err := os.MkdirAll(r.LogDir, 0o700); err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(r.LogDir, "agent-"+p.spec.ID+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	// A log an older Vigil made readable by everyone, and the directory.
	if err := errors.Join(logf.Chmod(0o600), os.Chmod(r.LogDir, 0o700)); err != nil {
		logf.Close()
		return err
	}
	cmd := exec.Command(r.Binary, "agent",
		"--id", p.spec.ID, "--broker", r.Broker, "--username", p.spec.Username,
		"--listen", r.Listen, "--storage", r.Storage,
		"--capacity", fmt.Sprint(p.spec.Capacity), "--idle", p.spec.Idle.String(),
		"--rtsp-capacity", fmt.Sprint(p.spec.RTSPCapacity), "--ring-capacity", fmt.Sprint(p.spec.RingCapacity))
	for flag, v := range map[string]string{"--ca": r.TLS.CA, "--cert": r.TLS.Cert, "--key": r.TLS.Key} {
		if v != "" {
			cmd.Args = append(cmd.Args, flag, v)
		}
	}
	cmd.Env = append(agentEnv(os.Environ()), "VIGIL_AGENT_PASSWORD="+p.spec.Password)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so that a Ctrl-C meant for vigil up reaches the
	// agents through vigil up's orderly shutdown; and SIGTERM if vigil up
	// dies without one.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s agent: %w", r.Binary, err)
	}
	logf.Close() // the child has its own descriptor
	p.cmd = cmd
	return nil
}

// agentEnvKeys are what an agent may see of vigil up's environment: where
// things are, the time zone, and the Go runtime's settings. Nothing else:
// vigil up's environment holds secrets (VIGIL_ADMIN_PASSWORD, a watched
// broker's password, cloud credentials) that an agent has no use for.
var agentEnvKeys = []string{"PATH", "HOME", "TMPDIR", "TZ", "GODEBUG", "GOGC", "GOMAXPROCS", "GOMEMLIMIT", "GOTRACEBACK"}

// agentEnv keeps the agentEnvKeys of environ.
func agentEnv(environ []string) []string {
	var out []string
	for _, kv := range environ {
		if k, _, ok := strings.Cut(kv, "="); ok && slices.Contains(agentEnvKeys, k) {
			out = append(out, kv)
		}
	}
	return out
}

// supervise waits for the agent; if it exits on its own, it reports that
// and starts it again.
func (r *Process) supervise(p *proc) {
	defer close(p.done)
	backoff := time.Second
	for {
		err := p.cmd.Wait()
		r.mu.Lock()
		stopping := p.stopping
		r.mu.Unlock()
		if stopping {
			return
		}
		if err == nil {
			err = errors.New("exit status 0")
		}
		r.Log.Warn("agent exited; restarting it", "agent", p.spec.ID, "error", err, "in", backoff)
		if p.exited != nil {
			p.exited(err)
		}
		select {
		case <-time.After(backoff):
		case <-p.stopCh:
			return
		}
		backoff = min(backoff*2, 30*time.Second)
		r.mu.Lock()
		if p.stopping {
			r.mu.Unlock()
			return
		}
		err = r.launch(p)
		r.mu.Unlock()
		if err != nil {
			r.Log.Error("agent restart failed", "agent", p.spec.ID, "error", err)
			return
		}
	}
}

// PID returns an agent's process id, or 0.
func (r *Process) PID(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p := r.procs[id]; p != nil && p.cmd != nil && p.cmd.Process != nil {
		return p.cmd.Process.Pid
	}
	return 0
}

// Stop asks the agent to stop (SIGTERM: it finishes its segments), and
// kills it if it has not within ctx.
func (r *Process) Stop(ctx context.Context, id string) error {
	r.mu.Lock()
	p := r.procs[id]
	if p == nil {
		r.mu.Unlock()
		return nil
	}
	p.stopping = true
	close(p.stopCh)
	delete(r.procs, id)
	cmd := p.cmd
	r.mu.Unlock()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("agent %s did not stop in time; killed", id)
	}
}

// Close stops every agent.
func (r *Process) Close() error {
	r.mu.Lock()
	var ids []string
	for id := range r.procs {
		ids = append(ids, id)
	}
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var errs []error
	for _, id := range ids {
		errs = append(errs, r.Stop(ctx, id))
	}
	return errors.Join(errs...)
}
