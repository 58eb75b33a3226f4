package agentrt_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"

	"github.com/vigilhq/vigil/internal/testpeer"

	"github.com/vigilhq/vigil/internal/agentrt"
	"github.com/vigilhq/vigil/internal/dockerimg"
	"github.com/vigilhq/vigil/internal/testkit"
)

func randomName() string { return strings.ToLower(rand.Text()[:10]) }

// buildAgentImage builds a static vigil and an agent image of it, removed
// at the end of the test.
func buildAgentImage(t *testing.T, cli *client.Client) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "vigil")
	cmd := exec.Command("go", "build", "-o", bin, "../../cmd/vigil")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build vigil: %v\n%s", err, out)
	}
	tag := "vigil-agent-test:" + randomName()
	t.Cleanup(func() {
		_, err := cli.ImageRemove(context.Background(), tag, client.ImageRemoveOptions{Force: true, PruneChildren: true})
		if err != nil && !cerrdefs.IsNotFound(err) {
			t.Errorf("remove image %s: %v", tag, err)
		}
	})
	if err := dockerimg.Build(t.Context(), bin, tag, nil); err != nil {
		t.Fatalf("build image: %v", err)
	}
	return tag
}

type exit struct {
	id  string
	err error
}

func TestDockerRuntime(t *testing.T) {
	cli := testpeer.DockerEngine(t)
	ctx := t.Context()
	tag := buildAgentImage(t, cli)
	run := randomName()
	netName := "vigil-test-" + run
	t.Cleanup(func() {
		_, err := cli.NetworkRemove(context.Background(), netName, client.NetworkRemoveOptions{})
		if err != nil && !cerrdefs.IsNotFound(err) {
			t.Errorf("remove network %s: %v", netName, err)
		}
	})

	// A container of an earlier run of this vigil, which Setup must
	// remove, and one of another vigil, which it must leave alone.
	leftover, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name:   "vigil-agent-" + run + "-old",
		Image:  tag,
		Config: &container.Config{Cmd: []string{"version"}, Labels: map[string]string{"vigil.managed": "true", "vigil.instance": "test-" + run}},
	})
	if err != nil {
		t.Fatalf("create leftover container: %v", err)
	}
	t.Cleanup(func() {
		cli.ContainerRemove(context.Background(), leftover.ID, client.ContainerRemoveOptions{Force: true})
	})
	neighbour, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name:   "vigil-agent-" + run + "-other",
		Image:  tag,
		Config: &container.Config{Cmd: []string{"version"}, Labels: map[string]string{"vigil.managed": "true", "vigil.instance": "other-" + run}},
	})
	if err != nil {
		t.Fatalf("create neighbour container: %v", err)
	}
	t.Cleanup(func() {
		cli.ContainerRemove(context.Background(), neighbour.ID, client.ContainerRemoveOptions{Force: true})
	})

	storage := t.TempDir()
	exited := make(chan exit, 10)
	report := func(id string) func(error) { return func(err error) { exited <- exit{id, err} } }
	rt := &agentrt.Docker{
		Image: tag, Network: netName, Storage: storage, Instance: "test-" + run,
		StopTimeout: 2 * time.Second,
		Log:         slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	t.Cleanup(func() {
		if err := rt.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if rt.Name() != "docker" {
		t.Errorf("Name() = %q", rt.Name())
	}
	if err := rt.Start(ctx, agentrt.Spec{ID: run + "-0", Capacity: 1}, report(run+"-0")); err == nil {
		t.Error("Start before Setup succeeded")
	}

	gw, err := rt.Setup(ctx)
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	if gw.To4() == nil || gw.IsUnspecified() {
		t.Fatalf("Setup returned gateway %v, want an IPv4 address", gw)
	}
	t.Logf("network %s, gateway %v", netName, gw)
	nw, err := cli.NetworkInspect(ctx, netName, client.NetworkInspectOptions{})
	if err != nil {
		t.Fatalf("network %s not created: %v", netName, err)
	}
	if nw.Network.Driver != "bridge" || nw.Network.Labels["vigil.managed"] != "true" {
		t.Errorf("network driver %q labels %v; want bridge, vigil.managed=true", nw.Network.Driver, nw.Network.Labels)
	}
	if _, err := cli.ContainerInspect(ctx, neighbour.ID, client.ContainerInspectOptions{}); err != nil {
		t.Errorf("another vigil's container was removed by Setup (inspect: %v)", err)
	}
	if _, err := cli.ContainerInspect(ctx, leftover.ID, client.ContainerInspectOptions{}); !cerrdefs.IsNotFound(err) {
		t.Errorf("leftover container still there after Setup (inspect: %v)", err)
	}
	// Setup again finds the network rather than making another.
	if gw2, err := rt.Setup(ctx); err != nil || !gw2.Equal(gw) {
		t.Fatalf("second Setup = %v, %v; want %v", gw2, err, gw)
	}
	if err := rt.Start(ctx, agentrt.Spec{ID: run + "-0", Capacity: 1}, report(run+"-0")); err == nil {
		t.Error("Start without a broker URL succeeded")
	}
	// Nothing listens there: the agent keeps trying for 30 s, which is
	// longer than it needs to run in this test.
	rt.Broker = fmt.Sprintf("mqtt://%s:1", gw)

	inspect := func(cid string) (container.InspectResponse, error) {
		res, err := cli.ContainerInspect(ctx, cid, client.ContainerInspectOptions{})
		return res.Container, err
	}
	start := func(id string) string {
		t.Helper()
		if err := rt.Start(ctx, agentrt.Spec{ID: id, Username: "agent-" + id, Password: "pw-" + id, Capacity: 2, Idle: 3 * time.Second}, report(id)); err != nil {
			t.Fatalf("Start(%s): %v", id, err)
		}
		cid := rt.ContainerID(id)
		if cid == "" {
			t.Fatalf("no container id for %s", id)
		}
		return cid
	}
	noExit := func() {
		t.Helper()
		select {
		case e := <-exited:
			t.Errorf("unexpected Exited(%s, %v)", e.id, e.err)
		default:
		}
	}

	a1 := run + "-1"
	cid1 := start(a1)
	t.Run("start", func(t *testing.T) {
		testkit.WaitFor(t, 20*time.Second, "the agent container to run", func() bool {
			c, err := inspect(cid1)
			return err == nil && c.State != nil && c.State.Running
		})
		c, err := inspect(cid1)
		if err != nil {
			t.Fatal(err)
		}
		if c.Name != "/vigil-agent-"+a1 {
			t.Errorf("name %q", c.Name)
		}
		for k, v := range map[string]string{"vigil.managed": "true", "vigil.instance": "test-" + run, "vigil.agent": a1} {
			if c.Config.Labels[k] != v {
				t.Errorf("label %s = %q, want %q", k, c.Config.Labels[k], v)
			}
		}
		want := fmt.Sprintf("%d:%d", os.Getuid(), os.Getgid())
		if os.Getuid() == 0 {
			want = "65532:65532" // never root
		}
		if c.Config.User != want {
			t.Errorf("user %q, want %q", c.Config.User, want)
		}
		hc := c.HostConfig
		if !hc.ReadonlyRootfs || !slices.Equal(hc.CapDrop, []string{"ALL"}) || len(hc.CapAdd) != 0 || !slices.Contains(hc.SecurityOpt, "no-new-privileges") {
			t.Errorf("read-only root %v, capabilities dropped %v added %v, security options %v; want a read-only root, ALL dropped, none added, no-new-privileges",
				hc.ReadonlyRootfs, hc.CapDrop, hc.CapAdd, hc.SecurityOpt)
		}
		if hc.Memory != agentrt.DefaultAgentMemory || hc.PidsLimit == nil || *hc.PidsLimit != agentrt.DefaultAgentPids {
			t.Errorf("memory limit %d, pids limit %v; want %d, %d", hc.Memory, hc.PidsLimit, agentrt.DefaultAgentMemory, agentrt.DefaultAgentPids)
		}
		checkConfined(t, c.State.Pid)
		wantCmd := []string{"agent", "--id", a1, "--broker", rt.Broker, "--username", "agent-" + a1,
			"--listen", "0.0.0.0", "--storage", "/clips", "--capacity", "2", "--idle", "3s", "--rtsp-capacity", "0", "--ring-capacity", "0"}
		if !slices.Equal(c.Config.Cmd, wantCmd) {
			t.Errorf("cmd %q, want %q", c.Config.Cmd, wantCmd)
		}
		if !slices.Contains(c.Config.Env, "VIGIL_AGENT_PASSWORD=pw-"+a1) {
			t.Errorf("env %q lacks the password", c.Config.Env)
		}
		if !slices.ContainsFunc(c.Mounts, func(m container.MountPoint) bool {
			return m.Type == mount.TypeBind && m.Source == storage && m.Destination == "/clips" && m.RW
		}) {
			t.Errorf("mounts %+v, want %s bind-mounted read-write at /clips", c.Mounts, storage)
		}
		if string(c.HostConfig.NetworkMode) != netName || c.NetworkSettings == nil || c.NetworkSettings.Networks[netName] == nil {
			t.Errorf("not on network %s: mode %q", netName, c.HostConfig.NetworkMode)
		}
		list, err := cli.ContainerList(ctx, client.ContainerListOptions{
			Filters: make(client.Filters).Add("label", "vigil.instance=test-"+run),
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Items) != 1 || list.Items[0].ID != cid1 || list.Items[0].State != container.StateRunning {
			t.Errorf("running containers of this instance: %+v", list.Items)
		}
		if err := rt.Start(ctx, agentrt.Spec{ID: a1, Capacity: 1}, report(a1)); err == nil {
			t.Error("second Start of the same agent succeeded")
		}
	})

	t.Run("a dedicated agent sees its site's clips only", func(t *testing.T) {
		a6 := run + "-6"
		if err := rt.Start(ctx, agentrt.Spec{ID: a6, Username: "agent-" + a6, Capacity: 1, Idle: time.Second, Site: "bank"}, report(a6)); err != nil {
			t.Fatal(err)
		}
		defer rt.Stop(ctx, a6)
		c, err := inspect(rt.ContainerID(a6))
		if err != nil {
			t.Fatal(err)
		}
		site := filepath.Join(storage, "bank")
		if len(c.Mounts) != 1 || c.Mounts[0].Source != site || c.Mounts[0].Destination != "/clips/bank" || !c.Mounts[0].RW {
			t.Errorf("mounts %+v, want only %s at /clips/bank", c.Mounts, site)
		}
		if fi, err := os.Stat(site); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("the site's directory: %v, %v; want mode 0700", fi.Mode().Perm(), err)
		}
		if err := rt.Start(ctx, agentrt.Spec{ID: run + "-7", Capacity: 1, Site: ".."}, report(run+"-7")); err == nil {
			rt.Stop(ctx, run+"-7")
			t.Error("an agent for site \"..\" started")
		}
	})

	a2 := run + "-2"
	cid2 := start(a2)
	t.Run("unexpected exit", func(t *testing.T) {
		if _, err := cli.ContainerKill(ctx, cid2, client.ContainerKillOptions{Signal: "KILL"}); err != nil {
			t.Fatalf("kill: %v", err)
		}
		select {
		case e := <-exited:
			if e.id != a2 || e.err == nil || !strings.Contains(e.err.Error(), "137") {
				t.Errorf("Exited(%s, %v), want Exited(%s, exit code 137)", e.id, e.err, a2)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("Exited not called within 20s of the kill")
		}
		// Not restarted; the exited container stays until Stop.
		if c, err := inspect(cid2); err != nil || c.State.Running {
			t.Errorf("killed container: %v, %v", c.State, err)
		}
		if err := rt.Stop(ctx, a2); err != nil {
			t.Fatalf("Stop(%s): %v", a2, err)
		}
		if _, err := inspect(cid2); !cerrdefs.IsNotFound(err) {
			t.Errorf("container still there after Stop: %v", err)
		}
	})

	t.Run("crash", func(t *testing.T) {
		// An agent that fails at once (capacity 0 is refused) is
		// reported with its exit code and its last words.
		a4 := run + "-4"
		if err := rt.Start(ctx, agentrt.Spec{ID: a4, Username: "agent-" + a4, Capacity: 0, Idle: time.Second}, report(a4)); err != nil {
			t.Fatalf("Start: %v", err)
		}
		select {
		case e := <-exited:
			if e.id != a4 || e.err == nil || !strings.Contains(e.err.Error(), "code 1") || !strings.Contains(e.err.Error(), "capacity") {
				t.Errorf("Exited(%s, %v), want Exited(%s, exit code 1 with the agent's error)", e.id, e.err, a4)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("Exited not called within 20s")
		}
		if err := rt.Stop(ctx, a4); err != nil {
			t.Fatalf("Stop(%s): %v", a4, err)
		}
	})

	t.Run("stop", func(t *testing.T) {
		began := time.Now()
		if err := rt.Stop(ctx, a1); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		t.Logf("Stop took %v", time.Since(began).Round(time.Millisecond))
		if _, err := inspect(cid1); !cerrdefs.IsNotFound(err) {
			t.Errorf("container still there after Stop: %v", err)
		}
		if rt.ContainerID(a1) != "" {
			t.Error("ContainerID still set after Stop")
		}
		if err := rt.Stop(ctx, a1); err != nil {
			t.Errorf("second Stop: %v", err)
		}
		noExit()
	})

	t.Run("close", func(t *testing.T) {
		a3 := run + "-3"
		cid3 := start(a3)
		if err := rt.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if _, err := inspect(cid3); !cerrdefs.IsNotFound(err) {
			t.Errorf("container still there after Close: %v", err)
		}
		noExit()
		if err := rt.Start(ctx, agentrt.Spec{ID: run + "-5", Capacity: 1}, report(run+"-5")); err == nil {
			t.Error("Start after Close succeeded")
		}
	})
}

// checkConfined reads what the kernel says of a running container's
// process: its user, capabilities, no_new_privs and root mount.
func checkConfined(t *testing.T, pid int) {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("cannot read the container process's status: %v", err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, _ := strings.Cut(line, ":")
		v = strings.Join(strings.Fields(v), " ")
		switch k {
		case "Uid", "Gid":
			if strings.HasPrefix(v, "0 ") {
				t.Errorf("the agent runs with %s %s, want no root", k, v)
			}
		case "CapEff", "CapPrm", "CapBnd":
			if v != "0000000000000000" {
				t.Errorf("the agent has capabilities %s %s, want none", k, v)
			}
		case "NoNewPrivs":
			if v != "1" {
				t.Errorf("NoNewPrivs %s, want 1", v)
			}
		}
	}
	mounts, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		f := strings.Fields(line)
		if len(f) > 5 && f[4] == "/" && !slices.Contains(strings.Split(f[5], ","), "ro") {
			t.Errorf("the agent's root is mounted %s, want ro", f[5])
		}
	}
}

func TestDockerRuntimeMissingImage(t *testing.T) {
	testpeer.DockerEngine(t)
	rt := &agentrt.Docker{Image: "vigil-agent-test:missing-" + randomName(), Network: "vigil-test-" + randomName(), Storage: t.TempDir()}
	defer rt.Close()
	_, err := rt.Setup(t.Context())
	if err == nil || !strings.Contains(err.Error(), "vigil image build") {
		t.Fatalf("Setup = %v, want an error telling to run 'vigil image build'", err)
	}
}

func TestDockerRuntimeUnreachable(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix://"+filepath.Join(t.TempDir(), "no-docker.sock"))
	rt := &agentrt.Docker{Image: "vigil-agent:latest", Network: "vigil", Storage: t.TempDir()}
	defer rt.Close()
	_, err := rt.Setup(t.Context())
	if err == nil || !strings.Contains(err.Error(), "docker engine not reachable") {
		t.Fatalf("Setup = %v, want an engine-not-reachable error", err)
	}
}
