package coord

import (
	"bytes"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/moby/moby/api/types/mount"
)

// userUID is the owner the tests give the user's own files, when they can
// (as root): anybody but Vigil and its agents.
const userUID = 4321

// entry is a file or directory's mode and owner.
type entry struct {
	mode     fs.FileMode
	uid, gid uint32
}

func stat(t *testing.T, p string) entry {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return entry{fi.Mode(), st.Uid, st.Gid}
}

// usersStorage makes a directory as a user would have it, for a NAS or
// /srv: mode 0755, the user's, with a file and a directory of the user's
// in it and a directory named like a site. It returns their paths.
func usersStorage(t *testing.T) []string {
	t.Helper()
	root := t.TempDir()
	paths := []string{root, filepath.Join(root, "notes.txt"), filepath.Join(root, "photos"), filepath.Join(root, "home")}
	if err := os.WriteFile(paths[1], []byte("not Vigil's"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, d := range paths[2:] {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for i, p := range paths {
		mode := fs.FileMode(0o755)
		if i == 1 {
			mode = 0o644
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if os.Getuid() == 0 {
			if err := os.Lchown(p, userUID, userUID); err != nil {
				t.Fatal(err)
			}
		}
	}
	return paths
}

func TestPrepareStorage(t *testing.T) {
	for _, c := range []struct {
		name  string
		setup func(t *testing.T, dataDir string) (root string)
		own   bool
		warns bool
		mode  fs.FileMode // of the root afterwards
	}{
		{name: "the default storage in the data directory is Vigil's and made private", own: true, mode: 0o700,
			setup: func(t *testing.T, dataDir string) string {
				root := filepath.Join(dataDir, "clips")
				must(t, os.Mkdir(root, 0o755))
				must(t, os.Chmod(root, 0o755))
				return root
			}},
		{name: "a storage of the user's is left as it is, with a warning that others may read it", mode: 0o755, warns: true,
			setup: func(t *testing.T, _ string) string { return usersStorage(t)[0] }},
		{name: "a private storage of the user's brings no warning", mode: 0o700,
			setup: func(t *testing.T, _ string) string {
				root := t.TempDir()
				must(t, os.Chmod(root, 0o700))
				return root
			}},
		{name: "a storage that does not exist yet is made private, and is Vigil's", own: true, mode: 0o700,
			setup: func(t *testing.T, _ string) string { return filepath.Join(t.TempDir(), "vigil", "clips") }},
		{name: "a link from the data directory to the user's storage leads to the user's", mode: 0o755, warns: true,
			setup: func(t *testing.T, dataDir string) string {
				root := filepath.Join(dataDir, "clips")
				must(t, os.Symlink(usersStorage(t)[0], root))
				return root
			}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dataDir := t.TempDir()
			root := c.setup(t, dataDir)
			var logs bytes.Buffer
			own, err := PrepareStorage(root, dataDir, slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(root)
			if err != nil {
				t.Fatal(err)
			}
			if own != c.own || fi.Mode().Perm() != c.mode {
				t.Errorf("Vigil's own %v, mode %v; want %v, %v", own, fi.Mode().Perm(), c.own, c.mode)
			}
			if warned := strings.Contains(logs.String(), "other users may read the clip storage"); warned != c.warns {
				t.Errorf("warned %v, want %v; log:\n%s", warned, c.warns, logs.String())
			}
		})
	}
}

// TestDockerAgentsGetOnlyTheDirectoriesVigilMakes: when vigil up is root,
// the Docker runtime gives the agents' user the site directories it makes,
// and all of Vigil's own storage, but nothing of a storage of the user's
// that it did not make: the root and what was there keep their mode and
// owner.
func TestDockerAgentsGetOnlyTheDirectoriesVigilMakes(t *testing.T) {
	uid, gid := agentUser()
	agents := entry{fs.ModeDir | 0o700, uint32(uid), uint32(gid)}

	t.Run("in a storage of the user's", func(t *testing.T) {
		paths := usersStorage(t)
		before := map[string]entry{}
		for _, p := range paths {
			before[p] = stat(t, p)
		}
		root := paths[0]
		r := &DockerRuntime{Storage: root}
		must(t, r.adoptStorage())
		must(t, r.MakeSiteDir("bank"))
		must(t, r.MakeSiteDir("home"))
		shared, err := r.storageMount(AgentSpec{})
		must(t, err)
		dedicated, err := r.storageMount(AgentSpec{Site: "lab"})
		must(t, err)
		for _, p := range paths {
			if got := stat(t, p); got != before[p] {
				t.Errorf("%s is now %v %d:%d, was %v %d:%d", p, got.mode, got.uid, got.gid, before[p].mode, before[p].uid, before[p].gid)
			}
		}
		for _, site := range []string{"bank", "lab"} {
			if got := stat(t, filepath.Join(root, site)); got != agents {
				t.Errorf("site directory %s: %v %d:%d, want %v %d:%d", site, got.mode, got.uid, got.gid, agents.mode, agents.uid, agents.gid)
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
		fileBefore := stat(t, clip)
		r := &DockerRuntime{Storage: root, OwnStorage: true}
		must(t, r.adoptStorage())
		must(t, r.MakeSiteDir("bank"))
		for _, d := range []string{"", "home", "home/cam1", "bank"} {
			if got := stat(t, filepath.Join(root, d)); got != agents {
				t.Errorf("directory %q: %v %d:%d, want %v %d:%d", d, got.mode, got.uid, got.gid, agents.mode, agents.uid, agents.gid)
			}
		}
		if got := stat(t, clip); got != fileBefore {
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
