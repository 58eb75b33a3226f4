package agentrt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/vigilhq/vigil/internal/dockerimg"
)

// Labels the Docker runtime puts on what it creates.
const (
	labelManaged  = "vigil.managed"  // "true" on Vigil's containers and networks
	labelInstance = "vigil.instance" // the Docker.Instance that started a container
	labelAgent    = "vigil.agent"    // the agent a container runs
)

// containerPrefix starts the name of every agent container; the rest is
// the agent's id.
const containerPrefix = "vigil-agent-"

// Default resource limits of an agent container.
const (
	DefaultAgentMemory = 256 << 20 // bytes
	DefaultAgentPids   = 256       // processes and threads
)

// agentUID is the uid and gid agent containers run as when vigil up runs
// as root (the distroless "nonroot" id, unlikely to be a user of the host).
const agentUID = 65532

// defaultStopTimeout is how long Stop lets an agent finish its segments
// after SIGTERM before the engine kills it.
const defaultStopTimeout = 10 * time.Second

// Docker runs agents as Docker containers of the agent image (see
// `vigil image build`) on a bridge network. The agents reach the broker
// through the network's gateway, and advertise their container address to
// cameras. An agent whose container exits on its own is reported to the
// callback given to Start and not restarted: the coordinator replaces lost agents. The
// exited container is kept (for `docker logs`) until Stop or Close.
//
// Containers are confined: vigil up's uid and gid (65532 when vigil up is
// root, never root), no capabilities, no-new-privileges, a read-only root
// file system, memory and pids limits, and of the clip storage only what
// the agent writes: its site's directory for an agent dedicated to a site,
// the whole storage for the shared pool (which serves every site).
//
// Call Setup before anything else, then set Broker.
type Docker struct {
	Image    string // agent image, e.g. vigil-agent:latest
	Network  string // bridge network the agents run on, created if missing
	Broker   string // MQTT URL the agents connect to, reachable from the network
	Storage  string // host clip storage directory, bind-mounted at /clips
	Instance string // identifies this vigil up, in the vigil.instance label
	// OwnStorage tells that Storage is Vigil's own (PrepareStorage): when
	// vigil up is root, Setup gives it and every directory in it to the
	// agents' user. Otherwise the owner of nothing there changes but that
	// of the site directories the runtime makes itself (MakeSiteDir).
	OwnStorage bool
	// StopTimeout is how long Stop waits after SIGTERM before the engine
	// kills the agent; 0 means 10s.
	StopTimeout time.Duration
	// Memory limits each agent's memory, in bytes; 0 means
	// DefaultAgentMemory, negative no limit. PidsLimit limits its
	// processes and threads; 0 means DefaultAgentPids, negative no limit.
	Memory, PidsLimit int64
	Log               *slog.Logger // nil discards the runtime's logs

	mu     sync.Mutex
	cli    *client.Client
	ctrs   map[string]*agentContainer
	closed bool
}

type agentContainer struct {
	cid        string
	exited     func(error)
	stopping   bool
	cancelWait context.CancelFunc
	watchDone  chan struct{} // closed when the watcher has returned
	stopped    chan struct{} // closed when Stop has finished
	stopErr    error         // Stop's result, set before stopped is closed
}

// Name returns "docker".
func (r *Docker) Name() string { return "docker" }

func (r *Docker) log() *slog.Logger {
	if r.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Log
}

