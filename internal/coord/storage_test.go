package coord

import (
	"bytes"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigilhq/vigil/internal/testkit"
)

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
			setup: func(t *testing.T, _ string) string { return testkit.UsersStorage(t)[0] }},
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
				must(t, os.Symlink(testkit.UsersStorage(t)[0], root))
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

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
