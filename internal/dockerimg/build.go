// Package dockerimg builds the ingest agent's Docker image: an image FROM
// scratch holding nothing but a static vigil binary (/vigil, the
// entrypoint), built by the local Docker engine from a build context sent
// over its API, so neither the docker CLI nor a registry is needed.
package dockerimg

import (
	"archive/tar"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/client"
)

// ManagedLabel is set to "true" on the images Build makes (and so on the
// containers run from them).
const ManagedLabel = "vigil.managed"

const dockerfile = `FROM scratch
COPY vigil /vigil
LABEL ` + ManagedLabel + `="true"
ENTRYPOINT ["/vigil"]
`

// Build builds the image tag from binary, which must be a statically
// linked Linux vigil executable. Progress goes to log at debug level.
func Build(ctx context.Context, binary, tag string, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := checkStatic(binary); err != nil {
		return err
	}
	cli, err := Connect(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()

	var oldID string // the image tag names now, if any
	if img, err := cli.ImageInspect(ctx, tag); err == nil {
		oldID = img.ID
	}

	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeContext(pw, binary)) }()
	defer pr.Close()
	res, err := cli.ImageBuild(ctx, pr, client.ImageBuildOptions{
		Tags:        []string{tag},
		Dockerfile:  "Dockerfile",
		Remove:      true,
		ForceRemove: true,
	})
	if err != nil {
		return fmt.Errorf("build image %s: %w", tag, err)
	}
	defer res.Body.Close()
	if _, err := readProgress(res.Body, log); err != nil {
		return fmt.Errorf("build image %s: %w", tag, err)
	}
	img, err := cli.ImageInspect(ctx, tag)
	if err != nil {
		return fmt.Errorf("image %s after build: %w", tag, err)
	}
	id := img.ID
	log.Info("built agent image", "tag", tag, "id", id)
	if oldID != "" && oldID != id {
		removeReplaced(ctx, cli, oldID, log)
	}
	return nil
}

// removeReplaced removes the image a rebuild took the tag from, if it is
// one of ours and has no other tag, so that rebuilding does not pile up
// dangling images. It leaves it if a container still uses it.
func removeReplaced(ctx context.Context, cli *client.Client, id string, log *slog.Logger) {
	img, err := cli.ImageInspect(ctx, id)
	if err != nil || len(img.RepoTags) > 0 || img.Config == nil || img.Config.Labels[ManagedLabel] != "true" {
		return
	}
	if _, err := cli.ImageRemove(ctx, id, client.ImageRemoveOptions{PruneChildren: true}); err != nil {
		log.Debug("previous agent image kept", "id", id, "error", err)
		return
	}
	log.Info("removed the previous agent image", "id", id)
}

// Exists reports whether the engine has the image tag.
func Exists(ctx context.Context, tag string) (bool, error) {
	cli, err := Connect(ctx)
	if err != nil {
		return false, err
	}
	defer cli.Close()
	if _, err := cli.ImageInspect(ctx, tag); err != nil {
		if cerrdefs.IsNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("inspect image %s: %w", tag, err)
	}
	return true, nil
}

// Connect returns a client of the engine $DOCKER_HOST (or the default
// socket) names, once it has answered.
func Connect(ctx context.Context) (*client.Client, error) {
	cli, err := client.New(client.FromEnv)
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := cli.Ping(pctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		host := cli.DaemonHost()
		cli.Close()
		return nil, fmt.Errorf("docker engine not reachable at %s: %w", host, err)
	}
	return cli, nil
}

// checkStatic refuses anything but a statically linked ELF executable:
// the image has no libc or dynamic loader.
func checkStatic(binary string) error {
	const how = "build one with: CGO_ENABLED=0 go build -o vigil ./cmd/vigil"
	f, err := elf.Open(binary)
	if err != nil {
		var fe *elf.FormatError
		if errors.As(err, &fe) {
			return fmt.Errorf("%s is not a Linux executable (%v); %s", binary, err, how)
		}
		return fmt.Errorf("agent binary: %w", err)
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return fmt.Errorf("%s is not an executable; %s", binary, how)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked, but the agent image has no libc; %s", binary, how)
		}
	}
	return nil
}

// writeContext writes the build context: the Dockerfile and the binary.
func writeContext(w io.Writer, binary string) error {
	f, err := os.Open(binary)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	now := time.Now()
	if err := tw.WriteHeader(&tar.Header{Name: "Dockerfile", Mode: 0o644, Size: int64(len(dockerfile)), ModTime: now}); err != nil {
		return err
	}
	if _, err := io.WriteString(tw, dockerfile); err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: "vigil", Mode: 0o755, Size: st.Size(), ModTime: st.ModTime()}); err != nil {
		return err
	}
	if _, err := io.CopyN(tw, f, st.Size()); err != nil {
		return err
	}
	return tw.Close()
}

// readProgress drains the engine's JSON progress stream, logging it, and
// returns the built image's id or the error the stream reports.
func readProgress(r io.Reader, log *slog.Logger) (string, error) {
	var id string
	dec := json.NewDecoder(r)
	for {
		var m struct {
			jsonstream.Message
			ErrorText string `json:"error"` // older engines' form of errorDetail
		}
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return id, nil
			}
			return id, fmt.Errorf("read build output: %w", err)
		}
		switch {
		case m.Error != nil && m.Error.Message != "":
			return id, errors.New(strings.TrimSpace(m.Error.Message))
		case m.ErrorText != "":
			return id, errors.New(strings.TrimSpace(m.ErrorText))
		case m.Aux != nil:
			var aux struct{ ID string }
			if json.Unmarshal(*m.Aux, &aux) == nil && aux.ID != "" {
				id = aux.ID
			}
		case strings.TrimSpace(m.Stream) != "":
			log.Debug("image build", "output", strings.TrimSpace(m.Stream))
		case m.Status != "":
			log.Debug("image build", "status", m.Status)
		}
	}
}