// Setup connects to the Docker engine (from $DOCKER_HOST and friends, or
// the default socket), checks that Image exists, removes agent containers
// left over by earlier runs of any vigil, creates Network if it is missing
// and returns the network's IPv4 gateway, where the caller should have the
// broker listen for the agents.
func (r *Docker) Setup(ctx context.Context) (gateway net.IP, err error) {
	if r.Image == "" || r.Network == "" {
		return nil, errors.New("docker runtime: image and network are required")
	}
	cli, err := r.connect(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := cli.ImageInspect(ctx, r.Image); err != nil {
		if cerrdefs.IsNotFound(err) {
			return nil, fmt.Errorf("docker image %s not found: run 'vigil image build' first", r.Image)
		}
		return nil, fmt.Errorf("inspect image %s: %w", r.Image, err)
	}
	if err := r.removeLeftovers(ctx); err != nil {
		return nil, err
	}
	if err := r.adoptStorage(); err != nil {
		return nil, err
	}
	return r.setupNetwork(ctx)
}

// agentUser is the uid and gid agents run as: vigil up's own, so that
// vigil up and the agents share the clip files (0600 in 0700 directories),
// or agentUID when vigil up is root.
func agentUser() (uid, gid int) {
	if os.Getuid() == 0 {
		return agentUID, agentUID
	}
	return os.Getuid(), os.Getgid()
}

// adoptStorage gives the clip storage's directories to the agents' uid
// when vigil up is root and the storage is Vigil's own (so that agents
// write there, and root agents of an older Vigil left none the new ones
// cannot write). Files stay as they are: agents only create new ones. A
// storage root that is not Vigil's is left as it is; the agents then need
// to enter it, and make their clip directories in the site directories
// that MakeSiteDir makes.
func (r *Docker) adoptStorage() error {
	uid, gid := agentUser()
	if os.Getuid() != 0 || r.Storage == "" {
		return nil
	}
	if !r.OwnStorage {
		if fi, err := os.Stat(r.Storage); err == nil && !mayEnter(fi, uid, gid) {
			r.log().Warn("the agents cannot enter the clip storage: give it to them or let others enter it (chmod o+x)",
				"storage", r.Storage, "agent_uid", uid)
		}
		return nil
	}
	if err := os.MkdirAll(r.Storage, 0o700); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	err := filepath.WalkDir(r.Storage, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		return chownDir(p, uid, gid)
	})
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	return nil
}

// mayEnter tells whether uid:gid may enter the directory fi describes.
func mayEnter(fi fs.FileInfo, uid, gid int) bool {
	perm := fi.Mode().Perm()
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !ok:
		return true
	case int(st.Uid) == uid:
		return perm&0o100 != 0
	case int(st.Gid) == gid:
		return perm&0o010 != 0
	}
	return perm&0o001 != 0
}

// chownDir gives dir to uid:gid if it is not theirs already.
func chownDir(dir string, uid, gid int) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) == uid && int(st.Gid) == gid {
		return nil
	}
	return os.Lchown(dir, uid, gid)
}

// MakeSiteDir makes a site's directory in the clip storage if it is
// missing, 0700 and, when vigil up is root, the agents' user's, so that
// agents of the shared pool can make their clip directories in it also in
// a storage root that is not theirs. An existing one is left as it is, but
// in Vigil's own storage, where it is given to the agents' user.
func (r *Docker) MakeSiteDir(site string) error {
	_, err := r.siteDir(site)
	return err
}

