package e2e_test

import (
	"context"
	"crypto/rand"
	"os"
	"strings"
	"testing"

	"github.com/moby/moby/client"

	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/coord"
	"github.com/vigilhq/vigil/internal/dockerimg"
)

// dockerConfig switches a test's Vigil to the docker runtime, with an image
// built from this tree and a network of its own, removed at the end.
func dockerConfig(t *testing.T) func(*conf.Config) {
	t.Helper()
	cli, err := client.New(client.FromEnv, client.WithAPIVersionNegotiation())
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
	rt, ok := ta.Runtime.(*coord.DockerRuntime)
	if !ok {
		t.Fatalf("runtime is %T", ta.Runtime)
	}
	killMidStream(t, ta, func(agent string) {
		cli, err := client.New(client.FromEnv, client.WithAPIVersionNegotiation())
		must(t, err)
		defer cli.Close()
		_, err = cli.ContainerKill(context.Background(), rt.ContainerID(agent), client.ContainerKillOptions{Signal: "KILL"})
		must(t, err)
	})
}
