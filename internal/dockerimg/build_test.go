package dockerimg

import (
	"bytes"
	"context"
	"crypto/rand"
	"debug/elf"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/vigilhq/vigil/internal/testpeer"
)

// buildVigil builds a static vigil for Linux into a temporary directory.
func buildVigil(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "vigil")
	cmd := exec.Command("go", "build", "-o", bin, "../../cmd/vigil")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build vigil: %v\n%s", err, out)
	}
	return bin
}

func randomTag(t *testing.T) string {
	t.Helper()
	return "vigil-agent-test:" + strings.ToLower(rand.Text()[:10])
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func TestBuildRefusesDynamicBinary(t *testing.T) {
	var dynamic string
	for _, p := range []string{"/bin/sh", "/usr/bin/env", "/bin/ls", "/usr/bin/true"} {
		f, err := elf.Open(p)
		if err != nil {
			continue
		}
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				dynamic = p
			}
		}
		f.Close()
		if dynamic != "" {
			break
		}
	}
	if dynamic == "" {
		t.Skip("no dynamically linked executable found on this system")
	}
	// Refused before the engine is contacted.
	err := Build(t.Context(), dynamic, randomTag(t), testLogger(t))
	if err == nil || !strings.Contains(err.Error(), "dynamically linked") || !strings.Contains(err.Error(), "CGO_ENABLED=0 go build -o vigil ./cmd/vigil") {
		t.Fatalf("Build(%s) = %v, want a dynamically linked error saying how to build a static one", dynamic, err)
	}
}

func TestBuildRefusesNonELF(t *testing.T) {
	script := filepath.Join(t.TempDir(), "vigil")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho vigil\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := Build(t.Context(), script, randomTag(t), testLogger(t))
	if err == nil || !strings.Contains(err.Error(), "not a Linux executable") || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Fatalf("Build(script) = %v, want a not-a-Linux-executable error", err)
	}
	if err := Build(t.Context(), filepath.Join(t.TempDir(), "missing"), randomTag(t), nil); err == nil {
		t.Fatal("Build(missing file) succeeded")
	}
}

func TestReadProgressError(t *testing.T) {
	stream := `{"stream":"Step 1/4 : FROM scratch\n"}
{"stream":" ---\u003e \n"}
{"errorDetail":{"message":"COPY failed: file not found"},"error":"COPY failed: file not found"}
`
	_, err := readProgress(strings.NewReader(stream), testLogger(t))
	if err == nil || err.Error() != "COPY failed: file not found" {
		t.Fatalf("readProgress = %v, want the stream's error", err)
	}
	_, err = readProgress(strings.NewReader(`{"error":"old style"}`), testLogger(t))
	if err == nil || err.Error() != "old style" {
		t.Fatalf("readProgress = %v, want the old-style error", err)
	}
	id, err := readProgress(strings.NewReader(`{"aux":{"ID":"sha256:abc"}}{"stream":"Successfully built abc\n"}`), testLogger(t))
	if err != nil || id != "sha256:abc" {
		t.Fatalf("readProgress = %q, %v; want sha256:abc", id, err)
	}
	if _, err := readProgress(strings.NewReader(`{"stream":`), testLogger(t)); err == nil {
		t.Fatal("readProgress accepted a truncated stream")
	}
}

func TestBuildAndRun(t *testing.T) {
	cli := testpeer.DockerEngine(t)
	ctx := t.Context()
	tag := randomTag(t)
	if ok, err := Exists(ctx, tag); err != nil || ok {
		t.Fatalf("Exists(%s) before Build = %v, %v; want false, nil", tag, ok, err)
	}

	bin := buildVigil(t)
	t.Cleanup(func() {
		_, err := cli.ImageRemove(context.Background(), tag, client.ImageRemoveOptions{Force: true, PruneChildren: true})
		if err != nil && !cerrdefs.IsNotFound(err) {
			t.Errorf("remove image %s: %v", tag, err)
		}
	})
	start := time.Now()
	if err := Build(ctx, bin, tag, testLogger(t)); err != nil {
		t.Fatalf("Build: %v", err)
	}
	t.Logf("built %s in %v", tag, time.Since(start).Round(time.Millisecond))
	if ok, err := Exists(ctx, tag); err != nil || !ok {
		t.Fatalf("Exists(%s) after Build = %v, %v; want true, nil", tag, ok, err)
	}
	img, err := cli.ImageInspect(ctx, tag)
	if err != nil {
		t.Fatal(err)
	}
	if img.Config == nil || img.Config.Labels[ManagedLabel] != "true" {
		t.Errorf("image labels = %v, want %s=true", img.Config, ManagedLabel)
	}
	if img.Config != nil && strings.Join(img.Config.Entrypoint, " ") != "/vigil" {
		t.Errorf("entrypoint = %q, want [/vigil]", img.Config.Entrypoint)
	}

	id1 := img.ID
	t.Cleanup(func() { // in case a test failure left it
		cli.ImageRemove(context.Background(), id1, client.ImageRemoveOptions{PruneChildren: true})
	})

	// Rebuilding from another binary moves the tag and removes the image
	// it replaced (unless another tag still names it: the engine's build
	// cache may share it with a concurrent test's image).
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	bin2 := filepath.Join(t.TempDir(), "vigil")
	if err := os.WriteFile(bin2, append(data, "\x00trailing bytes make another image"...), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Build(ctx, bin2, tag, testLogger(t)); err != nil {
		t.Fatalf("second Build: %v", err)
	}
	img2, err := cli.ImageInspect(ctx, tag)
	if err != nil {
		t.Fatal(err)
	}
	if img2.ID == id1 {
		t.Errorf("rebuild from another binary kept image %s", id1)
	}
	if old, err := cli.ImageInspect(ctx, id1); err == nil && len(old.RepoTags) == 0 {
		t.Errorf("replaced image %s left dangling", id1)
	} else if err != nil && !cerrdefs.IsNotFound(err) {
		t.Fatal(err)
	}

	res, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Image:  tag,
		Config: &container.Config{Cmd: []string{"version"}},
	})
	if err != nil {
		t.Fatalf("create container: %v", err)
	}
	t.Cleanup(func() {
		cli.ContainerRemove(context.Background(), res.ID, client.ContainerRemoveOptions{Force: true})
	})
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := cli.ContainerStart(wctx, res.ID, client.ContainerStartOptions{}); err != nil {
		t.Fatalf("start container: %v", err)
	}
	w := cli.ContainerWait(wctx, res.ID, client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
	select {
	case r := <-w.Result:
		if r.StatusCode != 0 {
			t.Errorf("vigil version exited with %d", r.StatusCode)
		}
	case err := <-w.Error:
		t.Fatalf("wait: %v", err)
	}
	logs, err := cli.ContainerLogs(wctx, res.ID, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		t.Fatalf("logs: %v", err)
	}
	defer logs.Close()
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, logs); err != nil && err != io.EOF {
		t.Fatalf("read logs: %v", err)
	}
	if !strings.HasPrefix(out.String(), "vigil ") || !strings.Contains(out.String(), "linux/") {
		t.Errorf("vigil version printed %q", out.String())
	}
}