// siteDir makes a site's directory (MakeSiteDir) and returns its path.
func (r *Docker) siteDir(site string) (string, error) {
	if site == "" || site == "." || site == ".." || strings.ContainsAny(site, `/\`) {
		return "", fmt.Errorf("site %q: not a directory name", site)
	}
	storage, err := filepath.Abs(r.Storage)
	if err != nil {
		return "", fmt.Errorf("storage: %w", err)
	}
	dir := filepath.Join(storage, site)
	err = os.Mkdir(dir, 0o700)
	made := err == nil
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("storage: %w", err)
	}
	if os.Getuid() == 0 && (made || r.OwnStorage) {
		uid, gid := agentUser()
		if err := chownDir(dir, uid, gid); err != nil {
			return "", fmt.Errorf("storage: %w", err)
		}
	}
	return dir, nil
}

// storageMount is the clip storage an agent gets: its site's directory at
// the same place under /clips for a dedicated agent, else all of it.
func (r *Docker) storageMount(spec Spec) (mount.Mount, error) {
	if spec.Site != "" {
		src, err := r.siteDir(spec.Site)
		if err != nil {
			return mount.Mount{}, err
		}
		return mount.Mount{Type: mount.TypeBind, Source: src, Target: "/clips/" + spec.Site}, nil
	}
	storage, err := filepath.Abs(r.Storage)
	if err != nil {
		return mount.Mount{}, fmt.Errorf("storage: %w", err)
	}
	if err := os.MkdirAll(storage, 0o700); err != nil {
		return mount.Mount{}, fmt.Errorf("storage: %w", err)
	}
	if os.Getuid() == 0 && r.OwnStorage {
		uid, gid := agentUser()
		if err := chownDir(storage, uid, gid); err != nil {
			return mount.Mount{}, fmt.Errorf("storage: %w", err)
		}
	}
	return mount.Mount{Type: mount.TypeBind, Source: storage, Target: "/clips"}, nil
}

// limit is a configured limit: 0 is def, negative none (0 for Docker).
func limit(v, def int64) int64 {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

func (r *Docker) connect(ctx context.Context) (*client.Client, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, errors.New("docker runtime closed")
	}
	if r.cli != nil {
		return r.cli, nil
	}
	cli, err := dockerimg.Connect(ctx)
	if err != nil {
		return nil, err
	}
	r.cli = cli
	r.log().Debug("connected to docker engine", "host", cli.DaemonHost(), "api", cli.ClientVersion())
	return cli, nil
}

// removeLeftovers removes the agent containers an earlier run of this
// vigil (the same Instance: the same data directory) left behind: their
// coordinator is gone, and their credentials with it. Agents of other
// vigils running beside this one are left alone.
func (r *Docker) removeLeftovers(ctx context.Context) error {
	res, err := r.cli.ContainerList(ctx, client.ContainerListOptions{
		All:     true,
		Filters: make(client.Filters).Add("label", labelManaged+"=true").Add("label", labelInstance+"="+r.Instance),
	})
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	for _, c := range res.Items {
		if !slices.ContainsFunc(c.Names, func(n string) bool {
			return strings.HasPrefix(strings.TrimPrefix(n, "/"), containerPrefix)
		}) {
			continue
		}
		name := strings.TrimPrefix(c.Names[0], "/")
		if _, err := r.cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("remove leftover container %s: %w", name, err)
		}
		r.log().Info("removed leftover agent container", "container", name,
			"instance", c.Labels[labelInstance], "state", c.State)
	}
	return nil
}

// setupNetwork creates the network if needed and returns its gateway.
func (r *Docker) setupNetwork(ctx context.Context) (net.IP, error) {
	nw, err := r.findNetwork(ctx)
	if err != nil {
		return nil, err
	}
	if nw == nil {
		res, err := r.cli.NetworkCreate(ctx, r.Network, client.NetworkCreateOptions{
			Driver: "bridge",
			Labels: map[string]string{labelManaged: "true"},
		})
		if err != nil {
			return nil, fmt.Errorf("create network %s: %w", r.Network, err)
		}
		r.log().Info("created docker network", "network", r.Network, "id", shortID(res.ID))
		// Engines before API 1.44 let two networks share a name (this
		// client cannot ask them to check): if another vigil created it
		// at the same time, keep the oldest one.
		if nw, err = r.findNetwork(ctx); err != nil {
			return nil, err
		}
		if nw == nil {
			return nil, fmt.Errorf("network %s vanished after creation", r.Network)
		}
		if nw.ID != res.ID {
			r.cli.NetworkRemove(ctx, res.ID, client.NetworkRemoveOptions{})
		}
	}
	ins, err := r.cli.NetworkInspect(ctx, nw.ID, client.NetworkInspectOptions{})
	if err != nil {
		return nil, fmt.Errorf("inspect network %s: %w", r.Network, err)
	}
	for _, c := range ins.Network.IPAM.Config {
		if c.Gateway.Is4() {
			return net.IP(c.Gateway.AsSlice()), nil
		}
	}
	// Some drivers leave the gateway implicit: the subnet's first address.
	for _, c := range ins.Network.IPAM.Config {
		if c.Subnet.Addr().Is4() {
			return net.IP(c.Subnet.Masked().Addr().Next().AsSlice()), nil
		}
	}
	return nil, fmt.Errorf("network %s has no IPv4 gateway", r.Network)
}

// findNetwork returns the oldest network named exactly r.Network, or nil.
func (r *Docker) findNetwork(ctx context.Context) (*network.Summary, error) {
	res, err := r.cli.NetworkList(ctx, client.NetworkListOptions{Filters: make(client.Filters).Add("name", r.Network)})
	if err != nil {
		return nil, fmt.Errorf("list networks: %w", err)
	}
	var found *network.Summary
	for i := range res.Items {
		n := &res.Items[i]
		if n.Name == r.Network && (found == nil || n.Created.Before(found.Created)) {
			found = n
		}
	}
	return found, nil
}

// Start creates and starts the agent's container and watches it.
func (r *Docker) Start(ctx context.Context, spec Spec, exited func(error)) error {
	r.mu.Lock()
	cli, closed := r.cli, r.closed
	_, dup := r.ctrs[spec.ID]
	r.mu.Unlock()
	switch {
	case closed:
		return errors.New("docker runtime closed")
	case cli == nil:
		return errors.New("docker runtime not set up")
	case r.Broker == "":
		return errors.New("docker runtime: no broker URL")
	case dup:
		return fmt.Errorf("agent %s is already running", spec.ID)
	}
	clips, err := r.storageMount(spec)
	if err != nil {
		return err
	}
	uid, gid := agentUser()
	pids := limit(r.PidsLimit, DefaultAgentPids)
	name := containerPrefix + spec.ID
	opts := client.ContainerCreateOptions{
		Name: name,
		Config: &container.Config{
			Image: r.Image,
			Cmd: []string{"agent",
				"--id", spec.ID, "--broker", r.Broker, "--username", spec.Username,
				"--listen", "0.0.0.0", "--storage", "/clips",
				"--capacity", fmt.Sprint(spec.Capacity), "--idle", spec.Idle.String(),
				"--rtsp-capacity", fmt.Sprint(spec.RTSPCapacity), "--ring-capacity", fmt.Sprint(spec.RingCapacity)},
			Env:  []string{"VIGIL_AGENT_PASSWORD=" + spec.Password},
			User: fmt.Sprintf("%d:%d", uid, gid),
			Labels: map[string]string{
				labelManaged:  "true",
				labelInstance: r.Instance,
				labelAgent:    spec.ID,
			},
		},
		HostConfig: &container.HostConfig{
			NetworkMode:    container.NetworkMode(r.Network),
			Mounts:         []mount.Mount{clips},
			ReadonlyRootfs: true,
			CapDrop:        []string{"ALL"},
			SecurityOpt:    []string{"no-new-privileges"},
			Resources:      container.Resources{Memory: limit(r.Memory, DefaultAgentMemory), PidsLimit: &pids},
		},
	}
	res, err := cli.ContainerCreate(ctx, opts)
	if cerrdefs.IsConflict(err) {
		// A container of that name from an earlier agent with the same id.
		r.log().Warn("removing stale agent container", "container", name)
		if _, err := cli.ContainerRemove(ctx, name, client.ContainerRemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("remove stale container %s: %w", name, err)
		}
		res, err = cli.ContainerCreate(ctx, opts)
	}
	if err != nil {
		if ctx.Err() != nil {
			// The engine may have made it before the call was given up.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			cli.ContainerRemove(rctx, name, client.ContainerRemoveOptions{Force: true})
		}
		return fmt.Errorf("create container %s: %w", name, err)
	}
	if _, err := cli.ContainerStart(ctx, res.ID, client.ContainerStartOptions{}); err != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		cli.ContainerRemove(rctx, res.ID, client.ContainerRemoveOptions{Force: true})
		return fmt.Errorf("start container %s: %w", name, err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	c := &agentContainer{cid: res.ID, exited: exited, cancelWait: cancel, watchDone: make(chan struct{}), stopped: make(chan struct{})}
	r.mu.Lock()
	if r.closed { // Close ran meanwhile and would not know this one
		r.mu.Unlock()
		cancel()
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer rcancel()
		cli.ContainerRemove(rctx, res.ID, client.ContainerRemoveOptions{Force: true})
		return errors.New("docker runtime closed")
	}
	if r.ctrs == nil {
		r.ctrs = map[string]*agentContainer{}
	}
	r.ctrs[spec.ID] = c
	r.mu.Unlock()
	r.log().Debug("agent container started", "agent", spec.ID, "container", name, "id", shortID(res.ID))
	go r.watch(wctx, spec.ID, c)
	return nil
}

// watch waits for the container to stop running and reports it unless
// Stop asked for it.
func (r *Docker) watch(ctx context.Context, id string, c *agentContainer) {
	defer close(c.watchDone)
	w := r.cli.ContainerWait(ctx, c.cid, client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
	var err error
	select {
	case res := <-w.Result:
		err = fmt.Errorf("container exited with code %d", res.StatusCode)
		if res.Error != nil && res.Error.Message != "" {
			err = fmt.Errorf("container exited with code %d: %s", res.StatusCode, res.Error.Message)
		}
	case werr := <-w.Error:
		err = fmt.Errorf("wait for container: %w", werr)
	}
	r.mu.Lock()
	stopping := c.stopping
	r.mu.Unlock()
	if stopping {
		return
	}
	if last := r.lastOutput(ctx, c.cid); last != "" {
		err = fmt.Errorf("%w (last output: %s)", err, last)
	}
	r.log().Warn("agent container exited", "agent", id, "container", containerPrefix+id, "error", err)
	if c.exited != nil {
		c.exited(err)
	}
}

// lastOutput returns the last line the container wrote, shortened.
func (r *Docker) lastOutput(ctx context.Context, cid string) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	logs, err := r.cli.ContainerLogs(ctx, cid, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Tail: "5"})
	if err != nil {
		return ""
	}
	defer logs.Close()
	var out bytes.Buffer
	stdcopy.StdCopy(&out, &out, io.LimitReader(logs, 64<<10))
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	last := strings.TrimSpace(lines[len(lines)-1])
	if len(last) > 300 {
		last = last[:300] + "..."
	}
	return last
}

// ContainerID returns the Docker id of an agent's container, or "".
func (r *Docker) ContainerID(id string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.ctrs[id]; c != nil {
		return c.cid
	}
	return ""
}

// Stop stops the agent's container (SIGTERM, then SIGKILL after
// StopTimeout or when ctx is nearly done) and removes it. Stopping an
// agent it does not know is not an error.
func (r *Docker) Stop(ctx context.Context, id string) error {
	r.mu.Lock()
	c := r.ctrs[id]
	if c == nil {
		r.mu.Unlock()
		return nil
	}
	if c.stopping {
		r.mu.Unlock()
		select {
		case <-c.stopped:
			return c.stopErr
		case <-ctx.Done():
			return fmt.Errorf("stop agent %s: %w", id, ctx.Err())
		}
	}
	c.stopping = true
	r.mu.Unlock()

	err := r.stopContainer(ctx, id, c.cid)
	c.cancelWait()
	<-c.watchDone
	r.mu.Lock()
	delete(r.ctrs, id)
	c.stopErr = err
	r.mu.Unlock()
	close(c.stopped)
	return err
}

func (r *Docker) stopContainer(ctx context.Context, id, cid string) error {
	grace := r.StopTimeout
	if grace <= 0 {
		grace = defaultStopTimeout
	}
	if dl, ok := ctx.Deadline(); ok {
		// Leave time for the kill and the removal.
		grace = max(min(grace, time.Until(dl)-2*time.Second), 0)
	}
	secs := int((grace + time.Second - 1) / time.Second)
	_, stopErr := r.cli.ContainerStop(ctx, cid, client.ContainerStopOptions{Timeout: &secs})
	// Remove it even if ctx is done: force kills it if it still runs.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	_, rmErr := r.cli.ContainerRemove(rctx, cid, client.ContainerRemoveOptions{Force: true})
	if cerrdefs.IsNotFound(rmErr) {
		rmErr = nil
	}
	switch {
	case rmErr != nil:
		return fmt.Errorf("remove agent %s container: %w", id, rmErr)
	case stopErr != nil && ctx.Err() != nil:
		return fmt.Errorf("agent %s did not stop in time; killed", id)
	case stopErr != nil && !cerrdefs.IsNotFound(stopErr):
		return fmt.Errorf("stop agent %s container: %w", id, stopErr)
	}
	r.log().Debug("agent container removed", "agent", id)
	return nil
}

// Close stops every agent container and disconnects from the engine.
func (r *Docker) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	ids := make([]string, 0, len(r.ctrs))
	for id := range r.ctrs {
		ids = append(ids, id)
	}
	cli := r.cli
	r.mu.Unlock()
	if cli == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() { errs[i] = r.Stop(ctx, id) })
	}
	wg.Wait()
	errs = append(errs, cli.Close())
	return errors.Join(errs...)
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
