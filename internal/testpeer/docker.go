package testpeer

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/moby/moby/client"
)

// DockerEngine returns a client of the local Docker engine, skipping the
// test when there is none, unless $CI is set: then it fails.
func DockerEngine(t *testing.T) *client.Client {
	t.Helper()
	cli, err := client.New(client.FromEnv)
	if err == nil {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		if _, err = cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
			cli.Close()
		}
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("no Docker engine, and CI is set: %v", err)
		}
		t.Skipf("no Docker engine: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}
