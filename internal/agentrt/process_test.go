package agentrt_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/agentrt"
	"github.com/vigilhq/vigil/internal/testkit"
)

// TestProcessAgentsGetAMinimalEnvironment: an agent child process sees what
// it needs (its own password, PATH, HOME, TMPDIR, TZ, Go runtime settings),
// never the rest of vigil up's environment, where VIGIL_ADMIN_PASSWORD
// and other secrets live.
func TestProcessAgentsGetAMinimalEnvironment(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "env")
	bin := filepath.Join(dir, "fake-vigil")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nenv > "+out+".tmp && mv "+out+".tmp "+out+"\nexec sleep 60\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("VIGIL_ADMIN_PASSWORD", "admin-secret-1")
	t.Setenv("VIGIL_WEBHOOK_SECRET", "hook-secret-2")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "cloud-secret-3")
	t.Setenv("GOMAXPROCS", "2")
	t.Setenv("TZ", "Europe/Paris")
	rt := &agentrt.Process{Binary: bin, Broker: "mqtt://127.0.0.1:1", Listen: "127.0.0.1", Storage: dir, LogDir: filepath.Join(dir, "agents")}
	if err := rt.Start(context.Background(), agentrt.Spec{ID: "a1", Username: "agent-a1", Password: "agent-pw-4", Capacity: 1, Idle: time.Second}, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	var env []string
	testkit.WaitFor(t, 10*time.Second, "the agent's environment", func() bool {
		b, err := os.ReadFile(out)
		env = strings.Split(strings.TrimSpace(string(b)), "\n")
		return err == nil
	})
	for _, want := range []string{"VIGIL_AGENT_PASSWORD=agent-pw-4", "GOMAXPROCS=2", "TZ=Europe/Paris", "PATH=" + os.Getenv("PATH")} {
		if !slices.Contains(env, want) {
			t.Errorf("the agent's environment lacks %s: %q", want, env)
		}
	}
	for _, kv := range env {
		if strings.Contains(kv, "secret") {
			t.Errorf("the agent's environment holds %s", kv)
		}
	}
}
