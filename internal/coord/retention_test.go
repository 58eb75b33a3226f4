package coord_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/agentrt"
	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/coord"
	"github.com/vigilhq/vigil/internal/media"
	"github.com/vigilhq/vigil/internal/store"
)

type noRuntime struct{}

func (noRuntime) Name() string                                           { return "none" }
func (noRuntime) Start(context.Context, agentrt.Spec, func(error)) error { return nil }
func (noRuntime) Stop(context.Context, string) error                     { return nil }
func (noRuntime) Close() error                                           { return nil }

// makeClips stores n ready clips of site, one a minute, each with a 1 KB
// file; it returns their directories, oldest first.
func makeClips(t *testing.T, st *store.Store, storage, site string, n int) []string {
	t.Helper()
	var dirs []string
	t0 := time.Now().Add(-time.Duration(n) * time.Minute)
	for i := range n {
		c := &coord.Clip{ID: fmt.Sprintf("clip-%03d", i), EventID: "e", Site: site, Camera: "cam", Start: t0.Add(time.Duration(i) * time.Minute),
			State: coord.ClipReady, Bytes: 1024, Dir: fmt.Sprintf("%s/cam/day/clip-%03d", site, i)}
		c.File = c.Dir + "/clip.mp4"
		dir := filepath.Join(storage, c.Dir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "clip.mp4"), make([]byte, 1024), 0o644)
		if err := st.SaveClip(context.Background(), c); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, dir)
	}
	return dirs
}

func newCoordinator(t *testing.T, cfg *conf.Config, st *store.Store, storage string) *coord.Coordinator {
	t.Helper()
	c, err := coord.New(coord.ConfigFrom(cfg, storage), nil, st, noRuntime{}, media.NewFinisher(), slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRetentionKeepsTheLatest50(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "vigil.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	storage := t.TempDir()
	dirs := makeClips(t, st, storage, "home", 60)
	other := makeClips(t, st, storage, "cabin", 5) // another site keeps its own

	newCoordinator(t, conf.New(), st, storage).Retention(ctx, "home")

	left, _ := st.ListClips(ctx, coord.ClipFilter{Site: "home", Limit: 1000})
	if len(left) != 50 || left[len(left)-1].ID != "clip-010" || left[0].ID != "clip-059" {
		t.Fatalf("%d clips left, from %s to %s", len(left), left[len(left)-1].ID, left[0].ID)
	}
	for i, d := range dirs {
		_, err := os.Stat(d)
		if gone := os.IsNotExist(err); gone != (i < 10) {
			t.Errorf("clip %d: directory gone=%v", i, gone)
		}
	}
	if _, err := os.Stat(other[0]); err != nil {
		t.Error("another site's clip was deleted")
	}
}

func TestRetentionByDiskQuota(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "vigil.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	storage := t.TempDir()
	dirs := makeClips(t, st, storage, "home", 20)
	cfg := conf.New()
	cfg.Retention.MaxBytes = 15 * 1024
	newCoordinator(t, cfg, st, storage).Retention(ctx, "home")
	left, _ := st.ListClips(ctx, coord.ClipFilter{Limit: 1000})
	if len(left) != 15 {
		t.Fatalf("%d clips under a 15-clip quota", len(left))
	}
	for _, d := range dirs[:5] {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s is still on disk", d)
		}
	}
}

// The disk quota counts everything in the clip storage: thumbnails, and
// the segments of a clip still recording, not only finished clip files.
func TestTheDiskQuotaCountsEverythingOnDisk(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "vigil.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	storage := t.TempDir()
	dirs := makeClips(t, st, storage, "home", 20) // 1 KB clip files
	for _, d := range dirs {
		os.WriteFile(filepath.Join(d, "thumb.jpg"), make([]byte, 1024), 0o600) // 2 KB a clip in all
	}
	recording := filepath.Join(storage, "home", "cam2", "day", "clip-rec")
	if err := os.MkdirAll(recording, 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(recording, "seg-1.mp4"), make([]byte, 6*1024), 0o600)
	cfg := conf.New()
	cfg.Retention.MaxBytes = 30 * 1024
	newCoordinator(t, cfg, st, storage).Retention(ctx, "home")
	left, _ := st.ListClips(ctx, coord.ClipFilter{Limit: 1000})
	if len(left) != 12 { // 12 × 2 KB + 6 KB recording = 30 KB
		t.Fatalf("%d clips left under a 30 KB quota with 6 KB recording, want 12", len(left))
	}
	if _, err := os.Stat(recording); err != nil {
		t.Errorf("the recording clip's segments: %v", err)
	}
}
