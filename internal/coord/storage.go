package coord

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// PrepareStorage makes the clip storage root ready at start and tells
// whether it is Vigil's own, which decides what Vigil may change there:
//
//   - A root inside the data directory (the default, <data.dir>/clips) is
//     Vigil's: it is made 0700 on every start, and the Docker runtime may
//     give it and the directories in it to the agents' user
//     (agentrt.Docker.OwnStorage).
//   - A root elsewhere that does not exist yet is made (0700) and is
//     Vigil's too.
//   - A root elsewhere that exists is the user's (a NAS mount, /srv):
//     neither its mode and owner nor those of anything in it that Vigil
//     did not make are changed. The directories Vigil makes in it (sites,
//     cameras, days, clips) are 0700 and their files 0600. If other users
//     may enter or read the root, a warning says so.
//
// Symbolic links are resolved first: a link from the data directory to
// elsewhere leads elsewhere.
func PrepareStorage(root, dataDir string, log *slog.Logger) (own bool, err error) {
	if root, err = filepath.Abs(root); err != nil {
		return false, err
	}
	if dataDir, err = filepath.Abs(dataDir); err != nil {
		return false, err
	}
	if within(resolved(root), resolved(dataDir)) {
		if err := os.MkdirAll(root, 0o700); err != nil {
			return false, err
		}
		return true, os.Chmod(root, 0o700)
	}
	fi, err := os.Stat(root)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return true, os.MkdirAll(root, 0o700)
	case err != nil:
		return false, err
	case !fi.IsDir():
		return false, fmt.Errorf("%s is not a directory", root)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		log.Warn("other users may read the clip storage; Vigil leaves its mode as it is and keeps the directories it makes in it private",
			"storage", root, "mode", fmt.Sprintf("%#o", perm))
	}
	return false, nil
}

// resolved is p with its symbolic links resolved, as far as it exists.
func resolved(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	parent := filepath.Dir(p)
	if parent == p {
		return p
	}
	return filepath.Join(resolved(parent), filepath.Base(p))
}

// within tells whether p is dir or inside it.
func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}
