package e2e_test

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/vigilhq/vigil/internal/agentrt"
	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/coord"
	"github.com/vigilhq/vigil/internal/dockerimg"
	"github.com/vigilhq/vigil/internal/testkit"
)

// dockerConfig switches a test's Vigil to the docker runtime, with an image
// built from this tree and a network of its own, removed at the end.
func dockerConfig(t *testing.T) func(*conf.Config) {
	t.Helper()
	cli, err := client.New(client.FromEnv)
	if err == nil {
		_, err = cli.Ping(context.Background(), client.PingOptions{})
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("no Docker engine: %v", err)
		}
		t.Skipf("no Docker engine: %v", err)
	}
	run := strings.ToLower(rand.Text()[:8])
	tag, network := "vigil-agent-e2e:"+run, "vigil-e2e-"+run
	if err := dockerimg.Build(context.Background(), vigilBinary(t), tag, nil); err != nil {
		t.Fatalf("build the agent image: %v", err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		// After the app (and its containers) is gone: cleanups run last-in
		// first-out and the app's was registered later.
		cli.NetworkRemove(ctx, network, client.NetworkRemoveOptions{})
		cli.ImageRemove(ctx, tag, client.ImageRemoveOptions{Force: true, PruneChildren: true})
		cli.Close()
	})
	return func(c *conf.Config) {
		intrusionConfig(t, c)
		c.Agents.Runtime = conf.RuntimeDocker
		c.Agents.DockerImage = tag
		c.Agents.DockerNetwork = network
	}
}

// TestSevenCamerasOnDockerAgents is the seed's story with agents in
// containers on the real Docker engine: 3 agents for 7 streams, 7 whole
// clips, back to 1 agent.
func TestSevenCamerasOnDockerAgents(t *testing.T) {
	mutate := dockerConfig(t)
	ta := startApp(t, mutate)
	sevenCameras(t, ta)
}

// TestADockerAgentKilledMidStream kills an agent's container: its streams
// move to another agent and no clip is lost.
func TestADockerAgentKilledMidStream(t *testing.T) {
	mutate := dockerConfig(t)
	ta := startApp(t, func(c *conf.Config) {
		mutate(c)
		c.Recording.ClipSeconds = 8
	})
	rt, ok := ta.Runtime.(*agentrt.Docker)
	if !ok {
		t.Fatalf("runtime is %T", ta.Runtime)
	}
	killMidStream(t, ta, func(agent string) {
		cli, err := client.New(client.FromEnv)
		must(t, err)
		defer cli.Close()
		_, err = cli.ContainerKill(context.Background(), rt.ContainerID(agent), client.ContainerKillOptions{Signal: "KILL"})
		must(t, err)
	})
}

// TestADedicatedDockerAgentRecordsItsSite: an agent dedicated to a pro site
// runs confined (non-root, read-only root, its site's clips only) and still
// records the site's clip.
func TestADedicatedDockerAgentRecordsItsSite(t *testing.T) {
	mutate := dockerConfig(t)
	ta := startApp(t, func(c *conf.Config) {
		mutate(c)
		c.Sites = map[string]conf.SiteConfig{"bank": {Plan: "pro"}}
		c.Plans["pro"] = conf.Plan{MaxClips: 500, Width: 160, Height: 120, FPS: 5, Quality: 60, DedicatedAgent: true}
	})
	testkit.WaitFor(t, 30*time.Second, "the first agent", func() bool { return liveAgents(ta.view(t)) == 1 && ta.view(t).Agents[0].Status == "ready" })
	stop := runFleet(t, ta, cameraFleet(ta.mqttAddr(), "bank", 1))
	defer stop()
	var dedicated string
	testkit.WaitFor(t, 30*time.Second, "the bank's stream on a dedicated agent", func() bool {
		for _, a := range ta.view(t).Agents {
			if a.Pool == "bank" && len(a.Streams) == 1 {
				dedicated = a.ID
				return true
			}
		}
		return false
	})
	cli, err := client.New(client.FromEnv)
	must(t, err)
	defer cli.Close()
	res, err := cli.ContainerInspect(context.Background(), ta.Runtime.(*agentrt.Docker).ContainerID(dedicated), client.ContainerInspectOptions{})
	must(t, err)
	if m := res.Container.Mounts; len(m) != 1 || m[0].Destination != "/clips/bank" || m[0].Source != filepath.Join(ta.Storage, "bank") {
		t.Errorf("the dedicated agent's mounts %+v, want only the bank's clips", m)
	}
	var clip coord.Clip
	testkit.WaitFor(t, 60*time.Second, "the bank's clip", func() bool {
		cs := ta.clips(t, "bank")
		if len(cs) == 1 && cs[0].State == coord.ClipReady {
			clip = cs[0]
			return true
		}
		return false
	})
	checkClipFile(t, ta, clip, 7)
}

// TestDockerAgentsRecordIntoAStorageOfTheUsers: Docker agents record into
// a clip storage root of the user's though Vigil gives them neither the
// root nor anything else it did not make (as root, vigil up makes the
// site's directory and gives them that).
func TestDockerAgentsRecordIntoAStorageOfTheUsers(t *testing.T) {
	mutate := dockerConfig(t)
	root, unchanged := usersClipStorage(t)
	ta := startApp(t, func(c *conf.Config) {
		mutate(c)
		c.Recording.Storage = root
	})
	recordAClip(t, ta, "home")
	unchanged(t)
	checkPrivate(t, filepath.Join(root, "home"))
}
