package agentrt

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/moby/moby/api/types/mount"

	"github.com/vigilhq/vigil/internal/testkit"
)

// TestDockerAgentsGetOnlyTheDirectoriesVigilMakes: when vigil up is root,
// the Docker runtime gives the agents' user the site directories it makes,
// and all of Vigil's own storage, but nothing of a storage of the user's
// that it did not make: the root and what was there keep their mode and
// owner.
func TestDockerAgentsGetOnlyTheDirectoriesVigilMakes(t *testing.T) {
	uid, gid := agentUser()
	agents := testkit.Entry{Mode: fs.ModeDir | 0o700, UID: uint32(uid), GID: uint32(gid)}

	t.Run("in a storage of the user's", func(t *testing.T) {
		paths := testkit.UsersStorage(t)
		before := map[string]testkit.Entry{}
		for _, p := range paths {
			before[p] = testkit.Stat(t, p)
		}
		root := paths[0]
		r := &Docker{Storage: root}
		must(t, r.adoptStorage())
		must(t, r.MakeSiteDir("bank"))
		must(t, r.MakeSiteDir("home"))
		shared, err := r.storageMount(Spec{})
		must(t, err)
		dedicated, err := r.storageMount(Spec{Site: "lab"})
		must(t, err)
		for _, p := range paths {
			if got := testkit.Stat(t, p); got != before[p] {
				t.Errorf("%s is now %v %d:%d, was %v %d:%d", p, got.Mode, got.UID, got.GID, before[p].Mode, before[p].UID, before[p].GID)
			}
		}
		for _, site := range []string{"bank", "lab"} {
			if got := testkit.Stat(t, filepath.Join(root, site)); got != agents {
				t.Errorf("site directory %s: %v %d:%d, want %v %d:%d", site, got.Mode, got.UID, got.GID, agents.Mode, agents.UID, agents.GID)
			}
		}
		if shared != (mount.Mount{Type: mount.TypeBind, Source: root, Target: "/clips"}) ||
			dedicated != (mount.Mount{Type: mount.TypeBind, Source: filepath.Join(root, "lab"), Target: "/clips/lab"}) {
			t.Errorf("mounts %+v and %+v", shared, dedicated)
		}
	})

	t.Run("in Vigil's own storage", func(t *testing.T) {
		root := filepath.Join(t.TempDir(), "clips")
		must(t, os.MkdirAll(filepath.Join(root, "home", "cam1"), 0o700))
		clip := filepath.Join(root, "home", "cam1", "clip.mp4")
		must(t, os.WriteFile(clip, nil, 0o600))
		fileBefore := testkit.Stat(t, clip)
		r := &Docker{Storage: root, OwnStorage: true}
		must(t, r.adoptStorage())
		must(t, r.MakeSiteDir("bank"))
		for _, d := range []string{"", "home", "home/cam1", "bank"} {
			if got := testkit.Stat(t, filepath.Join(root, d)); got != agents {
				t.Errorf("directory %q: %v %d:%d, want %v %d:%d", d, got.Mode, got.UID, got.GID, agents.Mode, agents.UID, agents.GID)
			}
		}
		if got := testkit.Stat(t, clip); got != fileBefore {
			t.Errorf("a clip file changed: %+v, was %+v", got, fileBefore)
		}
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
