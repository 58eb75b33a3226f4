package testkit

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// UserUID is the owner UsersStorage gives the user's own files, when it
// can (as root): anybody but Vigil and its agents.
const UserUID = 4321

// Entry is a file or directory's mode and owner.
type Entry struct {
	Mode     fs.FileMode
	UID, GID uint32
}

// Stat returns p's mode and owner (of p itself, not what it links to).
func Stat(t testing.TB, p string) Entry {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return Entry{Mode: fi.Mode(), UID: st.Uid, GID: st.Gid}
}

// UsersStorage makes a directory as a user would have it, for a NAS or
// /srv: mode 0755, the user's, with a file and a directory of the user's
// in it and a directory named like a site. It returns their paths, the
// directory first.
func UsersStorage(t testing.TB) []string {
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
			if err := os.Lchown(p, UserUID, UserUID); err != nil {
				t.Fatal(err)
			}
		}
	}
	return paths
}
